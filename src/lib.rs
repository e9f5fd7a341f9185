//! ironsift: a full-text search service on Tantivy that stays up and loses nothing.
//!
//! This crate is a thin facade: it re-exports the building blocks (each usable alone as its own
//! crate) and offers an [`Engine`] builder for programs that embed ironsift. The `ironsift`
//! binary (the CLI and, later, the HTTP service) is built on the same API.
//!
//! ```
//! use ironsift::{Engine, IndexKind, SearchRequest};
//! # let dir = tempfile::tempdir().unwrap();
//! let engine = Engine::builder().data_dir(dir.path()).build()?;
//! let docs = engine.open_or_create("docs", IndexKind::Documents)?;
//! docs.upsert(serde_json::json!({"id": 7, "title": "kill -9 safe search"}))?;
//! docs.commit()?;
//! assert_eq!(docs.search(&SearchRequest::new("safe"))?.total, Some(1));
//! # Ok::<(), ironsift::CoreError>(())
//! ```
#![warn(missing_docs, unreachable_pub)]

use std::path::PathBuf;

#[doc(inline)]
pub use search_core::{
    Catalog, CoreError, DEFAULT_INDEX, DocCache, Durability, FieldSpec, FieldType, Highlight, Hit,
    IndexConfig, IndexDirOptions, IndexDirReport, IndexKind, IndexStats, IngestReport, QueryLimits,
    RepairReport, SchemaSpec, SearchIndex, SearchRequest, SearchResponse, SnapshotInfo,
    VerifyReport,
};
#[doc(inline)]
pub use search_error::{Classify, ErrorCode, Severity};

/// The data directory used when none is configured.
pub const DEFAULT_DATA_DIR: &str = "./ironsift-data";

/// An embedded ironsift: a data directory of named indexes.
#[derive(Debug, Clone)]
pub struct Engine {
    catalog: Catalog,
}

/// Configures an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    data_dir: PathBuf,
    config: IndexConfig,
}

impl Engine {
    /// Starts configuring an engine (data directory `./ironsift-data` unless set).
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            config: IndexConfig::default(),
        }
    }

    /// The catalog of indexes.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Opens an existing index.
    pub fn index(&self, name: &str) -> Result<SearchIndex, CoreError> {
        self.catalog.open_index(name)
    }

    /// Opens an index, creating it (without explicit schema) if missing.
    pub fn open_or_create(&self, name: &str, kind: IndexKind) -> Result<SearchIndex, CoreError> {
        self.catalog.open_or_create(name, kind)
    }
}

impl EngineBuilder {
    /// Where the indexes live (created if missing).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// Memory for each index writer's in-memory segments.
    pub fn writer_heap_bytes(mut self, bytes: usize) -> Self {
        self.config.writer_heap_bytes = bytes;
        self
    }

    /// Writer threads per index (`None`: one per core, up to 8).
    pub fn writer_threads(mut self, threads: Option<usize>) -> Self {
        self.config.writer_threads = threads;
        self
    }

    /// Limits applied to every query.
    pub fn query_limits(mut self, limits: QueryLimits) -> Self {
        self.config.query_limits = limits;
        self
    }

    /// Opens (creating if needed) the data directory.
    pub fn build(self) -> Result<Engine, CoreError> {
        Ok(Engine {
            catalog: Catalog::with_config(self.data_dir, self.config)?,
        })
    }
}
