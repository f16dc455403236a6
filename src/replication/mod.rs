//! Replication: a hot-standby `zodbctl serve` whose Data.fs stays a byte-identical copy of
//! the primary's, and promotion of that standby when the primary is gone.
//!
//! Operators read `docs/replication.md` (configuration, failover, the wire protocol);
//! this is the map of the code.
//!
//! * [`state`]: the replication state file beside each replicated `Data.fs`
//!   (`<Data.fs>.replication.json`): the database id and the epoch lineage that promotion
//!   extends and that decides, when a replica connects, between resume, full
//!   resynchronisation and refusal.
//! * [`protocol`]: the frames on the replication connection (the only reader and writer
//!   of the format documented in `docs/replication.md`).
//! * [`primary`]: the replication listener of a primary, one sender per replica, and the
//!   hub that the commit path tells about durable transactions (and, in sync mode, waits on
//!   for an acknowledgement).
//! * [`replica`]: the replica's connection to its primary: handshake, apply, full
//!   resynchronisation, reconnects.
//! * [`admin`]: the server's admin socket (`zodbctl promote`, `zodbctl resync`).
//!
//! The engine side (reading raw committed transactions, appending them on a replica,
//! swapping in a resynchronised file) is `storage::replica`; nothing here reads the file
//! format itself.

pub mod admin;
pub mod commands;
