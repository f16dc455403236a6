//! zdaemon-style supervision, laid out like Horust: the manager daemon (`manager`, with its
//! process plumbing in `daemon`), the control client (`client`, used by `commands`), and the
//! control-socket protocol they share (`protocol`). `settings` is what the manager needs to
//! know about an instance; `config` builds it from the instance configuration; `ready` holds
//! the readiness probes and systemd's notify protocol.

pub mod client;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod manager;
pub mod protocol;
pub mod ready;
pub mod settings;
pub mod zope;
