//! Deterministic corpora and query streams for load tests and benches, and a JSON-lines
//! loader for real data.
//!
//! [`Generator`] makes documents from a Zipfian vocabulary: a heavy head of frequent words and
//! a long tail, document sizes spread over two orders of magnitude, and a share of non-ASCII
//! words (accents, Cyrillic, Greek, CJK, emoji) so tokenizers and JSON escaping get exercised.
//! Queries drawn from the same vocabulary actually match (random queries over random text
//! almost never do, which measures nothing). The vocabulary is either synthetic or taken from
//! real queries ([`Generator::from_queries`]: words ranked by how often the queries use them),
//! so a query file such as the 50,000 web queries finds hits in a generated corpus too.
//!
//! Everything is a function of the seed: the same seed gives the same bytes on every machine.
//! JSON is written by hand (strings escaped per RFC 8259) so this needs no JSON library.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead};
use std::path::Path;

use crate::rng::Rng;

/// Syllables for synthetic ASCII words.
const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "an", "el", "is", "or", "um", "bra",
    "cle", "dri", "fro", "gla", "ple", "str", "tha", "qua", "xen",
];

/// Non-ASCII stems: Latin with diacritics, Cyrillic, Greek, CJK, emoji.
const UNICODE_STEMS: &[&str] = &[
    "café",
    "naïve",
    "straße",
    "zürich",
    "ñandú",
    "façade",
    "smørrebrød",
    "москва",
    "данные",
    "поиск",
    "αλφα",
    "λόγος",
    "東京",
    "検索",
    "索引",
    "데이터",
    "🙂",
    "🚀",
    "ﬁle",
    "œuvre",
];

/// Tags drawn for the `tags` array.
const TAGS: &[&str] = &[
    "news", "blog", "docs", "forum", "wiki", "code", "mail", "paper", "faq", "review",
];

/// Languages named in the `lang` field.
const LANGS: &[&str] = &["en", "en", "en", "en", "de", "fr", "ru", "ja", "es", "el"];

/// What the generator makes.
#[derive(Debug, Clone)]
pub struct CorpusConfig {
    /// Seed of the PRNG (must not be 0; 0 is replaced by 1).
    pub seed: u64,
    /// Distinct words of a synthetic vocabulary (ignored by [`Generator::from_queries`]).
    pub vocabulary: usize,
    /// Share of vocabulary words that are non-ASCII, in percent.
    pub unicode_percent: u32,
    /// Smallest body, in words.
    pub min_words: usize,
    /// Largest body, in words (sizes are Zipf-distributed: most documents are short).
    pub max_words: usize,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        CorpusConfig {
            seed: 0x1205_51f7,
            vocabulary: 20_000,
            unicode_percent: 5,
            min_words: 20,
            max_words: 2_000,
        }
    }
}

/// A deterministic document and query generator; see the module docs.
#[derive(Debug, Clone)]
pub struct Generator {
    cfg: CorpusConfig,
    /// Most frequent first: a Zipf draw of rank `r` picks `vocab[r]`.
    vocab: Vec<String>,
    rng: Rng,
    next_id: u64,
}

impl Generator {
    /// A generator with a synthetic vocabulary of `cfg.vocabulary` words.
    pub fn new(cfg: CorpusConfig) -> Generator {
        let mut rng = Rng(cfg.seed.max(1));
        let n = cfg.vocabulary.max(1);
        let mut seen = std::collections::HashSet::with_capacity(n);
        let mut vocab = Vec::with_capacity(n);
        while vocab.len() < n {
            let word = if (rng.below(100) as u32) < cfg.unicode_percent {
                let stem = UNICODE_STEMS[rng.below(UNICODE_STEMS.len())];
                // A numeric suffix keeps many distinct non-ASCII terms.
                format!("{stem}{}", rng.below(n.max(10)))
            } else {
                let syllables = 1 + rng.below(4);
                (0..syllables)
                    .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                    .collect()
            };
            if seen.insert(word.clone()) {
                vocab.push(word);
            }
        }
        Generator {
            rng,
            vocab,
            next_id: 0,
            cfg,
        }
    }

    /// A generator whose vocabulary is the words of `queries`, most used first, plus a share
    /// (`cfg.unicode_percent`) of non-ASCII words; falls back to [`Generator::new`] when the
    /// queries hold no words.
    pub fn from_queries(cfg: CorpusConfig, queries: &[String]) -> Generator {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for q in queries {
            for w in q
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.chars().count() >= 2)
            {
                *counts.entry(w.to_lowercase()).or_default() += 1;
            }
        }
        if counts.is_empty() {
            return Generator::new(cfg);
        }
        let mut words: Vec<(String, u64)> = counts.into_iter().collect();
        // Deterministic order: by count, then alphabetically.
        words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut vocab: Vec<String> = words.into_iter().map(|(w, _)| w).collect();
        let mut rng = Rng(cfg.seed.max(1));
        let extra = vocab.len() * cfg.unicode_percent as usize / 100;
        for i in 0..extra {
            let stem = UNICODE_STEMS[rng.below(UNICODE_STEMS.len())];
            // Spread the non-ASCII words over the ranks rather than all in the tail.
            let at = rng.below(vocab.len());
            vocab.insert(at, format!("{stem}{i}"));
        }
        Generator {
            rng,
            vocab,
            next_id: 0,
            cfg,
        }
    }

    /// The vocabulary, most frequent first.
    pub fn vocabulary(&self) -> &[String] {
        &self.vocab
    }

    fn word(&mut self) -> &str {
        let i = self.rng.zipf(self.vocab.len());
        &self.vocab[i]
    }

    fn words(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n * 7);
        for i in 0..n {
            if i > 0 {
                // Mostly spaces, some punctuation, now and then a sentence break.
                s.push_str(match self.rng.below(20) {
                    0 => ". ",
                    1 => ", ",
                    2 => " - ",
                    _ => " ",
                });
            }
            let w = self.rng.zipf(self.vocab.len());
            s.push_str(&self.vocab[w]);
        }
        s
    }

    /// The next document as one line of JSON (no newline):
    /// `{"id":"doc-000000042","title":"...","body":"...","tags":[...],"lang":"en","views":N,"rank":F}`.
    /// Ids count up from `doc-000000000`.
    pub fn document(&mut self) -> String {
        let id = self.next_id;
        self.next_id += 1;
        let span = self.cfg.max_words.saturating_sub(self.cfg.min_words).max(1);
        let body_words = self.cfg.min_words + self.rng.zipf(span);
        let title_words = 2 + self.rng.below(8);
        let title = self.words(title_words);
        let body = self.words(body_words);
        let mut out = String::with_capacity(body.len() + title.len() + 128);
        let _ = write!(out, "{{\"id\":\"doc-{id:09}\",\"title\":");
        push_json_str(&mut out, &title);
        out.push_str(",\"body\":");
        push_json_str(&mut out, &body);
        out.push_str(",\"tags\":[");
        for t in 0..1 + self.rng.below(3) {
            if t > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{}\"", TAGS[self.rng.zipf(TAGS.len())]);
        }
        let lang = LANGS[self.rng.below(LANGS.len())];
        let views = self.rng.zipf(1_000_000);
        let rank = self.rng.below(10_000) as f64 / 100.0;
        let _ = write!(
            out,
            "],\"lang\":\"{lang}\",\"views\":{views},\"rank\":{rank}}}"
        );
        out
    }

    /// `n` documents as JSON lines (each followed by `\n`).
    pub fn jsonl(&mut self, n: usize) -> String {
        let mut out = String::new();
        for _ in 0..n {
            out.push_str(&self.document());
            out.push('\n');
        }
        out
    }

    /// Documents as JSON lines until the text reaches `bytes` (at least one document).
    pub fn jsonl_bytes(&mut self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes + 16 * 1024);
        loop {
            out.push_str(&self.document());
            out.push('\n');
            if out.len() >= bytes {
                return out;
            }
        }
    }

    /// The next query: mostly one to three words, sometimes a phrase, a prefix, a required or
    /// an excluded term (Tantivy syntax), drawn from the vocabulary.
    pub fn query(&mut self) -> String {
        let n = 1 + self.rng.zipf(4);
        let mut parts: Vec<String> = (0..n).map(|_| self.word().to_string()).collect();
        match self.rng.below(20) {
            0 if n >= 2 => return format!("\"{}\"", parts.join(" ")),
            1 => {
                let w = &mut parts[0];
                let cut: String = w.chars().take(3).collect();
                if cut.chars().count() == 3 && cut.chars().all(|c| c.is_alphanumeric()) {
                    *w = format!("{cut}*");
                }
            }
            2 if n >= 2 => parts[1] = format!("+{}", parts[1]),
            3 if n >= 2 => parts[1] = format!("-{}", parts[1]),
            _ => {}
        }
        parts.join(" ")
    }

    /// `n` queries; see [`Generator::query`].
    pub fn queries(&mut self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.query()).collect()
    }

    /// A query of about `bytes` bytes: vocabulary words joined with `OR` (for memory-pressure
    /// runs; servers are expected to refuse queries over their length limit).
    pub fn long_query(&mut self, bytes: usize) -> String {
        let mut q = String::with_capacity(bytes + 64);
        while q.len() < bytes {
            if !q.is_empty() {
                q.push_str(" OR ");
            }
            let w = self.rng.zipf(self.vocab.len());
            q.push_str(&self.vocab[w]);
        }
        q
    }
}

/// Appends `s` as a JSON string literal (quotes included), escaping per RFC 8259.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Reads a JSON-lines file: one document per non-blank line, each a JSON object (checked
/// only by its first and last characters; the server validates the rest). Errors name the
/// file and line.
pub fn read_jsonl(path: &Path) -> io::Result<Vec<String>> {
    let file = std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
    let mut docs = Vec::new();
    for (i, line) in io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| {
            io::Error::new(e.kind(), format!("{} line {}: {e}", path.display(), i + 1))
        })?;
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if !(t.starts_with('{') && t.ends_with('}')) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} line {}: not a JSON object", path.display(), i + 1),
            ));
        }
        docs.push(t.to_string());
    }
    Ok(docs)
}

/// Groups JSON lines into newline-separated batches of at most `max_bytes` each (a single
/// larger line forms its own batch).
pub fn batches(lines: &[String], max_bytes: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for l in lines {
        if !cur.is_empty() && cur.len() + l.len() + 1 > max_bytes {
            out.push(std::mem::take(&mut cur));
        }
        cur.push_str(l);
        cur.push('\n');
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_documents_and_queries() {
        let mut a = Generator::new(CorpusConfig::default());
        let mut b = Generator::new(CorpusConfig::default());
        assert_eq!(a.jsonl(50), b.jsonl(50));
        assert_eq!(a.queries(50), b.queries(50));
        let doc = a.document();
        assert!(
            doc.starts_with("{\"id\":\"doc-000000050\",\"title\":\""),
            "{doc}"
        );
        assert!(doc.ends_with('}'));
        let other = Generator::new(CorpusConfig {
            seed: 7,
            ..CorpusConfig::default()
        })
        .document();
        assert_ne!(
            Generator::new(CorpusConfig::default()).document(),
            other,
            "the seed matters"
        );
    }

    #[test]
    fn vocabulary_mixes_scripts_and_is_zipfian() {
        let mut g = Generator::new(CorpusConfig::default());
        let v = g.vocabulary().to_vec();
        assert_eq!(v.len(), 20_000);
        let non_ascii = v.iter().filter(|w| !w.is_ascii()).count();
        assert!((500..3_000).contains(&non_ascii), "{non_ascii}");
        let body = g.jsonl(200);
        let head = body.matches(&format!(" {} ", v[0])).count();
        let tail = body.matches(&format!(" {} ", v[19_000])).count();
        assert!(head > 10 * tail.max(1), "head {head} vs tail {tail}");
    }

    #[test]
    fn vocabulary_from_queries_ranks_by_use() {
        let qs: Vec<String> = ["delta air lines", "delta faucets", "air miles", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let g = Generator::from_queries(
            CorpusConfig {
                unicode_percent: 0,
                ..CorpusConfig::default()
            },
            &qs,
        );
        assert_eq!(g.vocabulary()[..2], ["air", "delta"]);
        assert_eq!(g.vocabulary().len(), 5);
    }

    #[test]
    fn json_escaping_and_sizes() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let mut g = Generator::new(CorpusConfig::default());
        let q = g.long_query(150 * 1024);
        assert!(q.len() >= 150 * 1024 && q.len() < 151 * 1024);
        let batch = g.jsonl_bytes(1 << 20);
        assert!(batch.len() >= 1 << 20);
        assert!(
            batch
                .lines()
                .all(|l| l.starts_with('{') && l.ends_with('}'))
        );
    }

    #[test]
    fn jsonl_loading_and_batching() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(&p, "{\"a\":1}\n\n  {\"b\":2}  \n").unwrap();
        let docs = read_jsonl(&p).unwrap();
        assert_eq!(docs, ["{\"a\":1}", "{\"b\":2}"]);
        std::fs::write(&p, "{\"a\":1}\n[1]\n").unwrap();
        let e = read_jsonl(&p).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let lines: Vec<String> = (0..10).map(|i| format!("{{\"i\":{i}}}")).collect();
        let b = batches(&lines, 20);
        assert_eq!(b.len(), 5);
        assert_eq!(b.concat().lines().count(), 10);
        assert!(b.iter().all(|x| x.len() <= 20));
    }
}
