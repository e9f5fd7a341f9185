//! The result cache's weights match what its entries really hold on the heap: a counting
//! allocator measures the bytes a filled cache keeps alive, compared with the weight it
//! reports (which its byte budget is enforced against). An undercount would let a
//! "64 MiB" cache take far more memory than configured.

// A counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use resilience::ResultCache;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn measure(key_len: usize, value_len: usize) -> (f64, usize) {
    let cache: ResultCache<String, Arc<Vec<u8>>> = ResultCache::new("w", 256 << 20).unwrap();
    // Built before measuring, moved in during it: only what the cache keeps counts.
    let entries: Vec<(String, Arc<Vec<u8>>)> = (0..2_000)
        .map(|i| {
            let mut k = format!("index\u{1f}q={i}\u{1f}");
            k.extend(std::iter::repeat_n('x', key_len));
            (k, Arc::new(vec![7u8; value_len]))
        })
        .collect();
    let mut entries = entries.into_iter();
    let before = LIVE.load(Ordering::SeqCst);
    for (k, v) in entries.by_ref() {
        assert!(cache.insert(k, v));
    }
    let held = LIVE.load(Ordering::SeqCst) - before;
    drop(entries);
    let weight = cache.weight();
    // Strings moved in were counted before; their copies in the recency index are new. So
    // `held` is what inserting added: the map, the index, and the cloned keys. Add back the
    // moved-in keys and values, which the cache now owns.
    let owned: usize = (0..2_000)
        .map(|i| format!("index\u{1f}q={i}\u{1f}").len() + key_len + value_len + 16)
        .sum();
    let actual = held as usize + owned;
    (actual as f64 / weight as f64, weight)
}

#[test]
fn weights_match_the_heap_bytes_held() {
    for (key_len, value_len) in [(10, 100), (50, 3_000), (2_000, 200), (100, 100_000)] {
        let (ratio, weight) = measure(key_len, value_len);
        eprintln!(
            "key {key_len} B, value {value_len} B: held / weighed = {ratio:.2} ({weight} B weighed)"
        );
        assert!(
            (0.75..=1.35).contains(&ratio),
            "key {key_len} B, value {value_len} B: the cache holds {ratio:.2}x the weight it reports"
        );
    }
}
