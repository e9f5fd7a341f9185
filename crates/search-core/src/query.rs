//! Query text → Tantivy query, with limits checked before any expensive work.
//!
//! Tantivy's grammar is recursive and its parser builds one clause per term, so unbounded input
//! could exhaust the stack or the CPU. We check length and nesting depth with a linear scan
//! first, then the clause count, and only then build the query. Syntax errors are reported with
//! the byte position the lenient grammar points at, instead of echoing the whole query back.

use tantivy::query::{AllQuery, Query, QueryParser, QueryParserError};
use tantivy::query_grammar::{self, UserInputAst};

use crate::error::{CoreError, Result};

/// Bounds on query text, checked before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Longest query accepted, in bytes.
    pub max_bytes: usize,
    /// Most terms/phrases (clauses) in one query.
    pub max_clauses: usize,
    /// Deepest nesting of parentheses.
    pub max_depth: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_bytes: 64 * 1024,
            max_clauses: 1024,
            max_depth: 32,
        }
    }
}

/// Deepest parenthesis nesting outside quoted phrases.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_quote, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' => escaped = true,
            b'"' => in_quote = !in_quote,
            b'(' | b'[' | b'{' if !in_quote => {
                depth += 1;
                max = max.max(depth);
            }
            b')' | b']' | b'}' if !in_quote => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// An upper bound on the number of leaves the grammar can produce: every leaf needs at least one
/// run of bytes that are neither whitespace nor parentheses.
fn leaf_upper_bound(text: &str) -> usize {
    let mut runs = 0;
    let mut in_run = false;
    for b in text.bytes() {
        let sep = b.is_ascii_whitespace() || b == b'(' || b == b')';
        if !sep && !in_run {
            runs += 1;
        }
        in_run = !sep;
    }
    runs
}

fn count_leaves(ast: &UserInputAst) -> usize {
    match ast {
        UserInputAst::Leaf(_) => 1,
        UserInputAst::Boost(inner, _) => count_leaves(inner),
        UserInputAst::Clause(children) => children.iter().map(|(_, c)| count_leaves(c)).sum(),
    }
}

fn syntax_error(text: &str) -> CoreError {
    let (_, errors) = query_grammar::parse_query_lenient(text);
    match errors.into_iter().next() {
        Some(e) => CoreError::QuerySyntax {
            position: Some(e.pos.min(text.len())),
            message: e.message,
        },
        None => CoreError::QuerySyntax {
            position: None,
            message: "the query does not follow the query syntax".into(),
        },
    }
}

fn parser_error(err: QueryParserError, text: &str) -> CoreError {
    match err {
        QueryParserError::SyntaxError(_) => syntax_error(text),
        other => CoreError::QuerySyntax {
            position: None,
            message: other.to_string(),
        },
    }
}

/// Parses `text` for `parser`'s index, enforcing `limits`.
///
/// An empty query matches every document; a purely negative query (`-draft`) matches every
/// document except those.
pub(crate) fn parse(
    parser: &QueryParser,
    text: &str,
    limits: &QueryLimits,
) -> Result<Box<dyn Query>> {
    if text.len() > limits.max_bytes {
        return Err(CoreError::QueryLimit {
            what: "length in bytes",
            actual: text.len(),
            max: limits.max_bytes,
        });
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(Box::new(AllQuery));
    }
    let depth = nesting_depth(trimmed);
    if depth > limits.max_depth {
        return Err(CoreError::QueryLimit {
            what: "nesting depth",
            actual: depth,
            max: limits.max_depth,
        });
    }
    if leaf_upper_bound(trimmed) > limits.max_clauses {
        let ast = query_grammar::parse_query(trimmed).map_err(|_| syntax_error(trimmed))?;
        let clauses = count_leaves(&ast);
        if clauses > limits.max_clauses {
            return Err(CoreError::QueryLimit {
                what: "number of clauses",
                actual: clauses,
                max: limits.max_clauses,
            });
        }
    }
    match parser.parse_query(trimmed) {
        Ok(q) => Ok(q),
        Err(QueryParserError::AllButQueryForbidden) => parser
            .parse_query(&format!("* {trimmed}"))
            .map_err(|e| parser_error(e, trimmed)),
        Err(e) => Err(parser_error(e, trimmed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_quoted_and_escaped_parens() {
        assert_eq!(nesting_depth("a (b (c)) d"), 2);
        assert_eq!(nesting_depth("\"((((\" x"), 0);
        assert_eq!(nesting_depth(r"\(\(\( x"), 0);
        assert_eq!(nesting_depth("a:[1 TO 2]"), 1);
    }

    #[test]
    fn leaf_bound_is_an_upper_bound() {
        for q in ["a b c", "(a)(b)", "\"a b\" c", "+a -b title:c", "a AND (b OR c)"] {
            let ast = query_grammar::parse_query(q).unwrap();
            assert!(count_leaves(&ast) <= leaf_upper_bound(q), "{q}");
        }
    }
}
