//! The durable queue (being written).
