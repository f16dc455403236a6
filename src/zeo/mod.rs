//! The ZEO 5 wire protocol and the storage server (`zodbctl serve`).
//!
//! The server follows mini-redis's shape: `server` accepts connections and hands each to a
//! `shards` thread (a single-threaded runtime) for its whole life; `connection` cuts
//! frames, decodes them through `codec` (the `wire` module's codecs) and runs each command
//! against the connection's registered storage; `shared` holds what connections of one storage
//! share (the commit lock and its FIFO queue, the commit sequencer, the invalidation queue,
//! statistics); `backend` is the storage interface, implemented by the FileStorage engine and
//! by the memory storage (`file_backend`, `memory_backend`); `outbox` writes each
//! connection's replies and invalidations in order, bounded, from whichever thread pushes
//! them; `tls` is ZEO's mutual TLS.
//!
//! Behaviour chosen where the reference server (ZEO 6.2) has quirks (zeo-protocol.md §12 and
//! the decisions in the spec's README):
//! - Nothing touches a storage before `vote`: stores are recorded per connection and replayed
//!   once the storage's fair (FIFO) commit lock is held. The last store of an oid wins (a
//!   blob's `storea` + blob store become one record); restores are copied verbatim.
//! - Conflicts are always resolved client-side: `vote` returns conflict maps.
//! - A transaction timeout aborts the transaction, releases the lock, then closes.
//! - Invalidations list every oid a transaction wrote (deletes and restores included), and
//!   are queued on every other connection before the commit becomes visible and before the
//!   committer's own `tpc_finish` reply and the lock release (§4.5).
//! - `tpc_finish` of an unknown transaction, or without a vote, is an error; `new_oid` works;
//!   explicit tids that do not increase are refused at vote.
//! - `pack(t, wait)` runs the engine's online pack off the network threads
//!   (`connection/pack.rs`); commits and loads go on meanwhile (the engine takes its commit
//!   lock only for the final swap, so a vote at that moment waits a few milliseconds);
//!   `get_info` says `supports_pack: True`; the memory storage's pack is a no-op.
//! - Bounds: request frames (`max-frame-size`), unsent replies per connection (a client that
//!   does not read is closed), data buffered per transaction, iterators per connection.

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
pub mod shards;
pub mod shared;
pub mod stats;
pub mod tls;
pub mod wire;
