//! The FileStorage engine: Data.fs read and write, byte-compatible with Python ZODB.
//! Nothing here knows about the network.
pub mod memory;
