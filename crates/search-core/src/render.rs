//! Stored documents rendered as JSON once, then reused: a byte-bounded LRU keyed by segment and
//! document number, shared by every index of a catalog.
//!
//! A search answer is mostly its documents' text. Fetching a stored document decompresses its
//! block of Tantivy's document store, and turning it into JSON escapes every string; for a hit
//! seen before, both are repeated for the same bytes. Searches are skewed (popular queries,
//! popular documents), so a small cache of rendered documents saves most of that work: on the
//! Linux documentation corpus with web queries, fetching and rendering were a third of a
//! server's CPU.
//!
//! Keys never go stale: a segment is immutable, so `(segment id, doc)` always names the same
//! stored document (segment ids are UUIDs, unique across indexes). A document deleted or
//! merged away is simply never asked for again and ages out.

use std::sync::{Arc, Mutex};

use tantivy::DocId;
use tantivy::index::SegmentId;

/// A document rendered once: its id and its JSON object text.
#[derive(Debug)]
pub struct Rendered {
    /// The document id.
    pub id: String,
    /// The stored fields as a JSON object, as search answers show them.
    pub json: Box<str>,
}

impl Rendered {
    fn weight(&self) -> usize {
        // The entry, its key, the `Arc` and the LRU's bookkeeping, roughly.
        self.id.len() + self.json.len() + 128
    }
}

struct Inner {
    lru: lru::LruCache<(SegmentId, DocId), Arc<Rendered>>,
    bytes: usize,
}

/// The shared cache of rendered documents; see the module docs.
pub struct DocCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

impl std::fmt::Debug for DocCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocCache")
            .field("max_bytes", &self.max_bytes)
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl DocCache {
    /// A cache holding at most `max_bytes` of rendered documents (0 caches nothing).
    pub fn new(max_bytes: usize) -> Self {
        DocCache {
            inner: Mutex::new(Inner {
                lru: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain data: a panic while holding the lock leaves nothing half-updated that matters.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, segment: SegmentId, doc: DocId) -> Option<Arc<Rendered>> {
        self.lock().lru.get(&(segment, doc)).cloned()
    }

    pub(crate) fn insert(&self, segment: SegmentId, doc: DocId, rendered: Arc<Rendered>) {
        let weight = rendered.weight();
        if weight > self.max_bytes / 8 {
            return; // one huge document must not flush everything else
        }
        let mut inner = self.lock();
        if let Some(old) = inner.lru.put((segment, doc), rendered) {
            inner.bytes -= old.weight();
        }
        inner.bytes += weight;
        while inner.bytes > self.max_bytes {
            match inner.lru.pop_lru() {
                Some((_, gone)) => inner.bytes -= gone.weight(),
                None => break,
            }
        }
    }

    /// Drops every entry (e.g. under memory pressure).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.lru.clear();
        inner.bytes = 0;
    }

    /// Bytes held (approximately: document text plus bookkeeping).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Documents held.
    pub fn len(&self) -> usize {
        self.lock().lru.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The budget in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(n: usize, len: usize) -> Arc<Rendered> {
        Arc::new(Rendered {
            id: n.to_string(),
            json: "x".repeat(len).into_boxed_str(),
        })
    }

    #[test]
    fn bounded_by_bytes_least_recently_used_out_first() {
        let seg = SegmentId::generate_random();
        let cache = DocCache::new(10_000);
        for n in 0..40 {
            cache.insert(seg, n, doc(n as usize, 870)); // weighs 1,000 with a 2-digit id
        }
        assert!(cache.bytes() <= 10_000, "{}", cache.bytes());
        assert_eq!(cache.len(), 10);
        assert!(cache.get(seg, 39).is_some());
        assert!(cache.get(seg, 0).is_none());
        // Touching an entry keeps it over newer ones.
        assert!(cache.get(seg, 30).is_some());
        for n in 40..49 {
            cache.insert(seg, n, doc(n as usize, 870));
        }
        assert!(cache.get(seg, 30).is_some());
        assert!(cache.get(seg, 31).is_none());
        // Too big for the budget: not cached, nothing evicted for it.
        cache.insert(seg, 99, doc(99, 5_000));
        assert!(cache.get(seg, 99).is_none());
        assert_eq!(cache.len(), 10);
        cache.clear();
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }
}
