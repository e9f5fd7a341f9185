//! Query text → Tantivy query, with limits checked before any expensive work.
//!
//! Tantivy's grammar is recursive and its parser builds one clause per term, so unbounded input
//! could exhaust the stack or the CPU. We check length and nesting depth with a linear scan
//! first, then the clause count, and only then build the query. Syntax errors are reported with
//! the byte position the lenient grammar points at, instead of echoing the whole query back.

use tantivy::Term;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, QueryParser, QueryParserError,
};
use tantivy::query_grammar::{self, Delimiter, UserInputAst, UserInputLeaf, UserInputLiteral};
use tantivy::schema::{Field, FieldType, Schema};
use tantivy::tokenizer::TokenizerManager;

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

/// Deepest nesting outside quoted phrases: brackets, plus chains of `NOT` (each `NOT` is one
/// more level of recursion in Tantivy's grammar).
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_quote, mut escaped) = (0usize, 0usize, false, false);
    let mut not_chain = 0usize;
    let mut word = 0..0;
    let bytes = text.as_bytes();
    let mut end_word = |word: &mut std::ops::Range<usize>, depth: usize, max: &mut usize| {
        if word.start == word.end {
            return;
        }
        if &bytes[word.clone()] == b"NOT" {
            not_chain += 1;
            *max = (*max).max(depth + not_chain);
        } else {
            not_chain = 0;
        }
        *word = 0..0;
    };
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        if in_quote {
            in_quote = b != b'"';
            continue;
        }
        match b {
            b'\\' => escaped = true,
            b'"' => in_quote = true,
            b'(' | b'[' | b'{' => {
                end_word(&mut word, depth, &mut max);
                depth += 1;
                max = max.max(depth);
            }
            b')' | b']' | b'}' => {
                end_word(&mut word, depth, &mut max);
                depth = depth.saturating_sub(1);
            }
            b if b.is_ascii_whitespace() => end_word(&mut word, depth, &mut max),
            _ => {
                if word.start == word.end {
                    word = i..i + 1;
                } else {
                    word.end = i + 1;
                }
            }
        }
    }
    end_word(&mut word, depth, &mut max);
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

/// Everything needed to turn query text into a Tantivy query for one index.
pub(crate) struct QueryBuilder {
    pub(crate) parser: QueryParser,
    schema: Schema,
    default_fields: Vec<Field>,
    tokenizers: TokenizerManager,
}

/// `word*` (unquoted, one word): a term-prefix query, which Tantivy's parser only offers for
/// phrases of two or more words.
fn bare_prefix(lit: &UserInputLiteral) -> Option<&str> {
    if !matches!(lit.delimiter, Delimiter::None) {
        return None;
    }
    let p = lit.phrase.strip_suffix('*')?;
    (!p.is_empty() && !p.contains(|c: char| c.is_whitespace() || c == '*')).then_some(p)
}

/// Whether a clause below the top level has only `MustNot` children.
fn has_negative_only_subclause(ast: &UserInputAst) -> bool {
    fn below(ast: &UserInputAst, top: bool) -> bool {
        match ast {
            UserInputAst::Leaf(_) => false,
            UserInputAst::Boost(inner, _) => below(inner, top),
            UserInputAst::Clause(children) => {
                let all_negative = !children.is_empty()
                    && children
                        .iter()
                        .all(|(o, _)| *o == Some(query_grammar::Occur::MustNot));
                (!top && all_negative) || children.iter().any(|(_, c)| below(c, false))
            }
        }
    }
    below(ast, true)
}

fn has_bare_prefix(ast: &UserInputAst) -> bool {
    match ast {
        UserInputAst::Leaf(leaf) => {
            matches!(&**leaf, UserInputLeaf::Literal(lit) if bare_prefix(lit).is_some())
        }
        UserInputAst::Boost(inner, _) => has_bare_prefix(inner),
        UserInputAst::Clause(children) => children.iter().any(|(_, c)| has_bare_prefix(c)),
    }
}

impl QueryBuilder {
    pub(crate) fn new(index: &tantivy::Index, default_fields: Vec<Field>) -> QueryBuilder {
        QueryBuilder {
            parser: QueryParser::for_index(index, default_fields.clone()),
            schema: index.schema(),
            default_fields,
            tokenizers: index.tokenizers().clone(),
        }
    }

    /// Parses `text`, enforcing `limits`.
    ///
    /// An empty query matches every document; a purely negative query (`-draft`) matches every
    /// document except those; `word*` matches terms starting with `word`.
    pub(crate) fn parse(&self, text: &str, limits: &QueryLimits) -> Result<Box<dyn Query>> {
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
        // Tantivy uses these two bytes as separators inside JSON field paths, and a field
        // path containing them trips an assertion in its parser (found by fuzzing).
        if let Some(at) = trimmed.find(['\0', '\u{1}']) {
            return Err(CoreError::QuerySyntax {
                position: Some(at + (text.len() - text.trim_start().len())),
                message: "control characters U+0000 and U+0001 are not allowed in a query".into(),
            });
        }
        let depth = nesting_depth(trimmed);
        if depth > limits.max_depth {
            return Err(CoreError::QueryLimit {
                what: "nesting depth",
                actual: depth,
                max: limits.max_depth,
            });
        }
        // Only queries that may exceed a limit, use `word*` or negate pay for a second pass.
        let may_prefix = trimmed.contains('*');
        let may_negate = trimmed.contains('-') || trimmed.contains("NOT");
        if leaf_upper_bound(trimmed) > limits.max_clauses || may_prefix || may_negate {
            let ast = query_grammar::parse_query(trimmed).map_err(|_| syntax_error(trimmed))?;
            let clauses = count_leaves(&ast);
            if clauses > limits.max_clauses {
                return Err(CoreError::QueryLimit {
                    what: "number of clauses",
                    actual: clauses,
                    max: limits.max_clauses,
                });
            }
            // Tantivy's parser turns `a AND NOT b` into `+a +(-b)`, and a nested clause that
            // only excludes matches nothing: our builder gives such clauses "all documents"
            // to exclude from (found by the model-based test).
            if (may_prefix && has_bare_prefix(&ast))
                || (may_negate && has_negative_only_subclause(&ast))
            {
                return self.build(ast).map_err(|e| parser_error(e, trimmed));
            }
        }
        match self.parser.parse_query(trimmed) {
            Ok(q) => Ok(q),
            Err(QueryParserError::AllButQueryForbidden) => self
                .parser
                .parse_query(&format!("* {trimmed}"))
                .map_err(|e| parser_error(e, trimmed)),
            Err(e) => Err(parser_error(e, trimmed)),
        }
    }

    fn build(&self, ast: UserInputAst) -> std::result::Result<Box<dyn Query>, QueryParserError> {
        match ast {
            UserInputAst::Leaf(leaf) => match *leaf {
                UserInputLeaf::Literal(lit) if bare_prefix(&lit).is_some() => {
                    self.prefix_query(&lit)
                }
                other => self
                    .parser
                    .build_query_from_user_input_ast(UserInputAst::Leaf(Box::new(other))),
            },
            UserInputAst::Boost(inner, boost) => Ok(Box::new(BoostQuery::new(
                self.build(*inner)?,
                boost.into_inner() as f32,
            ))),
            UserInputAst::Clause(children) => {
                let mut subs = Vec::with_capacity(children.len() + 1);
                for (occur, child) in children {
                    let occur = match occur {
                        Some(query_grammar::Occur::Must) => Occur::Must,
                        Some(query_grammar::Occur::MustNot) => Occur::MustNot,
                        _ => Occur::Should,
                    };
                    subs.push((occur, self.build(child)?));
                }
                if subs.iter().all(|(o, _)| *o == Occur::MustNot) {
                    subs.push((Occur::Should, Box::new(AllQuery)));
                }
                Ok(Box::new(BooleanQuery::new(subs)))
            }
        }
    }

    fn prefix_query(
        &self,
        lit: &UserInputLiteral,
    ) -> std::result::Result<Box<dyn Query>, QueryParserError> {
        let prefix = bare_prefix(lit).expect("checked by caller");
        let targets: Vec<(Field, &str)> = match &lit.field_name {
            Some(name) => match self.schema.find_field(name) {
                Some(found) => vec![found],
                None => {
                    let json: Vec<(Field, &str)> = self
                        .default_fields
                        .iter()
                        .filter(|f| {
                            matches!(
                                self.schema.get_field_entry(**f).field_type(),
                                FieldType::JsonObject(_)
                            )
                        })
                        .map(|f| (*f, name.as_str()))
                        .collect();
                    if json.is_empty() {
                        return Err(QueryParserError::FieldDoesNotExist(name.clone()));
                    }
                    json
                }
            },
            None => self.default_fields.iter().map(|f| (*f, "")).collect(),
        };
        let mut subs: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (field, path) in targets {
            let entry = self.schema.get_field_entry(field);
            let (indexing, is_json) = match entry.field_type() {
                FieldType::Str(o) => (o.get_indexing_options(), false),
                FieldType::JsonObject(o) => (o.get_text_indexing_options(), true),
                _ => {
                    return Err(QueryParserError::FieldNotIndexed(format!(
                        "{}: prefix queries need a text field",
                        entry.name()
                    )));
                }
            };
            let Some(indexing) = indexing else {
                return Err(QueryParserError::FieldNotIndexed(entry.name().to_string()));
            };
            // A JSON field reached without a path (bare term on a schemaless index) holds no
            // root-level text; `_all` covers it.
            if is_json && path.is_empty() {
                continue;
            }
            let mut analyzer = self.tokenizers.get(indexing.tokenizer()).ok_or_else(|| {
                QueryParserError::UnknownTokenizer {
                    field: entry.name().to_string(),
                    tokenizer: indexing.tokenizer().to_string(),
                }
            })?;
            let mut tokens = Vec::new();
            analyzer
                .token_stream(prefix)
                .process(&mut |t| tokens.push(t.text.clone()));
            let [token] = tokens.as_slice() else {
                continue;
            };
            let term = if is_json {
                let mut t = Term::from_field_json_path(field, path, false);
                t.append_type_and_str(token);
                t
            } else {
                Term::from_field_text(field, token)
            };
            subs.push((
                Occur::Should,
                Box::new(FuzzyTermQuery::new_prefix(term, 0, true)),
            ));
        }
        Ok(Box::new(BooleanQuery::new(subs)))
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
        assert_eq!(nesting_depth("NOT NOT NOT a"), 3);
        assert_eq!(nesting_depth("NOT a NOT b"), 1);
        assert_eq!(nesting_depth("(NOT (NOT a))"), 4);
        assert_eq!(nesting_depth("\"NOT NOT\" NOTE"), 0);
    }

    #[test]
    fn leaf_bound_is_an_upper_bound() {
        for q in [
            "a b c",
            "(a) (b)",
            "\"a b\" c",
            "+a -b title:c",
            "a AND (b OR c)",
        ] {
            let ast = query_grammar::parse_query(q).unwrap();
            assert!(count_leaves(&ast) <= leaf_upper_bound(q), "{q}");
        }
    }
}
