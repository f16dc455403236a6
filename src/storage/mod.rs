//! The FileStorage engine: `Data.fs` read and write, byte-compatible with Python ZODB 6.4.
//! Nothing here knows about the network; the ZEO server and the maintenance tools call it.
//!
//! Module map: [`format`] (the byte layout, documented there), [`types`] ([`Oid`], [`Tid`],
//! [`TxnMeta`]), [`timestamp`] ([`TimeStamp`], how tids encode time), [`error`]
//! ([`StorageError`]), [`index`] (the compact in-memory oid → position index),
//! [`indexfile`] (Python's `Data.fs.index`).

pub mod error;
pub mod format;
pub mod index;
pub mod indexfile;
pub mod timestamp;
pub mod types;

pub use error::{Result, StorageError};
pub use timestamp::TimeStamp;
pub use types::{Oid, Tid, TxnMeta};
