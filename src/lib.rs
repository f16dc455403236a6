//! zodbctl: one binary that runs a ZODB/ZEO cluster.
//!
//! The modules follow the product: `instance` (configuration and scaffolding), `storage`
//! (the FileStorage engine, no networking), `pickle` (a pickle codec that executes nothing),
//! `zeo` (wire protocol and server), `supervisor` (zdaemon-style manager and control client),
//! `maintenance` (verify, dump and the other offline tools), `tui` (the `top` dashboard).
//! `cli` declares the command line; `app` maps it onto those modules.

pub mod app;
pub mod cli;
pub mod docs;
pub mod error;
pub mod instance;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod pickle;
pub mod replication;
pub mod storage;
pub mod supervisor;
pub mod tui;
pub mod zeo;
