//! Offline maintenance of FileStorage files: verify (fstest), dump (fsdump).

pub mod deep;
pub mod dump;
pub mod fstest;
pub mod pyrepr;
mod reader;
pub mod verify;
