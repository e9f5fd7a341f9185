//! Running a search: request validation, collection, stored documents and highlighted snippets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::Query;
use tantivy::schema::{Field, Value as _};
use tantivy::snippet::{Snippet, SnippetGenerator};
use tantivy::{Searcher, TantivyDocument};

use crate::deadline::{self, Deadline};
use crate::document::Document;
use crate::error::{CoreError, Result};
use crate::index::SearchIndex;
use crate::render::Rendered;
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
    /// Time budget in milliseconds, counted from the start of [`SearchIndex::search`]. Past
    /// it, the search stops consuming CPU and answers what it found so far, with
    /// [`SearchResponse::timed_out`] set (or fails, see `allow_partial`). `None`: no budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Whether a search that hits its deadline answers the hits gathered so far (`true`, the
    /// default) or fails with [`CoreError::DeadlineExceeded`].
    #[serde(default = "yes")]
    pub allow_partial: bool,
    /// An absolute deadline, for callers that start the clock themselves (e.g. when the request
    /// arrived, before it waited in a queue). Not part of the JSON form. With `timeout_ms` as
    /// well, the earlier of the two applies.
    #[serde(skip)]
    pub deadline: Option<Instant>,
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
            timeout_ms: None,
            allow_partial: true,
            deadline: None,
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

    /// Sets the time budget, counted from the start of the search.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Sets an absolute deadline.
    pub fn deadline(mut self, at: Instant) -> Self {
        self.deadline = Some(at);
        self
    }

    /// Whether hitting the deadline answers partial results (`true`) or an error.
    pub fn allow_partial(mut self, on: bool) -> Self {
        self.allow_partial = on;
        self
    }

    /// The deadline of a search started at `start`: the earlier of [`SearchRequest::deadline`]
    /// and `start + timeout_ms`. `None` when neither is set (or the budget is too large for the
    /// clock to represent, which amounts to none).
    pub fn effective_deadline(&self, start: Instant) -> Option<Instant> {
        let budget = self
            .timeout_ms
            .and_then(|ms| start.checked_add(Duration::from_millis(ms)));
        match (self.deadline, budget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
    /// Number of matching documents, when counting was requested. When the search timed out,
    /// the number counted before it stopped (a lower bound).
    pub total: Option<u64>,
    /// The search stopped at its deadline: `hits` are the best of the documents examined so far
    /// and `total` counts only those.
    #[serde(default)]
    pub timed_out: bool,
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
    ///
    /// With a deadline ([`SearchRequest::timeout_ms`], [`SearchRequest::deadline`]), collecting
    /// stops when it passes (the CPU work ends there: nothing goes on in the background) and
    /// highlighting is skipped from then on; the stored documents of the hits found so far are
    /// still fetched, as that is bounded by the page size. The answer says
    /// [`SearchResponse::timed_out`]; or, when the request does not allow partial results, the
    /// search fails with [`CoreError::DeadlineExceeded`].
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResponse> {
        let started = Instant::now();
        req.validate()?;
        let query = self.queries.parse(&req.query, &self.config.query_limits)?;
        let searcher = self.reader.searcher();
        let deadline = req.effective_deadline(started).map(Deadline::new);
        let resp = self.run(&searcher, query.as_ref(), req, deadline.as_ref(), started)?;
        // Also when the deadline passed while highlighting: some snippets are missing.
        if resp.timed_out && !req.allow_partial {
            return Err(self.deadline_exceeded(started));
        }
        Ok(resp)
    }

    fn deadline_exceeded(&self, started: Instant) -> CoreError {
        CoreError::DeadlineExceeded {
            index: self.name.clone(),
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn run(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        req: &SearchRequest,
        deadline: Option<&Arc<Deadline>>,
        started: Instant,
    ) -> Result<SearchResponse> {
        let err = |e| CoreError::tantivy(&self.name, "search", e);
        // Reads the clock: past the deadline, highlighting is skipped.
        let past_deadline = || deadline.is_some_and(|d| d.check());
        // Each shape gets its own collector: Tantivy prunes non-competitive documents
        // (block-WAND) only when the top-k collector runs alone, not inside a tuple.
        let top_k = || {
            TopDocs::with_limit(req.limit)
                .and_offset(req.offset)
                .order_by_score()
        };
        crate::faults::internal_point(crate::faults::SEARCH_EXECUTE).map_err(err)?;
        let (top, total) = match (req.limit > 0, req.count) {
            (true, false) => (
                deadline::search(searcher, query, &top_k(), deadline).map_err(err)?,
                None,
            ),
            (true, true) => {
                let (top, n) =
                    deadline::search(searcher, query, &(top_k(), Count), deadline).map_err(err)?;
                (top, Some(n))
            }
            (false, true) => (
                Vec::new(),
                Some(deadline::search(searcher, query, &Count, deadline).map_err(err)?),
            ),
            (false, false) => (Vec::new(), None),
        };
        if !req.allow_partial && deadline.is_some_and(|d| d.expired()) {
            // Fetching documents for an incomplete answer nobody wants would be wasted work.
            return Err(self.deadline_exceeded(started));
        }
        // Snippets cost as much as the search itself on long documents: none past the deadline.
        // Stored documents are still fetched: the partial hits are the point of a timed-out
        // answer, and that work is bounded by the page size, not by the corpus.
        let highlighter = if req.highlight && !top.is_empty() && !past_deadline() {
            self.highlighter(searcher, query).map_err(err)?
        } else {
            Highlighter::None
        };
        let mut hits = Vec::with_capacity(top.len());
        let cache = self.config.doc_cache.as_ref().filter(|c| c.max_bytes() > 0);
        for (score, addr) in top {
            let segment = searcher.segment_reader(addr.segment_ord).segment_id();
            let cached = cache.and_then(|c| c.get(segment, addr.doc_id));
            let snippets = !matches!(highlighter, Highlighter::None) && !past_deadline();
            if let (Some(r), false) = (&cached, snippets) {
                // Seen before: neither the document store nor the serializer is needed.
                hits.push(Hit {
                    id: r.id.clone(),
                    score,
                    doc: Document::rendered(r.clone()),
                    highlights: BTreeMap::new(),
                });
                continue;
            }
            let doc: TantivyDocument = searcher
                .doc(addr)
                .map_err(|e| CoreError::tantivy(&self.name, "read document", e))?;
            let highlights = if snippets {
                highlight(&highlighter, &doc)
            } else {
                BTreeMap::new()
            };
            let (id, doc) = match (cached, cache) {
                (Some(r), _) => (r.id.clone(), Document::rendered(r)),
                (None, Some(c)) => {
                    let (id, doc) = self.stored_document(doc);
                    match serde_json::to_string(&doc) {
                        Ok(json) => {
                            let r = Arc::new(Rendered {
                                id,
                                json: json.into_boxed_str(),
                            });
                            c.insert(segment, addr.doc_id, r.clone());
                            (r.id.clone(), Document::rendered(r))
                        }
                        Err(_) => (id, doc),
                    }
                }
                (None, None) => self.stored_document(doc),
            };
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
            timed_out: deadline.is_some_and(|d| d.expired()),
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
