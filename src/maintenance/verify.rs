//! `verify`.

use anyhow::{Result, bail};

use crate::cli::{GlobalArgs, VerifyArgs};

pub fn run(_g: &GlobalArgs, _args: &VerifyArgs) -> Result<u8> {
    bail!("`verify` is not available in this build yet")
}
