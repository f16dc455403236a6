//! `dump`.

use anyhow::{Result, bail};

use crate::cli::{DumpArgs, GlobalArgs};

pub fn run(_g: &GlobalArgs, _args: &DumpArgs) -> Result<u8> {
    bail!("`dump` is not available in this build yet")
}
