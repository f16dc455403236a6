//! Instance configuration (TOML, and ZConfig zeo.conf as a drop-in) and scaffolding.

pub mod commands;
