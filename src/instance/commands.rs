//! `create`, `import`, `show`.

use anyhow::{Result, bail};

use crate::cli::{
    CreateClientArgs, CreateClusterArgs, CreateServerArgs, GlobalArgs, ImportArgs, ShowArgs,
};

pub fn create_server(_g: &GlobalArgs, _args: &CreateServerArgs) -> Result<u8> {
    bail!("`create server` is not available in this build yet")
}

pub fn create_client(_g: &GlobalArgs, _args: &CreateClientArgs) -> Result<u8> {
    bail!("`create client` is not available in this build yet")
}

pub fn create_cluster(_g: &GlobalArgs, _args: &CreateClusterArgs) -> Result<u8> {
    bail!("`create cluster` is not available in this build yet")
}

pub fn import(_g: &GlobalArgs, _args: &ImportArgs) -> Result<u8> {
    bail!("`import` is not available in this build yet")
}

pub fn show(_g: &GlobalArgs, _args: &ShowArgs) -> Result<u8> {
    bail!("`show` is not available in this build yet")
}
