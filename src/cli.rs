//! The command line, in one place.
//!
//! Everything the user can type is declared here: `main` parses it, `app` dispatches it, and
//! the man pages and shell completions in `man/` and `completions/` are generated from these
//! same definitions (`zodbctl generate-docs`), so help, man pages and completions cannot drift.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run a whole ZODB/ZEO cluster from one binary.
///
/// zodbctl scaffolds instances, runs the embedded ZEO storage server, supervises instances
/// zdaemon-style and maintains FileStorage files. It replaces mkzeoinstance, runzeo,
/// zeoctl/zdaemon, zeopack, repozo and zeoup.
#[derive(Debug, Parser)]
#[command(
    name = "zodbctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// The instance (or cluster) directory to act on.
    ///
    /// Defaults to $ZODBCTL_INSTANCE, then to the current directory.
    #[arg(
        short = 'i',
        long = "instance",
        global = true,
        env = "ZODBCTL_INSTANCE",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub instance: Option<PathBuf>,

    /// Use this configuration file instead of the instance's own.
    ///
    /// Either zodbctl's TOML (etc/zeo.toml, etc/client.toml) or an existing ZConfig zeo.conf.
    #[arg(short = 'C', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Lay out a new server, client or cluster instance (like mkzeoinstance).
    #[command(subcommand)]
    Create(CreateCommand),

    /// Convert a ZConfig zeo.conf into zodbctl's TOML configuration.
    Import(ImportArgs),

    /// Print the effective configuration, defaults filled in, as TOML.
    Show(ShowArgs),

    /// Run the ZEO storage server in the foreground (like runzeo).
    Serve(ServeArgs),

    /// Generate load against any ZEO server and report ops/s and latencies.
    Bench(BenchArgs),

    /// Check a Data.fs for damage, as fstest does.
    Verify(VerifyArgs),

    /// Print the records of a Data.fs, as fsdump does.
    Dump(DumpArgs),

    /// Pack storages: through a ZEO server (as zeopack), or offline on a Data.fs.
    ///
    /// Without TARGET: every FileStorage of the server instance (-i, -C), through its
    /// server when it is running, offline when it is stopped. A TARGET ending in .fs (or an
    /// existing file) is packed offline (the server must be stopped). Any other TARGET is a
    /// ZEO server, HOST:PORT[:NAME] or UNIX_PATH[:NAME], zodbctl's or runzeo.
    ///
    /// Exit status: 0 on success; 1 when a pack fails (the remaining targets are not
    /// packed) or no server could be reached; servers that cannot be reached are reported
    /// and skipped, as zeopack does.
    ///
    /// Each pack that changed a file records itself in DATA_FS.pack.json beside it (for
    /// `zodbctl check`): finished (unix seconds), pack_time, bytes_before, bytes_after,
    /// records_removed, objects_removed, duration_seconds.
    Pack(PackArgs),

    /// Start the instance (or every instance of a cluster) under its manager.
    Start(StartArgs),

    /// Stop the program and its manager.
    Stop,

    /// Stop and start the program again (the manager keeps running).
    Restart,

    /// Show whether the manager and the program are running.
    ///
    /// Exit status: 0 when the manager is running, 3 when it is not.
    Status(StatusArgs),

    /// Send a signal to the program (default TERM).
    Kill(KillArgs),

    /// Wait until the program has exited.
    Wait,

    /// Run the program in the foreground, with its output on the terminal.
    Fg,

    /// Show the end of the transcript or log file.
    Logtail(LogtailArgs),

    /// Reopen the transcript and tell the program to reopen its logs (SIGUSR2).
    Logreopen,

    /// Create a server instance if DIR has none, start it, and wait until it serves.
    Up(UpArgs),

    /// Write the man pages and shell completions (for maintainers).
    #[command(hide = true)]
    GenerateDocs(GenerateDocsArgs),
}

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// A ZEO server instance: etc/zeo.toml, var/, log/, logrotate, cron, systemd and wrappers.
    Server(CreateServerArgs),
    /// A Zope/WSGI client instance of one or more ZEO servers.
    Client(CreateClientArgs),
    /// A server and N clients with consistent addresses, and cluster.toml listing them.
    Cluster(CreateClusterArgs),
}

#[derive(Debug, Args)]
pub struct CreateServerArgs {
    /// Directory of the new instance: created if missing, refused unless empty (nothing is overwritten).
    pub dir: PathBuf,
    /// Address to listen on: HOST:PORT, [V6]:PORT, PORT or a Unix socket path.
    #[arg(short, long, default_value = "127.0.0.1:8100", value_name = "ADDR")]
    pub address: String,
    /// Give file storages a blob directory (var/blobs).
    #[arg(long)]
    pub blobs: bool,
    /// A storage to serve, NAME or NAME=TYPE (TYPE is file or memory); repeatable.
    ///
    /// Without this option the instance serves one file storage named "1", like mkzeoinstance.
    #[arg(long = "storage", value_name = "NAME[=TYPE]")]
    pub storages: Vec<String>,
    /// Run the server as this user when started as root.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateClientArgs {
    /// Directory of the new instance: created if missing, refused unless empty (nothing is overwritten).
    pub dir: PathBuf,
    /// A ZEO server address, HOST:PORT or a Unix socket path; repeat for fail-over servers.
    #[arg(long = "server", required = true, value_name = "ADDR")]
    pub servers: Vec<String>,
    /// Name of the storage on the server.
    #[arg(long, default_value = "1", value_name = "NAME")]
    pub storage: String,
    /// Size of the client's ZEO cache, e.g. 128MB.
    #[arg(long, value_name = "SIZE")]
    pub cache_size: Option<String>,
    /// Program the instance runs (shell-style quoting); default `runwsgi -v etc/zope.ini`.
    #[arg(long, value_name = "CMD")]
    pub program: Option<String>,
    /// Where the Zope HTTP server listens: HOST:PORT or a Unix socket path.
    #[arg(long = "http", default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub http: String,
    /// Run the program as this user when started as root.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateClusterArgs {
    /// Directory of the new cluster: created if missing, refused unless empty.
    pub dir: PathBuf,
    /// Number of client instances.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub clients: u16,
    /// Port of the server; client N listens on BASE+N.
    #[arg(long, default_value_t = 8100, value_name = "PORT")]
    pub base_port: u16,
    /// Add a shared, non-historical "sessions" storage mounted in every client.
    #[arg(long)]
    pub sessions: bool,
    /// Give file storages a blob directory.
    #[arg(long)]
    pub blobs: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The zeo.conf to read.
    pub zeo_conf: PathBuf,
    /// Write the TOML here instead of standard output (never overwrites an existing file).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on: HOST:PORT, [V6]:PORT, PORT (all interfaces) or a Unix socket path.
    #[arg(short = 'a', long, value_name = "ADDR")]
    pub address: Option<String>,
    /// The Data.fs to serve as storage "1".
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub filename: Option<PathBuf>,
    /// Transaction timeout in seconds (fractions allowed, e.g. 2.5; more than 0): a commit
    /// that holds the lock longer is aborted and its connection closed.
    #[arg(short = 't', long, value_name = "SECONDS", value_parser = crate::zeo::config::parse_timeout, allow_negative_numbers = true)]
    pub timeout: Option<std::time::Duration>,
    /// Write the server's pid to this file.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Blob directory of the storage given with --filename.
    #[arg(long, value_name = "DIR")]
    pub blob_dir: Option<PathBuf>,
    /// Serve every storage read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Announce the msgpack encoding (M5) instead of pickle (Z5).
    #[arg(long)]
    pub msgpack: bool,
    /// Write the event log here (reopened on SIGUSR2).
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Also serve a non-historical memory storage named NAME (session data; its contents do
    /// not survive a restart); repeatable.
    #[arg(long = "memory", value_name = "NAME")]
    pub memory: Vec<String>,
    /// Network threads (each connection lives on one); default: the configuration's
    /// `threads`, else one per two CPUs, at most 8.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server: HOST:PORT or a Unix socket path.
    pub address: String,
    /// Storage name on the server.
    #[arg(long, default_value = "1", value_name = "NAME")]
    pub storage: String,
    /// Number of concurrent connections.
    #[arg(short = 'c', long, default_value_t = 4, value_name = "N")]
    pub connections: usize,
    /// Objects written in the add phase (and read afterwards).
    #[arg(short = 'n', long, default_value_t = 1000, value_name = "N")]
    pub objects: usize,
    /// Objects per transaction in the add and update phases.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub objects_per_txn: usize,
    /// Requests kept in flight per connection during read phases.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub pipeline: usize,
    /// Upper bound on the time of each phase, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub max_seconds: u64,
    /// Phases to run, in order.
    #[arg(long, value_delimiter = ',', default_values_t = [BenchPhase::Add, BenchPhase::Update, BenchPhase::ColdRead, BenchPhase::WarmRead, BenchPhase::Mixed])]
    pub phases: Vec<BenchPhase>,
    /// Print results as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchPhase {
    Add,
    Update,
    ColdRead,
    WarmRead,
    Mixed,
}

impl std::fmt::Display for BenchPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        f.write_str(&name)
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The Data.fs to check; default: every FileStorage of the server instance (-i, -C).
    pub path: Option<PathBuf>,
    /// Without PATH: only the instance's storage of this name.
    #[arg(long, value_name = "NAME", conflicts_with = "path")]
    pub storage: Option<String>,
    /// Be more verbose (-v: per transaction, -vv: per data record), as fstest.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Also check what fstest does not: record tids, previous-record and back pointers,
    /// that current objects refer only to existing objects (as fsrefs), and that
    /// Data.fs.index agrees with the file. Reports every problem, not only the first.
    #[arg(long)]
    pub deep: bool,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The Data.fs to print; default: the server instance's FileStorage (-i, -C).
    pub path: Option<PathBuf>,
    /// Without PATH: the instance's storage of this name (needed when it has several).
    #[arg(long, value_name = "NAME", conflicts_with = "path")]
    pub storage: Option<String>,
    /// Print every header field of every record instead (fsdump's `Dumper`).
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Run the manager in the foreground and exit with the program's status (for systemd).
    #[arg(long)]
    pub foreground: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print one JSON record per instance.
    #[arg(long)]
    pub json: bool,
    /// Also print the manager's raw status block (zdaemon's `status -l`).
    #[arg(short = 'l', long, conflicts_with = "json")]
    pub long: bool,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal name or number (TERM, HUP, USR2, 9, ...).
    #[arg(default_value = "TERM")]
    pub signal: String,
}

#[derive(Debug, Args)]
pub struct LogtailArgs {
    /// Keep following the file as it grows.
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub lines: usize,
    /// Show this log file instead of the transcript.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The instance directory (default: the --instance directory).
    pub dir: Option<PathBuf>,
    /// Address of the server created when DIR has no instance yet.
    #[arg(short, long, default_value = "127.0.0.1:8100", value_name = "ADDR")]
    pub address: String,
}

#[derive(Debug, Args)]
pub struct GenerateDocsArgs {
    /// The checkout's top directory; man/ and completions/ are written below it.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// A Data.fs, or ZEO servers as HOST:PORT[:NAME] or UNIX_PATH[:NAME]; default: the
    /// instance's storages.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Without TARGET: only the instance's storage of this name.
    #[arg(long, value_name = "NAME", conflicts_with = "targets")]
    pub storage: Option<String>,
    /// The storage name for servers given without :NAME (zeopack's -S; default 1).
    #[arg(short = 'S', value_name = "NAME", default_value = "1")]
    pub server_storage: String,
    /// The blob directory of a Data.fs packed offline (default: the instance's).
    #[arg(long, value_name = "DIR")]
    pub blob_dir: Option<PathBuf>,
    /// Pack to this many days before the reference time (default: the instance's
    /// pack-days, else 0).
    #[arg(short = 'd', long, value_name = "DAYS")]
    pub days: Option<f64>,
    /// The reference time: today at this local time (default: now).
    #[arg(short = 't', long, value_name = "HH[:MM[:SS]]")]
    pub time: Option<String>,
    /// Pack to exactly this time, in seconds since the epoch (UTC), instead of -t and -d.
    #[arg(long, value_name = "SECONDS", conflicts_with_all = ["time", "days"])]
    pub at: Option<f64>,
    /// Offline: pack without garbage collection (keep unreachable objects). A server packs
    /// with its own pack-gc setting.
    #[arg(long)]
    pub no_gc: bool,
    /// Offline: keep the previous file as Data.fs.old (the default, or the instance's
    /// pack-keep-old).
    #[arg(long, overrides_with = "no_keep_old")]
    pub keep_old: bool,
    /// Offline: do not keep Data.fs.old (nor the blob directory's .old).
    #[arg(long, overrides_with = "keep_old")]
    pub no_keep_old: bool,
    /// Print the results as JSON (one object per target, in an array) instead of a line each.
    #[arg(long)]
    pub json: bool,
}
