//! Async driver over tokio (to be written).
