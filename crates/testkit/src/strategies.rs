//! Proptest strategies shared by property and model-based tests: documents, queries and
//! operation sequences, all drawn from one small Zipfian vocabulary.
//!
//! One vocabulary for documents and queries is the point: random queries over random text
//! almost never match anything, which tests nothing. Words are drawn Zipf-like (a heavy head,
//! a long tail), ids from a small pool (so upserts replace and deletes hit), and every strategy
//! shrinks towards the most common word and the first id.
//!
//! Searchable ASCII text and free Unicode text are kept apart: [`VOCAB`] words are plain
//! lowercase ASCII, so a model can predict what Tantivy's default tokenizer makes of them
//! ([`default_tokens`]), while [`unicode_text`] mixes accents, CJK, emoji and arbitrary
//! printable characters for the paths that must merely survive them.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Plain lowercase ASCII words, most frequent first (Zipf rank = position).
pub const VOCAB: [&str; 40] = [
    "the", "search", "index", "rust", "query", "fast", "disk", "memory", "linux", "kernel",
    "phrase", "token", "segment", "merge", "commit", "writer", "reader", "shard", "cache",
    "thread", "signal", "socket", "buffer", "driver", "module", "vector", "filter", "stream",
    "packet", "border", "garden", "harbor", "island", "jungle", "lantern", "meadow", "nectar",
    "orchid", "quartz", "zephyr",
];

/// Non-ASCII words (accents, ligatures, CJK, emoji, a Kelvin sign that lowercases to `k`).
pub const UNICODE_WORDS: [&str; 10] = [
    "café",
    "naïve",
    "東京",
    "straße",
    "Ωmega",
    "emoji🙂",
    "zürich",
    "ñandú",
    "ﬁle",
    "\u{212A}elvin",
];

/// The document ids drawn by [`doc_id`]: few enough that upserts replace and deletes hit.
pub const ID_POOL: [&str; 12] = [
    "d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9", "d10", "d11",
];

/// Fields of [`document`] that hold searchable [`VOCAB`] text (queried as `field:word`).
pub const TEXT_FIELDS: [&str; 2] = ["title", "body"];

/// A Zipf-like rank in `0..n` (`n > 0`); shrinks towards 0, the most frequent.
pub fn zipf_index(n: usize) -> impl Strategy<Value = usize> + Clone {
    assert!(n > 0, "zipf_index needs a non-empty range");
    any::<u32>().prop_map(move |x| {
        let u = f64::from(x) / f64::from(u32::MAX);
        (((n as f64 + 1.0).powf(u) - 1.0) as usize).min(n - 1)
    })
}

/// One [`VOCAB`] word, Zipf-distributed.
pub fn word() -> impl Strategy<Value = &'static str> + Clone {
    zipf_index(VOCAB.len()).prop_map(|i| VOCAB[i])
}

/// `words` [`VOCAB`] words joined by single spaces, sometimes with punctuation.
pub fn ascii_text(words: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    vec(
        (
            word(),
            prop::sample::select(vec![" ", " ", " ", ", ", ". ", "-"]),
        ),
        words,
    )
    .prop_map(|parts| {
        let mut s = String::new();
        for (i, (w, sep)) in parts.iter().enumerate() {
            if i > 0 {
                s.push_str(sep);
            }
            s.push_str(w);
        }
        s
    })
}

/// Free text mixing [`VOCAB`] words, [`UNICODE_WORDS`] and arbitrary printable characters.
pub fn unicode_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => word().prop_map(str::to_string),
        3 => prop::sample::select(UNICODE_WORDS.to_vec()).prop_map(str::to_string),
        1 => "\\PC{1,6}",
    ];
    vec(piece, 0..6).prop_map(|v| v.join(" "))
}

/// A document id from [`ID_POOL`] (the first ids more often).
pub fn doc_id() -> impl Strategy<Value = String> + Clone {
    zipf_index(ID_POOL.len()).prop_map(|i| ID_POOL[i].to_string())
}

/// A JSON document with an id from [`ID_POOL`]: `title` and `body` ([`VOCAB`] text), `note`
/// ([`unicode_text`]), an integer `n`, `tags` (words) and a nested `meta` object.
pub fn document() -> impl Strategy<Value = Value> {
    (
        doc_id(),
        ascii_text(1..5),
        ascii_text(0..12),
        unicode_text(),
        -1_000i64..1_000,
        vec(word(), 1..3),
        any::<bool>(),
    )
        .prop_map(|(id, title, body, note, n, tags, flag)| {
            json!({
                "id": id,
                "title": title,
                "body": body,
                "note": note,
                "n": n,
                "tags": tags,
                "meta": {"flag": flag, "rank": n.rem_euclid(7)}
            })
        })
}

/// Tokens Tantivy's `default` tokenizer makes of `text`: split on characters that are not
/// alphanumeric, drop tokens of 40 bytes or more, lowercase char by char.
pub fn default_tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty() && t.len() < 40)
        .map(|t| t.chars().flat_map(char::to_lowercase).collect())
}

/// Every token of every string value of `doc` (nested ones too), as a schemaless index's
/// free-text field sees them.
pub fn doc_tokens(doc: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.extend(default_tokens(s)),
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(m) => m.values().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, &mut out);
    out
}

/// A query over the shared vocabulary, as a tree a model can evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryExpr {
    /// One word, searched in every field.
    Term(&'static str),
    /// `field:word`, on one of [`TEXT_FIELDS`].
    Field(&'static str, &'static str),
    /// `pre*`: words starting with a prefix.
    Prefix(String),
    /// `"a b"`: words in sequence (not evaluated by [`QueryExpr::matches`]).
    Phrase(Vec<&'static str>),
    /// `(a AND b)`.
    And(Box<QueryExpr>, Box<QueryExpr>),
    /// `(a OR b)`.
    Or(Box<QueryExpr>, Box<QueryExpr>),
    /// `(a AND NOT b)`.
    AndNot(Box<QueryExpr>, Box<QueryExpr>),
}

impl QueryExpr {
    /// The query in Tantivy syntax, fully bracketed so precedence never matters.
    pub fn render(&self) -> String {
        match self {
            QueryExpr::Term(w) => (*w).to_string(),
            QueryExpr::Field(f, w) => format!("{f}:{w}"),
            QueryExpr::Prefix(p) => format!("{p}*"),
            QueryExpr::Phrase(ws) => format!("\"{}\"", ws.join(" ")),
            QueryExpr::And(a, b) => format!("({} AND {})", a.render(), b.render()),
            QueryExpr::Or(a, b) => format!("({} OR {})", a.render(), b.render()),
            QueryExpr::AndNot(a, b) => format!("({} AND NOT {})", a.render(), b.render()),
        }
    }

    /// Whether `doc` matches, by the model of a schemaless index ([`doc_tokens`]); `None`
    /// when the query holds a phrase (positions across multi-valued fields are Tantivy's
    /// business, not the model's).
    pub fn matches(&self, doc: &Value) -> Option<bool> {
        self.eval(&doc_tokens(doc), doc)
    }

    fn eval(&self, tokens: &[String], doc: &Value) -> Option<bool> {
        Some(match self {
            QueryExpr::Term(w) => tokens.iter().any(|t| t == w),
            QueryExpr::Field(f, w) => {
                let mut field = Vec::new();
                if let Some(v) = doc.get(f) {
                    field = doc_tokens(v);
                }
                field.iter().any(|t| t == w)
            }
            QueryExpr::Prefix(p) => tokens.iter().any(|t| t.starts_with(p.as_str())),
            QueryExpr::Phrase(_) => return None,
            QueryExpr::And(a, b) => a.eval(tokens, doc)? & b.eval(tokens, doc)?,
            QueryExpr::Or(a, b) => a.eval(tokens, doc)? | b.eval(tokens, doc)?,
            QueryExpr::AndNot(a, b) => a.eval(tokens, doc)? & !b.eval(tokens, doc)?,
        })
    }
}

/// A leaf query: a term, a field term, a prefix (2+ letters of a word) or a 2–3 word phrase.
pub fn query_leaf() -> impl Strategy<Value = QueryExpr> + Clone {
    prop_oneof![
        5 => word().prop_map(QueryExpr::Term),
        2 => (prop::sample::select(TEXT_FIELDS.to_vec()), word())
            .prop_map(|(f, w)| QueryExpr::Field(f, w)),
        2 => (word(), 2usize..5).prop_map(|(w, n)| QueryExpr::Prefix(w[..n.min(w.len())].to_string())),
        1 => vec(word(), 2..4).prop_map(QueryExpr::Phrase),
    ]
}

/// A query tree of up to `depth` levels of AND / OR / AND NOT over [`query_leaf`]s.
pub fn query_expr(depth: u32) -> impl Strategy<Value = QueryExpr> {
    query_leaf().prop_recursive(depth, 16, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| QueryExpr::And(a.into(), b.into())),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| QueryExpr::Or(a.into(), b.into())),
            (inner.clone(), inner).prop_map(|(a, b)| QueryExpr::AndNot(a.into(), b.into())),
        ]
    })
}

/// Query strings: rendered [`query_expr`]s, plus forms only a string can hold (top-level
/// `NOT` and `-`, required `+` terms, boosts, unicode and empty text).
pub fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => query_expr(3).prop_map(|q| q.render()),
        1 => query_leaf().prop_map(|q| format!("NOT {}", q.render())),
        1 => (word(), word()).prop_map(|(a, b)| format!("+{a} -{b}")),
        1 => (word(), 1u8..5).prop_map(|(w, b)| format!("{w}^{b}")),
        1 => unicode_text(),
        1 => Just(String::new()),
    ]
}

/// One step of a model-based test of an index.
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert or replace a document (its id is in the `id` field).
    Upsert(Value),
    /// Delete by id (may be absent).
    Delete(String),
    /// Commit: pending writes become visible.
    Commit,
    /// Search the committed view.
    Search(QueryExpr),
}

/// Operation sequences of up to `max_len` steps: mostly upserts, then deletes, commits and
/// searches.
pub fn ops(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        6 => document().prop_map(Op::Upsert),
        2 => doc_id().prop_map(Op::Delete),
        2 => Just(Op::Commit),
        2 => query_expr(2).prop_map(Op::Search),
    ];
    vec(op, 0..=max_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn tokens_follow_the_default_tokenizer() {
        let got: Vec<String> = default_tokens("Rust-lang, CAFÉ! \u{212A}elvin a__b").collect();
        assert_eq!(got, ["rust", "lang", "café", "kelvin", "a", "b"]);
        let long = "x".repeat(40);
        assert_eq!(default_tokens(&long).count(), 0);
    }

    #[test]
    fn queries_render_and_evaluate() {
        let doc =
            json!({"id": "d0", "title": "rust index", "body": "fast disk", "tags": ["merge"]});
        let q = QueryExpr::AndNot(
            Box::new(QueryExpr::Or(
                Box::new(QueryExpr::Field("title", "rust")),
                Box::new(QueryExpr::Prefix("zep".into())),
            )),
            Box::new(QueryExpr::Term("memory")),
        );
        assert_eq!(q.render(), "((title:rust OR zep*) AND NOT memory)");
        assert_eq!(q.matches(&doc), Some(true));
        assert_eq!(QueryExpr::Field("body", "rust").matches(&doc), Some(false));
        assert_eq!(QueryExpr::Term("merge").matches(&doc), Some(true));
        assert_eq!(QueryExpr::Phrase(vec!["rust", "index"]).matches(&doc), None);
    }

    #[test]
    fn strategies_generate_from_the_shared_pools() {
        let mut runner = TestRunner::deterministic();
        let head = (0..2_000)
            .filter(|_| word().new_tree(&mut runner).unwrap().current() == VOCAB[0])
            .count();
        assert!(head > 100, "Zipf head too light: {head}");
        for _ in 0..50 {
            let doc = document().new_tree(&mut runner).unwrap().current();
            assert!(ID_POOL.contains(&doc["id"].as_str().unwrap()));
            let seq = ops(20).new_tree(&mut runner).unwrap().current();
            assert!(seq.len() <= 20);
            let q = query().new_tree(&mut runner).unwrap().current();
            assert!(q.len() < 2_000, "{q}");
        }
    }
}
