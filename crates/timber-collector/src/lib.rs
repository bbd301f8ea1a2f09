//! A Timber-compatible ingest server (work in progress).
