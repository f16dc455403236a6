//! `serve` and `bench`.

use anyhow::{Result, bail};

use crate::cli::{BenchArgs, GlobalArgs, ServeArgs};

pub fn serve(_g: &GlobalArgs, _args: &ServeArgs) -> Result<u8> {
    bail!("`serve` is not available in this build yet")
}

pub fn bench(_g: &GlobalArgs, args: &BenchArgs) -> Result<u8> {
    super::bench::run(args)
}
