//! Maps the parsed command line onto the product's modules. Each arm is one call; the work
//! lives in the module that owns it.

use anyhow::Result;

use crate::cli::{Cli, Command, CreateCommand};
use crate::{docs, instance, maintenance, supervisor, tui, zeo};

/// Run one command and return its exit status.
pub fn run(cli: Cli) -> Result<u8> {
    let g = &cli.global;
    match &cli.command {
        Command::Create(CreateCommand::Server(args)) => instance::commands::create_server(g, args),
        Command::Create(CreateCommand::Client(args)) => instance::commands::create_client(g, args),
        Command::Create(CreateCommand::Cluster(args)) => {
            instance::commands::create_cluster(g, args)
        }
        Command::Import(args) => instance::commands::import(g, args),
        Command::Show(args) => instance::commands::show(g, args),
        Command::Serve(args) => zeo::commands::serve(g, args),
        Command::Bench(args) => zeo::commands::bench(g, args),
        Command::Verify(args) => maintenance::verify::run(g, args),
        Command::Dump(args) => maintenance::dump::run(g, args),
        Command::Backup(args) => maintenance::backup::command::backup(g, args),
        Command::Restore(args) => maintenance::backup::command::restore(g, args),
        Command::Pack(args) => maintenance::pack::run(g, args),
        Command::Start(args) => supervisor::commands::start(g, args),
        Command::Stop => supervisor::commands::stop(g),
        Command::Restart => supervisor::commands::restart(g),
        Command::Status(args) => supervisor::commands::status(g, args),
        Command::Kill(args) => supervisor::commands::kill(g, args),
        Command::Wait => supervisor::commands::wait(g),
        Command::Fg => supervisor::commands::fg(g),
        Command::Logtail(args) => supervisor::commands::logtail(g, args),
        Command::Logreopen => supervisor::commands::logreopen(g),
        Command::Up(args) => supervisor::commands::up(g, args),
        Command::Top(args) => tui::run(g, args),
        Command::Check(args) => crate::metrics::check::run(g, args),
        Command::Promote(args) => crate::replication::commands::promote(g, args),
        Command::Resync(args) => crate::replication::commands::resync(g, args),
        Command::GenerateDocs(args) => docs::generate(&args.out).map(|()| 0),
        Command::Manager(_) => supervisor::commands::manager_process(),
    }
}
