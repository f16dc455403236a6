//! The control commands: start, stop, restart, status, kill, wait, fg, logtail, logreopen, up.

use anyhow::{Result, bail};

use crate::cli::{GlobalArgs, KillArgs, LogtailArgs, StartArgs, StatusArgs, UpArgs};

pub fn start(_g: &GlobalArgs, _args: &StartArgs) -> Result<u8> {
    bail!("`start` is not available in this build yet")
}

pub fn stop(_g: &GlobalArgs) -> Result<u8> {
    bail!("`stop` is not available in this build yet")
}

pub fn restart(_g: &GlobalArgs) -> Result<u8> {
    bail!("`restart` is not available in this build yet")
}

pub fn status(_g: &GlobalArgs, _args: &StatusArgs) -> Result<u8> {
    bail!("`status` is not available in this build yet")
}

pub fn kill(_g: &GlobalArgs, _args: &KillArgs) -> Result<u8> {
    bail!("`kill` is not available in this build yet")
}

pub fn wait(_g: &GlobalArgs) -> Result<u8> {
    bail!("`wait` is not available in this build yet")
}

pub fn fg(_g: &GlobalArgs) -> Result<u8> {
    bail!("`fg` is not available in this build yet")
}

pub fn logtail(_g: &GlobalArgs, _args: &LogtailArgs) -> Result<u8> {
    bail!("`logtail` is not available in this build yet")
}

pub fn logreopen(_g: &GlobalArgs) -> Result<u8> {
    bail!("`logreopen` is not available in this build yet")
}

pub fn up(_g: &GlobalArgs, _args: &UpArgs) -> Result<u8> {
    bail!("`up` is not available in this build yet")
}
