//! The ZEO 5 wire protocol and the storage server (`zodbctl serve`).
//!
//! The server follows mini-redis's shape: `server` accepts connections; `connection` cuts
//! frames, decodes them through `codec` (the `wire` module's codecs) and runs each command
//! against the connection's registered storage; `shared` holds what connections of one storage
//! share (the commit lock and its FIFO queue, the commit sequencer, the invalidation queue,
//! statistics); `backend` is the storage interface, implemented by the FileStorage engine and
//! by the memory storage; `outbox` writes each connection's replies in order, bounded.

pub mod backend;
pub mod bench;
pub mod client;
pub mod codec;
pub mod commands;
pub mod config;
pub mod connection;
pub mod errors;
pub mod file_backend;
pub mod log;
pub mod memory_backend;
pub mod outbox;
pub mod server;
pub mod shared;
pub mod tls;
pub mod wire;
