//! Running a search: request validation, collection, stored documents and highlighted snippets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::Query;
use tantivy::schema::{Field, Value as _};
use tantivy::snippet::{Snippet, SnippetGenerator};
use tantivy::{Searcher, TantivyDocument};

use crate::document::Document;
use crate::error::{CoreError, Result};
use crate::index::SearchIndex;
use crate::schema::{FieldType, Layout};

/// Most hits one request may ask for.
pub const MAX_LIMIT: usize = 1000;
/// Deepest page reachable: `offset + limit` may not exceed this.
pub const MAX_WINDOW: usize = 10_000;
/// Longest highlighted fragment, in characters.
const SNIPPET_CHARS: usize = 200;
/// Most highlighted fields per hit in schemaless indexes.
const MAX_HIGHLIGHT_FIELDS: usize = 5;

fn default_limit() -> usize {
    10
}
fn yes() -> bool {
    true
}

/// A search request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Query in Tantivy syntax; empty matches everything.
    #[serde(default, alias = "q")]
    pub query: String,
    /// Hits to return (0 to [`MAX_LIMIT`]); default 10.
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// Hits to skip.
    #[serde(default)]
    pub offset: usize,
    /// Compute highlighted snippets.
    #[serde(default)]
    pub highlight: bool,
    /// Count every matching document (`total`); turning it off lets Tantivy skip
    /// non-competitive documents.
    #[serde(default = "yes")]
    pub count: bool,
}

impl SearchRequest {
    /// A request for the top 10 hits of `query`, counting the total.
    pub fn new(query: impl Into<String>) -> Self {
        SearchRequest {
            query: query.into(),
            limit: default_limit(),
            offset: 0,
            highlight: false,
            count: true,
        }
    }

    /// Sets the number of hits.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Sets the number of hits skipped.
    pub fn offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// Turns highlighting on or off.
    pub fn highlight(mut self, on: bool) -> Self {
        self.highlight = on;
        self
    }

    /// Turns exact total counting on or off.
    pub fn count(mut self, on: bool) -> Self {
        self.count = on;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.limit > MAX_LIMIT {
            return Err(CoreError::InvalidParameter {
                name: "limit",
                reason: format!("{} is above the maximum of {MAX_LIMIT}", self.limit),
            });
        }
        if self.offset.saturating_add(self.limit) > MAX_WINDOW {
            return Err(CoreError::InvalidParameter {
                name: "offset",
                reason: format!(
                    "offset + limit = {} is above the maximum of {MAX_WINDOW}",
                    self.offset.saturating_add(self.limit)
                ),
            });
        }
        Ok(())
    }
}

/// The answer to a [`SearchRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchResponse {
    /// The hits of the requested page, best first.
    pub hits: Vec<Hit>,
    /// Number of matching documents, when counting was requested.
    pub total: Option<u64>,
}

/// One matching document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hit {
    /// Document id (for files indexes: `path#Lstart`).
    pub id: String,
    /// BM25 score.
    pub score: f32,
    /// Stored fields (serialized straight from storage; see [`Document`]).
    pub doc: Document,
    /// Highlighted fragments by field, when requested and the field matched.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub highlights: BTreeMap<String, Highlight>,
}

/// A fragment of a field around the matches, with the matched byte ranges.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Highlight {
    /// The fragment text.
    pub fragment: String,
    /// Byte ranges `[start, end)` of the matches within `fragment`.
    pub ranges: Vec<[usize; 2]>,
    /// For files indexes: the 1-based line of the first match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

impl Highlight {
    fn from_snippet(s: &Snippet) -> Option<Highlight> {
        if s.highlighted().is_empty() {
            return None;
        }
        Some(Highlight {
            fragment: s.fragment().to_string(),
            ranges: s.highlighted().iter().map(|r| [r.start, r.end]).collect(),
            line: None,
        })
    }

    /// The fragment with each match wrapped in `before`/`after` (e.g. ANSI colours or `**`).
    pub fn marked(&self, before: &str, after: &str) -> String {
        let mut out = String::with_capacity(self.fragment.len() + 16);
        let mut pos = 0;
        for [s, e] in &self.ranges {
            let (s, e) = ((*s).max(pos), *e);
            if s > e || e > self.fragment.len() {
                continue;
            }
            out.push_str(&self.fragment[pos..s]);
            out.push_str(before);
            out.push_str(&self.fragment[s..e]);
            out.push_str(after);
            pos = e;
        }
        out.push_str(&self.fragment[pos..]);
        out
    }
}

enum Highlighter {
    None,
    Fields(Vec<(String, Field, SnippetGenerator)>),
    Schemaless(SnippetGenerator, Field),
    Files(SnippetGenerator, Field, Field),
}

impl SearchIndex {
    /// Parses and runs `req` against the latest committed state.
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResponse> {
        req.validate()?;
        let query = self.queries.parse(&req.query, &self.config.query_limits)?;
        let searcher = self.reader.searcher();
        self.run(&searcher, query.as_ref(), req)
    }

    fn run(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        req: &SearchRequest,
    ) -> Result<SearchResponse> {
        let err = |e| CoreError::tantivy(&self.name, "search", e);
        // Each shape gets its own collector: Tantivy prunes non-competitive documents
        // (block-WAND) only when the top-k collector runs alone, not inside a tuple.
        let top_k = || {
            TopDocs::with_limit(req.limit)
                .and_offset(req.offset)
                .order_by_score()
        };
        let (top, total) = match (req.limit > 0, req.count) {
            (true, false) => (searcher.search(query, &top_k()).map_err(err)?, None),
            (true, true) => {
                let (top, n) = searcher.search(query, &(top_k(), Count)).map_err(err)?;
                (top, Some(n))
            }
            (false, true) => (
                Vec::new(),
                Some(searcher.search(query, &Count).map_err(err)?),
            ),
            (false, false) => (Vec::new(), None),
        };
        let highlighter = if req.highlight && !top.is_empty() {
            self.highlighter(searcher, query).map_err(err)?
        } else {
            Highlighter::None
        };
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument = searcher
                .doc(addr)
                .map_err(|e| CoreError::tantivy(&self.name, "read document", e))?;
            let highlights = highlight(&highlighter, &doc);
            let (id, doc) = self.stored_document(doc);
            hits.push(Hit {
                id,
                score,
                doc,
                highlights,
            });
        }
        Ok(SearchResponse {
            hits,
            total: total.map(|t: usize| t as u64),
        })
    }

    fn highlighter(&self, searcher: &Searcher, query: &dyn Query) -> tantivy::Result<Highlighter> {
        let make = |field| {
            SnippetGenerator::create(searcher, query, field).map(|mut g| {
                g.set_max_num_chars(SNIPPET_CHARS);
                g
            })
        };
        Ok(match &self.layout {
            Layout::Files(f) => Highlighter::Files(make(f.content)?, f.content, f.line_start),
            Layout::Schemaless(f) => Highlighter::Schemaless(make(f.all)?, f.source),
            Layout::Explicit(f) => {
                let mut gens = Vec::new();
                for (spec, field) in &f.fields {
                    if spec.field_type == FieldType::Text && spec.stored && spec.indexed {
                        gens.push((spec.name.clone(), *field, make(*field)?));
                    }
                }
                Highlighter::Fields(gens)
            }
        })
    }
}

fn highlight(h: &Highlighter, doc: &TantivyDocument) -> BTreeMap<String, Highlight> {
    let mut out = BTreeMap::new();
    match h {
        Highlighter::None => {}
        Highlighter::Fields(gens) => {
            for (name, field, generator) in gens {
                if let Some(text) = doc.get_first(*field).and_then(|v| v.as_str())
                    && let Some(hl) = Highlight::from_snippet(&generator.snippet(text))
                {
                    out.insert(name.clone(), hl);
                }
            }
        }
        Highlighter::Files(generator, content, line_start) => {
            let text = doc
                .get_first(*content)
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let snippet = generator.snippet(text);
            if let Some(mut hl) = Highlight::from_snippet(&snippet) {
                let first = snippet.fragment_range().start + hl.ranges[0][0];
                let start = doc
                    .get_first(*line_start)
                    .and_then(|v| v.as_u64())
                    .unwrap_or(1);
                let before = text.get(..first).unwrap_or("");
                hl.line =
                    Some(start + memchr::memchr_iter(b'\n', before.as_bytes()).count() as u64);
                out.insert("content".to_string(), hl);
            }
        }
        Highlighter::Schemaless(generator, source) => {
            if let Some(v) = doc.get_first(*source) {
                let value = crate::index::to_json(v);
                let mut leaves = Vec::new();
                string_leaves(&value, String::new(), &mut leaves);
                for (path, text) in leaves {
                    if out.len() >= MAX_HIGHLIGHT_FIELDS {
                        break;
                    }
                    if out.contains_key(&path) {
                        continue;
                    }
                    if let Some(hl) = Highlight::from_snippet(&generator.snippet(text)) {
                        out.insert(path, hl);
                    }
                }
            }
        }
    }
    out
}

fn string_leaves<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path, s)),
        Value::Array(items) => items
            .iter()
            .for_each(|i| string_leaves(i, path.clone(), out)),
        Value::Object(m) => {
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                string_leaves(v, p, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_wraps_each_range() {
        let h = Highlight {
            fragment: "foo bar foo".into(),
            ranges: vec![[0, 3], [8, 11]],
            line: None,
        };
        assert_eq!(h.marked("[", "]"), "[foo] bar [foo]");
    }

    #[test]
    fn request_limits_are_checked() {
        assert!(SearchRequest::new("x").limit(1001).validate().is_err());
        assert!(
            SearchRequest::new("x")
                .limit(10)
                .offset(9995)
                .validate()
                .is_err()
        );
        assert!(
            SearchRequest::new("x")
                .limit(1000)
                .offset(9000)
                .validate()
                .is_ok()
        );
        assert!(
            SearchRequest::new("x")
                .offset(usize::MAX)
                .validate()
                .is_err()
        );
    }
}
