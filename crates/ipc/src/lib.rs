//! IPC between the daemon processes (being written).
