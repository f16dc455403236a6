use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = zodbctl::cli::Cli::parse();
    zodbctl::logging::init_stderr();
    match zodbctl::app::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("zodbctl: error: {err:#}");
            ExitCode::from(zodbctl::error::exit_code(&err))
        }
    }
}
