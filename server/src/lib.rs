//! Storage engine and network server.
