//! The ZEO 5 wire protocol and the storage server.

pub mod bench;
pub mod client;
pub mod commands;
pub mod wire;
