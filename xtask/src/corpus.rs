//! The benchmark corpus: the Linux 6.1 source tree from Debian's package registry, and its
//! `Documentation/` folder as JSON lines.
//!
//! Debian's registry is used because it is the one source reachable from the machines this
//! project is built on; the fetch mirrors `fetch-linux-corpus.sh` step by step, and the JSON
//! lines are byte-for-byte what `dir2ndjson.py` writes (same walk order, same escaping), so
//! figures stay comparable with the reference measurements made with those scripts.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, run_status};

const PACKAGE: &str = "linux-source-6.1";
/// Files above this are left out of the JSON lines (the converter's default, 1 MiB).
const MAX_DOC_BYTES: u64 = 1 << 20;
/// A NUL byte in this many leading bytes marks a file as binary.
const SNIFF_BYTES: usize = 8192;

/// Makes sure `dir/linux/` and `dir/linux-docs.jsonl` exist, fetching and converting as needed.
pub(crate) fn ensure(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let linux = dir.join("linux");
    if linux.is_dir() {
        println!("corpus: {} present", linux.display());
    } else {
        println!(
            "corpus: fetching {PACKAGE} into {} (about 140 MB download)",
            linux.display()
        );
        fetch_linux(dir)?;
    }
    let jsonl = dir.join("linux-docs.jsonl");
    if jsonl.is_file() {
        println!("corpus: {} present", jsonl.display());
    } else {
        let docs = linux.join("Documentation");
        println!(
            "corpus: converting {} -> {}",
            docs.display(),
            jsonl.display()
        );
        let (n, bytes) = dir_to_jsonl(&docs, &jsonl)?;
        println!("corpus: {n} docs, {:.1} MB", bytes as f64 / 1e6);
    }
    Ok(())
}

/// A scratch folder removed when dropped (std has no `mktemp -d`).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(prefix: &str) -> Result<ScratchDir> {
        let base = std::env::temp_dir();
        for attempt in 0..100u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = base.join(format!("{prefix}{}-{nanos}-{attempt}", std::process::id()));
            // create_dir (not _all) fails if the name is taken: the folder is ours alone.
            match fs::create_dir(&path) {
                Ok(()) => return Ok(ScratchDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
            }
        }
        Err(format!(
            "cannot create a scratch folder in {}",
            base.display()
        ))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `apt-get download` + `dpkg -x` in a scratch folder, then untar into `dir` and rename
/// `linux-source-6.1` to `linux`.
fn fetch_linux(dir: &Path) -> Result<()> {
    let tmp = ScratchDir::new("ironsift-linux-")?;
    let download = || {
        run_status(
            Command::new("apt-get")
                .args(["download", PACKAGE])
                .current_dir(&tmp.0),
        )
    };
    if let Err(first) = download() {
        // Usually stale or missing package lists (fresh containers ship none): refresh once.
        eprintln!("corpus: {first}; running `apt-get update` and retrying");
        run_status(Command::new("apt-get").arg("update"))?;
        download()?;
    }
    let deb = fs::read_dir(&tmp.0)
        .map_err(|e| format!("cannot list {}: {e}", tmp.0.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .find(|n| n.starts_with(&format!("{PACKAGE}_")) && n.ends_with(".deb"))
        .ok_or_else(|| format!("apt-get download left no {PACKAGE}_*.deb"))?;
    run_status(
        Command::new("dpkg")
            .args(["-x", &deb, "x"])
            .current_dir(&tmp.0),
    )?;
    let tarball = tmp.0.join(format!("x/usr/src/{PACKAGE}.tar.xz"));
    let extracted = dir.join(PACKAGE);
    // A leftover from an interrupted run would otherwise be merged with the fresh tree.
    if extracted.exists() {
        fs::remove_dir_all(&extracted)
            .map_err(|e| format!("cannot remove {}: {e}", extracted.display()))?;
    }
    run_status(
        Command::new("tar")
            .arg("xJf")
            .arg(&tarball)
            .arg("-C")
            .arg(dir),
    )?;
    let linux = dir.join("linux");
    fs::rename(&extracted, &linux).map_err(|e| {
        format!(
            "cannot rename {} to {}: {e}",
            extracted.display(),
            linux.display()
        )
    })
}

/// Converts `root` to JSON lines at `out` (written to a temporary name, then renamed, so an
/// interrupted run never leaves a truncated file that a later run would trust).
/// Returns (documents, bytes written).
pub(crate) fn dir_to_jsonl(root: &Path, out: &Path) -> Result<(u64, u64)> {
    if !root.is_dir() {
        return Err(format!("{} is not a folder", root.display()));
    }
    let tmp = out.with_extension("jsonl.partial");
    let file =
        fs::File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let mut w = BufWriter::new(file);
    let mut stats = (0u64, 0u64);
    let mut line = String::new();
    walk(root, root, &mut |rel, bytes| {
        line.clear();
        json_line(rel, bytes, &mut line);
        stats.0 += 1;
        stats.1 += line.len() as u64;
        w.write_all(line.as_bytes())
    })
    .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    w.into_inner()
        .map_err(|e| e.to_string())
        .and_then(|f| f.sync_all().map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, out).map_err(|e| format!("cannot rename to {}: {e}", out.display()))?;
    Ok(stats)
}

/// `os.walk` order: a folder's files (sorted) first, then each subfolder (sorted), depth first.
/// Like `os.walk`, a symlink to a folder counts as a folder but is not entered, and unreadable
/// folders are skipped silently.
fn walk(
    root: &Path,
    dir: &Path,
    emit: &mut dyn FnMut(&str, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(());
    };
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    for entry in rd.flatten() {
        // `fs::metadata` follows symlinks, as Python's `DirEntry.is_dir()` does.
        let is_dir = fs::metadata(entry.path())
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if is_dir {
            dirs.push(entry.file_name());
        } else {
            files.push(entry.file_name());
        }
    }
    // OsString orders by bytes, which for UTF-8 names is Python's code point order.
    files.sort();
    dirs.sort();
    for name in files {
        let path = dir.join(&name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        // Not regular (FIFO, socket, device): reading could block forever; the script would
        // hang there, we skip instead.
        if meta.file_type().is_symlink() || !meta.is_file() || meta.len() > MAX_DOC_BYTES {
            continue;
        }
        let Ok(bytes) = fs::read(&path) else {
            continue;
        };
        if bytes[..bytes.len().min(SNIFF_BYTES)].contains(&0) {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy();
        emit(&rel, &bytes)?;
    }
    for name in dirs {
        let path = dir.join(&name);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        walk(root, &path, emit)?;
    }
    Ok(())
}

/// Python's `str.isspace`: Rust's `char::is_whitespace` plus the four information separators.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `json.dumps({"_id": rel, "title": title, "text": text}) + "\n"` with Python's defaults.
fn json_line(rel: &str, bytes: &[u8], out: &mut String) {
    let text = String::from_utf8_lossy(bytes);
    let stripped = text.trim_matches(py_space);
    let first = stripped.split('\n').next().unwrap_or("");
    let title: String = first.chars().take(200).collect();
    out.push_str("{\"_id\": ");
    py_json_str(rel, out);
    out.push_str(", \"title\": ");
    py_json_str(&title, out);
    out.push_str(", \"text\": ");
    py_json_str(&text, out);
    out.push_str("}\n");
}

/// A JSON string as Python's `json.dumps` writes it (`ensure_ascii=True`): everything outside
/// printable ASCII as lowercase `\uXXXX`, astral characters as surrogate pairs.
fn py_json_str(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_python() {
        let mut out = String::new();
        py_json_str("a\"\\\n\t\u{7f}é😀\u{1}", &mut out);
        assert_eq!(out, r#""a\"\\\n\t\u007f\u00e9\ud83d\ude00\u0001""#);
    }

    #[test]
    fn title_is_first_line_of_stripped_text() {
        let mut out = String::new();
        json_line("d/f.txt", b"\x1c \n  Title here  \nbody\xff", &mut out);
        assert_eq!(
            out,
            "{\"_id\": \"d/f.txt\", \"title\": \"Title here  \", \"text\": \
             \"\\u001c \\n  Title here  \\nbody\\ufffd\"}\n"
        );
        out.clear();
        json_line("e", b" \n ", &mut out);
        assert!(out.contains("\"title\": \"\""), "{out}");
    }
}
