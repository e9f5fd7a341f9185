//! ironsift's search engine core, on Tantivy.
//!
//! It owns everything that touches an index: the [`Catalog`] of named indexes in a data
//! directory, schemas ([`IndexKind`], [`SchemaSpec`]), ingestion of folders
//! ([`SearchIndex::index_dir`]) and JSON documents ([`SearchIndex::upsert`],
//! [`SearchIndex::ingest_ndjson`]), and search with limits and highlighted snippets
//! ([`SearchIndex::search`]). Durability (WAL), deadlines and corruption repair build on it.
//! Fault injection for tests (fail points, with the `failpoints` feature): [`faults`].
//!
//! **Invariant:** this crate is synchronous and never spawns async tasks; callers that serve
//! many requests run it on a blocking pool.
//!
//! ```
//! use search_core::{Catalog, IndexKind, SearchRequest};
//! # let dir = tempfile::tempdir().unwrap();
//! let catalog = Catalog::open(dir.path())?;
//! let index = catalog.create("books", IndexKind::Documents, None)?;
//! index.upsert(serde_json::json!({"id": "1", "title": "The Rust Programming Language"}))?;
//! index.commit()?;
//! let found = index.search(&SearchRequest::new("title:rust"))?;
//! assert_eq!(found.hits[0].id, "1");
//! # Ok::<(), search_core::CoreError>(())
//! ```
#![warn(missing_docs, unreachable_pub)]

mod catalog;
mod deadline;
mod document;
mod error;
pub mod faults;
mod files;
mod index;
mod integrity;
mod query;
mod render;
mod schema;
mod search;
mod snapshot;
mod wal;

pub use catalog::{Catalog, DEFAULT_INDEX, IndexMeta, RepairReport, validate_index_name};
pub use document::Document;
pub use error::{CoreError, Result};
pub use files::{
    BINARY_SNIFF_BYTES, DirProgress, IndexDirOptions, IndexDirReport, WalkWarning, language_of,
};
pub use index::{
    IndexConfig, IndexStats, IngestReport, LineError, MAX_ID_BYTES, MAX_LINE_ERRORS, SearchIndex,
};
pub use integrity::{Damage, VerifyReport, verify_index_dir};
pub use query::QueryLimits;
pub use render::{DocCache, Rendered};
pub use schema::{
    ALL_FIELD, FieldSpec, FieldType, ID_FIELD, IndexKind, MAX_SCHEMA_FIELDS, SOURCE_FIELD,
    SchemaSpec,
};
pub use search::{Highlight, Hit, MAX_LIMIT, MAX_WINDOW, SearchRequest, SearchResponse};
pub use snapshot::{SnapshotFile, SnapshotInfo, list_snapshots};
pub use wal::{Durability, ReplayStats, decode_wal_bytes};

/// The Tantivy version this crate is built on, re-exported so callers build compatible queries.
pub use tantivy;
