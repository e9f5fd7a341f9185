//! A stored document as returned with hits: serialized straight from Tantivy's stored form, and
//! turned into a `serde_json` map only when a caller asks for one.
//!
//! Search answers usually go out as JSON (HTTP) and are never inspected field by field; building
//! an intermediate `serde_json::Value` per hit would copy every stored string once more than
//! needed. [`Document`] serializes from the stored bytes directly and caches the map it builds
//! for callers that index into it.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use tantivy::TantivyDocument;
use tantivy::schema::document::{CompactDocValue, ReferenceValue, ReferenceValueLeaf as Leaf};
use tantivy::schema::{Field, Schema, Value as _};

use crate::index::to_json;
use crate::render::Rendered;

/// The fields of one stored document.
pub struct Document {
    stored: Option<Stored>,
    /// Rendered once as JSON text (see [`crate::DocCache`]).
    rendered: Option<Arc<Rendered>>,
    json: OnceLock<Map<String, Value>>,
}

struct Stored {
    doc: TantivyDocument,
    schema: Schema,
    /// Field left out (the id, returned beside the document).
    id: Field,
    /// For schemaless indexes: the JSON field holding the document as given.
    source: Option<Field>,
}

impl Document {
    pub(crate) fn stored(
        doc: TantivyDocument,
        schema: Schema,
        id: Field,
        source: Option<Field>,
    ) -> Self {
        Document {
            stored: Some(Stored {
                doc,
                schema,
                id,
                source,
            }),
            rendered: None,
            json: OnceLock::new(),
        }
    }

    pub(crate) fn rendered(rendered: Arc<Rendered>) -> Self {
        Document {
            stored: None,
            rendered: Some(rendered),
            json: OnceLock::new(),
        }
    }

    /// A document from a JSON object.
    pub fn from_json(map: Map<String, Value>) -> Self {
        Document {
            stored: None,
            rendered: None,
            json: OnceLock::from(map),
        }
    }

    /// The document as JSON object text, when it was rendered once and kept (a search with a
    /// [`crate::DocCache`]): a caller writing JSON can copy it as it is instead of serializing
    /// the document again. `None` otherwise; serializing the document gives the same object.
    pub fn raw_json(&self) -> Option<&str> {
        self.rendered.as_deref().map(|r| &*r.json)
    }

    /// The document as a JSON object (built on first call, then cached).
    pub fn as_json(&self) -> &Map<String, Value> {
        self.json
            .get_or_init(|| match (&self.stored, &self.rendered) {
                (Some(s), _) => s.build_map(),
                (None, Some(r)) => serde_json::from_str(&r.json).unwrap_or_default(),
                (None, None) => Map::new(),
            })
    }

    /// The document as a JSON object, by value.
    pub fn into_json(self) -> Map<String, Value> {
        self.as_json();
        self.json.into_inner().unwrap_or_default()
    }

    /// One field's value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_json().get(key)
    }

    /// About how many bytes the document takes as JSON (its strings plus a little per value
    /// and key), without serializing it: for sizing an output buffer once instead of letting
    /// it grow by doubling (each growth copies everything written so far).
    pub fn json_size_hint(&self) -> usize {
        if let Some(r) = &self.rendered {
            return r.json.len();
        }
        match (&self.stored, self.json.get()) {
            (_, Some(map)) => map.iter().map(|(k, v)| k.len() + 4 + value_hint(v)).sum(),
            (Some(s), None) => s
                .doc
                .field_values()
                .map(|(f, v)| s.schema.get_field_name(f).len() + 4 + stored_hint(v))
                .sum(),
            (None, None) => 2,
        }
    }
}

fn stored_hint(v: CompactDocValue<'_>) -> usize {
    match v.as_value() {
        ReferenceValue::Leaf(Leaf::Str(s) | Leaf::Facet(s)) => s.len() + s.len() / 16 + 2,
        ReferenceValue::Leaf(Leaf::PreTokStr(p)) => p.text.len() + 2,
        ReferenceValue::Leaf(_) => 20,
        ReferenceValue::Array(items) => items.map(|i| stored_hint(i) + 1).sum::<usize>() + 2,
        ReferenceValue::Object(entries) => {
            entries
                .map(|(k, v)| k.len() + 4 + stored_hint(v))
                .sum::<usize>()
                + 2
        }
    }
}

fn value_hint(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + s.len() / 16 + 2,
        Value::Array(items) => items.iter().map(|i| value_hint(i) + 1).sum::<usize>() + 2,
        Value::Object(m) => {
            m.iter()
                .map(|(k, v)| k.len() + 4 + value_hint(v))
                .sum::<usize>()
                + 2
        }
        _ => 20,
    }
}

impl Stored {
    /// Runs of values per field, in first-appearance order (multi-valued fields become arrays).
    fn grouped(&self) -> Vec<(Field, Vec<CompactDocValue<'_>>)> {
        let mut groups: Vec<(Field, Vec<CompactDocValue<'_>>)> = Vec::new();
        for (field, value) in self.doc.field_values() {
            if field == self.id {
                continue;
            }
            match groups.iter_mut().find(|(f, _)| *f == field) {
                Some((_, values)) => values.push(value),
                None => groups.push((field, vec![value])),
            }
        }
        groups
    }

    fn build_map(&self) -> Map<String, Value> {
        if let Some(source) = self.source {
            return match self.doc.get_first(source).map(to_json) {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
        }
        self.grouped()
            .into_iter()
            .map(|(field, values)| {
                let name = self.schema.get_field_name(field).to_string();
                let v = if values.len() == 1 {
                    to_json(values[0])
                } else {
                    Value::Array(values.into_iter().map(to_json).collect())
                };
                (name, v)
            })
            .collect()
    }
}

/// Serializes a stored value without building a `serde_json::Value`.
struct Ser<'a>(CompactDocValue<'a>);

impl Serialize for Ser<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_value() {
            ReferenceValue::Leaf(leaf) => match leaf {
                Leaf::Null | Leaf::Bytes(_) | Leaf::Custom(_) => s.serialize_none(),
                Leaf::Str(v) | Leaf::Facet(v) => s.serialize_str(v),
                Leaf::U64(v) => s.serialize_u64(v),
                Leaf::I64(v) => s.serialize_i64(v),
                Leaf::F64(v) if v.is_finite() => s.serialize_f64(v),
                Leaf::F64(_) => s.serialize_none(),
                Leaf::Bool(v) => s.serialize_bool(v),
                Leaf::Date(d) => s.serialize_i64(d.into_timestamp_nanos()),
                Leaf::IpAddr(ip) => s.collect_str(&ip),
                Leaf::PreTokStr(p) => s.serialize_str(&p.text),
            },
            ReferenceValue::Array(items) => {
                let items: Vec<_> = items.collect();
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Ser(item))?;
                }
                seq.end()
            }
            ReferenceValue::Object(entries) => {
                let mut map = s.serialize_map(None)?;
                for (k, v) in entries {
                    map.serialize_entry(k, &Ser(v))?;
                }
                map.end()
            }
        }
    }
}

struct Many<'a>(&'a [CompactDocValue<'a>]);

impl Serialize for Many<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&Ser(*v))?;
        }
        seq.end()
    }
}

impl Serialize for Document {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Some(map) = self.json.get() {
            return map.serialize(s);
        }
        let Some(stored) = &self.stored else {
            // Rendered text: through a map (writers of JSON copy `raw_json` instead).
            return self.as_json().serialize(s);
        };
        if let Some(source) = stored.source {
            return match stored.doc.get_first(source) {
                Some(v) => Ser(v).serialize(s),
                None => s.serialize_map(Some(0))?.end(),
            };
        }
        let groups = stored.grouped();
        let mut map = s.serialize_map(Some(groups.len()))?;
        for (field, values) in &groups {
            let name = stored.schema.get_field_name(*field);
            if values.len() == 1 {
                map.serialize_entry(name, &Ser(values[0]))?;
            } else {
                map.serialize_entry(name, &Many(values))?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Map::deserialize(d).map(Document::from_json)
    }
}

impl std::ops::Index<&str> for Document {
    type Output = Value;
    /// The field's value, or `null` when absent (like `serde_json::Value`'s indexing).
    fn index(&self, key: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(key).unwrap_or(&NULL)
    }
}

impl PartialEq for Document {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl Clone for Document {
    fn clone(&self) -> Self {
        match (&self.stored, &self.rendered) {
            (None, Some(r)) => Document::rendered(r.clone()),
            _ => Document::from_json(self.as_json().clone()),
        }
    }
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_json(), f)
    }
}
