//! zdaemon-style supervision: the manager daemon, its control socket protocol, and the
//! control client behind `start`, `stop`, `status` and friends.

pub mod commands;
