//! Index kinds, user schemas and the Tantivy schema each one maps to.
//!
//! Three layouts exist:
//! - **files**: chunks of text files (`path`, `content`, line range, size, mtime...);
//! - **documents, schemaless** (default): any JSON object; its string values are searchable as
//!   free text (`_all`), and every value by path through a JSON field (`title:rust`, `a.b:3`);
//! - **documents, explicit schema**: declared fields only, each with a type; this is what plain
//!   Tantivy does, so it costs what plain Tantivy costs.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, JsonObjectOptions, NumericOptions, STORED, STRING,
    Schema, TextFieldIndexing, TextOptions,
};

use crate::error::{CoreError, Result};

/// Name of the id field present in every index.
pub const ID_FIELD: &str = "_id";
/// Free-text field of schemaless indexes (all string values of the document).
pub const ALL_FIELD: &str = "_all";
/// JSON field of schemaless indexes: the document as given, stored and indexed by path.
pub const SOURCE_FIELD: &str = "_source";
/// Exact (untokenized) path of a file, used as the key for incremental re-indexing.
pub(crate) const PATH_KEY_FIELD: &str = "_path";

/// What an index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexKind {
    /// Chunks of the text files of a folder.
    Files,
    /// JSON documents with ids.
    Documents,
}

impl IndexKind {
    /// Lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            IndexKind::Files => "files",
            IndexKind::Documents => "documents",
        }
    }
}

/// Type of a field in an explicit schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Tokenized full text (phrases supported).
    Text,
    /// Exact keyword, not tokenized (ids, tags, enums).
    String,
    /// Signed integer.
    I64,
    /// Unsigned integer.
    U64,
    /// Floating point number.
    F64,
    /// Boolean.
    Bool,
}

fn yes() -> bool {
    true
}

/// One field of an explicit schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Field name as it appears in documents and queries.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Returned with hits (default true).
    #[serde(default = "yes")]
    pub stored: bool,
    /// Searchable (default true).
    #[serde(default = "yes")]
    pub indexed: bool,
    /// Column-oriented for sorting/aggregations (default false).
    #[serde(default)]
    pub fast: bool,
    /// Tokenizer for text fields: `default`, `raw`, `en_stem`, `whitespace` (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
}

/// An explicit schema: the declared fields of a documents index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaSpec {
    /// The fields, in order. `id` is implicit and must not be declared.
    pub fields: Vec<FieldSpec>,
}

const TOKENIZERS: [&str; 4] = ["default", "raw", "en_stem", "whitespace"];

/// Fields an explicit schema may declare (Elasticsearch's default mapping limit): a schema
/// of 150,000 fields made an empty index of 58 MB and an index listing of 12 MB.
pub const MAX_SCHEMA_FIELDS: usize = 1000;

impl SchemaSpec {
    /// Checks names, duplicates and options; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.fields.is_empty() {
            return Err(invalid_schema("a schema needs at least one field"));
        }
        if self.fields.len() > MAX_SCHEMA_FIELDS {
            return Err(invalid_schema(format!(
                "a schema has at most {MAX_SCHEMA_FIELDS} fields, not {}",
                self.fields.len()
            )));
        }
        let mut seen = BTreeSet::new();
        for f in &self.fields {
            let n = f.name.as_str();
            if n.is_empty() || n.len() > 128 {
                return Err(invalid_schema(format!(
                    "field name {n:?} must be 1 to 128 bytes"
                )));
            }
            if n.starts_with('_') || n == "id" {
                return Err(invalid_schema(format!(
                    "field name {n:?} is reserved (names starting with '_' and \"id\")"
                )));
            }
            if !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                || n.starts_with('-')
            {
                return Err(invalid_schema(format!(
                    "field name {n:?} may only contain ASCII letters, digits, '_' and '-'"
                )));
            }
            if !seen.insert(n) {
                return Err(invalid_schema(format!("field {n:?} is declared twice")));
            }
            if !f.stored && !f.indexed && !f.fast {
                return Err(invalid_schema(format!(
                    "field {n:?} is neither stored, indexed nor fast"
                )));
            }
            if let Some(t) = &f.tokenizer {
                if f.field_type != FieldType::Text {
                    return Err(invalid_schema(format!(
                        "field {n:?}: a tokenizer only applies to text fields"
                    )));
                }
                if !TOKENIZERS.contains(&t.as_str()) {
                    return Err(invalid_schema(format!(
                        "field {n:?}: unknown tokenizer {t:?} (known: {})",
                        TOKENIZERS.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }
}

fn invalid_schema(reason: impl Into<String>) -> CoreError {
    CoreError::InvalidSchema {
        reason: reason.into(),
    }
}

fn text_indexing(tokenizer: &str) -> TextFieldIndexing {
    TextFieldIndexing::default()
        .set_tokenizer(tokenizer)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions)
}

/// Resolved Tantivy fields of an index, by layout.
#[derive(Debug, Clone)]
pub(crate) enum Layout {
    Files(FileFields),
    Schemaless(SchemalessFields),
    Explicit(ExplicitFields),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct FileFields {
    pub(crate) id: Field,
    pub(crate) path_key: Field,
    pub(crate) path: Field,
    pub(crate) ext: Field,
    pub(crate) lang: Field,
    pub(crate) size: Field,
    pub(crate) mtime: Field,
    pub(crate) line_start: Field,
    pub(crate) line_end: Field,
    pub(crate) content: Field,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SchemalessFields {
    pub(crate) id: Field,
    pub(crate) all: Field,
    pub(crate) source: Field,
}

#[derive(Debug, Clone)]
pub(crate) struct ExplicitFields {
    pub(crate) id: Field,
    pub(crate) fields: Vec<(FieldSpec, Field)>,
}

impl Layout {
    pub(crate) fn id(&self) -> Field {
        match self {
            Layout::Files(f) => f.id,
            Layout::Schemaless(f) => f.id,
            Layout::Explicit(f) => f.id,
        }
    }

    /// Fields a query term without `field:` searches.
    pub(crate) fn default_fields(&self) -> Vec<Field> {
        match self {
            Layout::Files(f) => vec![f.content, f.path],
            // `_source` is listed so that `name:value` with an undeclared name resolves to a
            // path inside the JSON field (Tantivy's default-JSON-field rule).
            Layout::Schemaless(f) => vec![f.all, f.source],
            Layout::Explicit(f) => f
                .fields
                .iter()
                .filter(|(s, _)| s.indexed && s.field_type == FieldType::Text)
                .map(|(_, field)| *field)
                .collect(),
        }
    }
}

/// Builds the Tantivy schema for a layout, returning the resolved fields too.
pub(crate) fn build_schema(kind: IndexKind, spec: Option<&SchemaSpec>) -> Result<(Schema, Layout)> {
    let mut b = Schema::builder();
    let id = b.add_text_field(ID_FIELD, STRING | STORED);
    let layout = match (kind, spec) {
        (IndexKind::Files, Some(_)) => {
            return Err(invalid_schema("a files index has a fixed schema"));
        }
        (IndexKind::Files, None) => {
            let text = TextOptions::default()
                .set_indexing_options(text_indexing("default"))
                .set_stored();
            Layout::Files(FileFields {
                id,
                path_key: b.add_text_field(PATH_KEY_FIELD, STRING | FAST),
                path: b.add_text_field("path", text.clone()),
                ext: b.add_text_field("ext", STRING | STORED),
                lang: b.add_text_field("lang", STRING | STORED),
                size: b.add_u64_field("size", STORED | FAST),
                mtime: b.add_i64_field("mtime_ns", STORED | FAST),
                line_start: b.add_u64_field("line_start", STORED),
                line_end: b.add_u64_field("line_end", STORED),
                content: b.add_text_field("content", text),
            })
        }
        (IndexKind::Documents, None) => {
            let all = b.add_text_field(
                ALL_FIELD,
                TextOptions::default().set_indexing_options(text_indexing("default")),
            );
            let source = b.add_json_field(
                SOURCE_FIELD,
                JsonObjectOptions::default()
                    .set_stored()
                    .set_indexing_options(text_indexing("default")),
            );
            Layout::Schemaless(SchemalessFields { id, all, source })
        }
        (IndexKind::Documents, Some(spec)) => {
            spec.validate()?;
            let mut fields = Vec::with_capacity(spec.fields.len());
            for f in &spec.fields {
                let field = match f.field_type {
                    FieldType::Text | FieldType::String => {
                        let mut o = TextOptions::default();
                        if f.indexed {
                            let tok = match f.field_type {
                                FieldType::String => "raw",
                                _ => f.tokenizer.as_deref().unwrap_or("default"),
                            };
                            let mut idx = text_indexing(tok);
                            if f.field_type == FieldType::String {
                                idx = idx.set_index_option(IndexRecordOption::Basic);
                            }
                            o = o.set_indexing_options(idx);
                        }
                        if f.stored {
                            o = o.set_stored();
                        }
                        if f.fast {
                            o = o.set_fast("raw");
                        }
                        b.add_text_field(&f.name, o)
                    }
                    FieldType::I64 | FieldType::U64 | FieldType::F64 | FieldType::Bool => {
                        let mut o = NumericOptions::default();
                        if f.indexed {
                            o = o | INDEXED;
                        }
                        if f.stored {
                            o = o | STORED;
                        }
                        if f.fast {
                            o = o | FAST;
                        }
                        match f.field_type {
                            FieldType::I64 => b.add_i64_field(&f.name, o),
                            FieldType::U64 => b.add_u64_field(&f.name, o),
                            FieldType::F64 => b.add_f64_field(&f.name, o),
                            _ => b.add_bool_field(&f.name, o),
                        }
                    }
                };
                fields.push((f.clone(), field));
            }
            Layout::Explicit(ExplicitFields { id, fields })
        }
    };
    Ok((b.build(), layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> SchemaSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn schema_validation_names_the_field() {
        let e = spec(r#"{"fields":[{"name":"_x","type":"text"}]}"#)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("\"_x\""), "{e}");
        let e = spec(r#"{"fields":[{"name":"a","type":"text"},{"name":"a","type":"i64"}]}"#)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("declared twice"), "{e}");
        let e = spec(r#"{"fields":[{"name":"a","type":"i64","tokenizer":"raw"}]}"#)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("only applies"), "{e}");
        assert!(
            serde_json::from_str::<SchemaSpec>(r#"{"fields":[{"name":"a","type":"blob"}]}"#)
                .is_err()
        );
        let many: Vec<String> = (0..=MAX_SCHEMA_FIELDS)
            .map(|i| format!(r#"{{"name":"f{i}","type":"text"}}"#))
            .collect();
        let e = spec(&format!(r#"{{"fields":[{}]}}"#, many.join(",")))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("at most 1000 fields"), "{e}");
        spec(&format!(r#"{{"fields":[{}]}}"#, many[1..].join(",")))
            .validate()
            .unwrap();
    }

    #[test]
    fn every_layout_builds() {
        build_schema(IndexKind::Files, None).unwrap();
        build_schema(IndexKind::Documents, None).unwrap();
        let s = spec(
            r#"{"fields":[{"name":"title","type":"text"},{"name":"n","type":"u64","fast":true},
            {"name":"tag","type":"string"},{"name":"ok","type":"bool"},{"name":"x","type":"f64"},
            {"name":"t","type":"text","tokenizer":"en_stem","stored":false}]}"#,
        );
        let (_, layout) = build_schema(IndexKind::Documents, Some(&s)).unwrap();
        assert_eq!(layout.default_fields().len(), 2);
        assert!(build_schema(IndexKind::Files, Some(&s)).is_err());
    }
}
