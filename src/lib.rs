//! ironsift facade
