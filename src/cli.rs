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
/// zdaemon-style, packs, backs up and checks storages, and shows a cluster live (`top`). It
/// replaces mkzeoinstance, runzeo, zeoctl/zdaemon, zeopack (`pack`), repozo (`backup`,
/// `restore`) and zeoup/zeo-nagios (`check`).
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

    /// Back up a Data.fs and its blobs into a repozo repository (full or incremental).
    ///
    /// The repository is byte for byte repozo's (repozo restores and verifies it); blob
    /// revisions go beside it. With an instance (-i), every file storage is backed up into
    /// `<[backup] repository>/<storage name>` with the instance's [backup] settings; with
    /// -f and -r, options are repozo's. `--verify` checks a repository instead (repozo -V).
    Backup(BackupArgs),

    /// Restore a Data.fs (and its blobs) from a repozo repository.
    ///
    /// Picks the restore point as repozo does (the newest full backup not after --date and
    /// its incrementals), writes OUTPUT.part and renames it, copies the .index. When OUTPUT
    /// already holds an earlier restore of the same chain (checked against the .dat md5s),
    /// only the missing increments are appended. With an instance (-i), restores into its
    /// storage, refusing while the server runs.
    Restore(RestoreArgs),

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
    /// For a running server with replicated storages, one line per storage tells its
    /// replication: role, primary or replicas, phase, in sync or not, lag, epoch (read from
    /// the server's admin socket; nothing when it does not answer).
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

    /// Live dashboard of a cluster, an instance or any ZEO servers, with actions (like top).
    ///
    /// Shows every instance (state, readiness, pid, uptime, restarts, CPU, memory), the
    /// storages of the selected server (size, last transaction, commits/s and loads/s with
    /// sparklines, connections, commit lock, and the role and lag of replicated storages) and
    /// its log. Actions on the selected instance run the same code as start, stop, restart,
    /// logreopen and kill, on a server's file storages as pack and backup (their progress in
    /// the status line), and promote a server's replica storages (O); destructive ones ask
    /// first. Press ? for the keys. Colours are off when NO_COLOR is set.
    Top(TopArgs),

    /// Turn this replica server into the writable primary (failover).
    ///
    /// The running server (-i/-C: its [zeo] admin-socket, or --socket) stops replicating,
    /// checks that its copy is current and has not diverged from the primary's (refusing
    /// otherwise unless --force), and opens its writable address: clients that fell back
    /// to read-only connections upgrade to it, and plain clients connect to it. Stop the
    /// old primary first (or make sure it is gone): two writable primaries diverge.
    ///
    /// Exit status: 0 when promoted; 1 when the server refuses (the message says why and
    /// what to do); 2 on a usage error.
    Promote(PromoteArgs),

    /// Tell a running replica to discard its copy and resynchronise in full from its
    /// primary.
    ///
    /// For a replica that refused to follow its primary because it has transactions the
    /// primary lacks (divergence, e.g. a former primary brought back as a replica), once
    /// the operator has decided that those transactions are to be dropped. The copy is
    /// replaced only when the new one is complete.
    ///
    /// Exit status: 0 when the server accepted; 1 when it refuses; 2 on a usage error.
    Resync(ResyncArgs),

    /// Check the health of a ZEO server, an instance or a cluster (like zeoup and zeo-nagios).
    ///
    /// With ADDR[:NAME], check any ZEO server (runzeo included): connect, register read-only,
    /// read the last transaction and load the root. Without it, check every instance of the
    /// cluster (or the one instance): manager and program, the server answering, each
    /// storage's last transaction, disk space beside each Data.fs, the commit lock, the age
    /// of the last pack and backup, and the replication of replicated storages (a replica cut
    /// off from or refused by its primary, or fenced, is critical; a replica lagging behind
    /// warns or is critical by --warn-lag/--crit-lag; a sync primary that degraded to async
    /// warns).
    ///
    /// Exit status, as a Nagios plugin: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Check(CheckArgs),

    /// Write the man pages and shell completions (for maintainers).
    #[command(hide = true)]
    GenerateDocs(GenerateDocsArgs),

    /// The daemon manager of one instance, as `start` runs it (internal: its settings come
    /// from `start`; the argument only names the instance in `ps`).
    #[command(hide = true)]
    Manager(ManagerArgs),
}

#[derive(Debug, Args)]
pub struct ManagerArgs {
    /// The instance directory, shown in the process list.
    #[arg(value_name = "DIR")]
    pub label: String,
}

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// A ZEO server instance: etc/zeo.toml, var/, log/, logrotate, cron, systemd and wrappers.
    Server(CreateServerArgs),
    /// A Zope/WSGI client instance of one or more ZEO servers.
    Client(CreateClientArgs),
    /// A server and N clients with consistent addresses, and cluster.toml listing them.
    ///
    /// Port layout, from BASE (--base-port, default 8100), all on 127.0.0.1:
    ///
    /// * BASE: the server's ZEO address; BASE-1: its metrics endpoint.
    ///
    /// * BASE+1 ... BASE+C: the HTTP addresses of client1 ... clientC.
    ///
    /// * With --replicas R, from P = BASE+C+1: the server's replication address is P, and
    ///   replicaK takes the next four ports, P+4K-3 (its ZEO address, open once promoted),
    ///   P+4K-2 (its read-only address), P+4K-1 (its replication address) and P+4K (its
    ///   metrics). With 1 client and 1 replica: server 8100, client1 8101, replication
    ///   8102, replica1 8103/8104/8105/8106.
    ///
    /// cluster.toml starts the server first, then the replicas, then the clients.
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
    /// Run the server as this Unix user when started as root (`--user` is an old name).
    #[arg(long = "unix-user", alias = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Serve Prometheus metrics, /healthz and /readyz on HOST:PORT ([metrics] in zeo.toml).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,
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
    /// The Python virtualenv Zope is installed in: the program becomes its `bin/runwsgi`
    /// (absolute) and its `bin` leads the program's PATH.
    #[arg(long, value_name = "VENV")]
    pub python: Option<PathBuf>,
    /// Zope's first user, with the Manager role: writes `inituser`, as mkwsgiinstance -u does.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub admin: Option<String>,
    /// Where the Zope HTTP server listens: HOST:PORT or a Unix socket path.
    #[arg(long = "http", default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub http: String,
    /// Run the program as this Unix user when started as root (`--user` is an old name).
    #[arg(long = "unix-user", alias = "user", value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateClusterArgs {
    /// Directory of the new cluster: created if missing, refused unless empty.
    pub dir: PathBuf,
    /// Number of client instances.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub clients: u16,
    /// Port of the server; client N listens on BASE+N (the layout: see above).
    #[arg(long, default_value_t = 8100, value_name = "PORT")]
    pub base_port: u16,
    /// Number of hot-standby replica servers (replica1, ...), each a byte-identical copy of
    /// the server's file storages, promoted with `zodbctl promote` on failover.
    ///
    /// With replicas, the server replicates synchronously (mode = "sync", degrading to
    /// asynchronous when no replica answers within 2 s), and every client lists all
    /// servers with read-only-fallback, so that the site keeps serving reads during a
    /// failover.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub replicas: u16,
    /// Add a shared, non-historical "sessions" storage mounted in every client.
    #[arg(long)]
    pub sessions: bool,
    /// Give file storages a blob directory.
    #[arg(long)]
    pub blobs: bool,
    /// Program every client runs (shell-style quoting); default `runwsgi -v etc/zope.ini`.
    #[arg(long, value_name = "CMD")]
    pub program: Option<String>,
    /// The Python virtualenv Zope is installed in: clients run its `bin/runwsgi` (absolute)
    /// with its `bin` leading their PATH.
    #[arg(long, value_name = "VENV")]
    pub python: Option<PathBuf>,
    /// Zope's first user, with the Manager role, in every client (writes `inituser`).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub admin: Option<String>,
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
    /// Serve Prometheus metrics, /healthz and /readyz over HTTP on HOST:PORT (overrides the
    /// configuration's [metrics] address).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,
    /// Network threads (each connection lives on one); default: the configuration's
    /// `threads`, else one per two CPUs, at most 8.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,
    /// Serve as a hot-standby replica of the primary whose replication address is ADDR
    /// (HOST:PORT or a Unix socket path): the -f storage, or every file storage of the
    /// configuration, is kept a byte-identical copy of the primary's. The replica accepts
    /// no writes, and its --address opens only once it is promoted (`zodbctl promote`).
    #[arg(long, value_name = "ADDR")]
    pub replicate_from: Option<String>,
    /// Let replicas of this server's file storages connect on ADDR (the configuration's
    /// [replication] address): HOST:PORT, PORT (all interfaces) or a Unix socket path.
    #[arg(long, value_name = "ADDR")]
    pub replicate_to: Option<String>,
    /// Also listen on ADDR, serving every client there read-only: a replica's clients
    /// before promotion, or read-only clients of a primary ([zeo] read-only-address).
    #[arg(long, value_name = "ADDR")]
    pub read_only_address: Option<String>,
    /// async: a commit is acknowledged once durable here; sync: only once a replica has it
    /// durable too (needs --replicate-to or [replication] address).
    #[arg(long, value_enum, value_name = "MODE")]
    pub replication_mode: Option<ReplicationModeArg>,
    /// The admin socket `zodbctl promote` and `zodbctl resync` talk to (default: the
    /// configuration's [zeo] admin-socket, var/zeo-admin.sock).
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// On a replica: discard the local copy and resynchronise it in full from the primary
    /// on the first connection (after a refusal for divergence, once its extra
    /// transactions are to be dropped).
    #[arg(long)]
    pub resync: bool,
    /// Another server's replication address (repeatable; added to [replication] peers):
    /// a primary asks its peers at start and then periodically whether one of them was
    /// promoted in a newer epoch, and if so stops accepting writes.
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<String>,
}

/// `serve --replication-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplicationModeArg {
    /// A commit is acknowledged once durable on this server.
    Async,
    /// A commit is acknowledged once a replica has it durable too.
    Sync,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Only this replicated storage (default: every replicated storage of the server).
    #[arg(long, value_name = "NAME")]
    pub storage: Option<String>,
    /// Promote even when the replica is stale (behind what the primary last confirmed)
    /// or has diverged, or while the primary still streams to it; transactions it lacks are
    /// lost. A primary that still runs is told of the new epoch and stops accepting writes.
    #[arg(long)]
    pub force: bool,
    /// The server's admin socket (default: the instance's [zeo] admin-socket).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ResyncArgs {
    /// Only this replicated storage (default: every replicated storage of the server).
    #[arg(long, value_name = "NAME")]
    pub storage: Option<String>,
    /// The server's admin socket (default: the instance's [zeo] admin-socket).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
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
pub struct BackupArgs {
    /// The Data.fs to back up (with -r); default: the instance's file storages.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "PATH",
        requires = "repository"
    )]
    pub file: Option<PathBuf>,
    /// The repository directory (must exist); default: the instance's, under its
    /// [backup] repository (created when missing).
    #[arg(short = 'r', long, value_name = "DIR")]
    pub repository: Option<PathBuf>,
    /// Only the instance's storage of this name.
    #[arg(long, value_name = "NAME", conflicts_with = "file")]
    pub storage: Option<String>,
    /// Make a full backup, even when an incremental one would do.
    #[arg(short = 'F', long)]
    pub full: bool,
    /// Decide from the last .dat line only (compare the last backed-up chunk, not all);
    /// with --verify: check sizes only, not md5s.
    #[arg(short = 'Q', long)]
    pub quick: bool,
    /// Write gzip-compressed backup files (default with an instance: its [backup] gzip).
    #[arg(short = 'z', long, overrides_with = "no_gzip")]
    pub gzip: bool,
    /// Write plain backup files.
    #[arg(long)]
    pub no_gzip: bool,
    /// After a full backup, delete the older backups (with their .dat, .index and blobs).
    #[arg(short = 'k', long)]
    pub kill_old_on_full: bool,
    /// Keep only the newest N full backups and their incrementals (0: all).
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// The blob directory to back up with the file (default with an instance: the
    /// storage's, when [backup] blobs is true).
    #[arg(long, value_name = "DIR")]
    pub blob_dir: Option<PathBuf>,
    /// Do not back up blobs.
    #[arg(long, conflicts_with = "blob_dir")]
    pub no_blobs: bool,
    /// Check the repository instead (repozo -V): every chain file present, sizes and md5s
    /// right (sizes only with --quick), blob files present. Exit status 1 on a problem.
    #[arg(long)]
    pub verify: bool,
    /// Print the result as JSON (one object per storage).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The repository directory; default: the instance's.
    #[arg(short = 'r', long, value_name = "DIR")]
    pub repository: Option<PathBuf>,
    /// The file to write ("-": standard output); default: the instance's Data.fs.
    #[arg(short = 'o', long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// With an instance: the storage of this name.
    #[arg(long, value_name = "NAME")]
    pub storage: Option<String>,
    /// Restore the state as of this UTC time, yyyy-mm-dd[-hh[-mm[-ss]]] (as repozo -D).
    #[arg(short = 'D', long, value_name = "DATE")]
    pub date: Option<String>,
    /// Check each backup file's size and md5 against the .dat while restoring (repozo -w).
    #[arg(short = 'w', long)]
    pub verify: bool,
    /// Restore the blobs into this directory (default with an instance: the storage's).
    #[arg(long, value_name = "DIR")]
    pub blob_dir: Option<PathBuf>,
    /// Do not restore blobs.
    #[arg(long, conflicts_with = "blob_dir")]
    pub no_blobs: bool,
    /// Rewrite the whole file even when an earlier restore could be extended.
    #[arg(short = 'F', long)]
    pub full: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Run the manager in the foreground and exit with the program's status (for systemd).
    #[arg(long)]
    pub foreground: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status as JSON: one record for an instance, one document keyed by member
    /// name for a cluster; running servers' records carry their figures under "server" and
    /// the status of their replicated storages under "replication".
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
    /// Keep following the file as it grows (on a cluster: every member's, each line
    /// prefixed with the member's name).
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show (per member on a cluster).
    #[arg(short = 'n', long, default_value_t = 20)]
    pub lines: usize,
    /// On a cluster: only this member (its name in cluster.toml); `-i DIR/MEMBER` works too.
    #[arg(short = 'm', long, value_name = "NAME")]
    pub member: Option<String>,
    /// Show this log file instead: a relative path is relative to the instance directory.
    ///
    /// By default a server shows its ZEO event log (log/zeo.log), a client its transcript;
    /// `[runner] logfile` chooses another.
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
pub struct TopArgs {
    /// ZEO servers to watch instead of an instance: HOST:PORT, [V6]:PORT or a Unix socket
    /// path; any ZEO 5 server, runzeo included (read with the ruok status request).
    #[arg(value_name = "ADDR")]
    pub addresses: Vec<String>,
    /// Seconds between refreshes (fractions allowed).
    #[arg(long, default_value = "1", value_name = "SECONDS", value_parser = parse_interval)]
    pub interval: std::time::Duration,
    /// Print one frame as plain text and exit (two samples, one interval apart, for rates).
    #[arg(long)]
    pub once: bool,
    /// Print the snapshot the screen is drawn from as JSON and exit.
    #[arg(long, conflicts_with = "once")]
    pub json: bool,
    /// Disable every action (start, stop, restart, logreopen, kill, pack, backup, promote).
    #[arg(long)]
    pub read_only: bool,
    /// Use the mouse: the wheel scrolls, a click selects (the terminal's own text selection
    /// then needs Shift).
    #[arg(long)]
    pub mouse: bool,
}

/// A refresh interval: seconds, at least 0.1, at most an hour.
fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let bad =
        || "the interval is a number of seconds from 0.1 to 3600, such as 1 or 0.5".to_string();
    let v: f64 = s.trim().parse().map_err(|_| bad())?;
    if !(0.1..=3600.0).contains(&v) {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(v))
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

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A ZEO server: HOST:PORT, [V6]:PORT or a Unix socket path, optionally followed by
    /// :NAME for the storage (default "1"; with --nagios, every storage).
    #[arg(value_name = "ADDR[:NAME]")]
    pub target: Option<String>,
    /// Nagios plugin output: zeo-nagios's messages, perfdata and exit codes.
    #[arg(long)]
    pub nagios: bool,
    /// Print the checks as one JSON document.
    #[arg(long, conflicts_with = "nagios")]
    pub json: bool,
    /// Also commit a probe (a new revision of the root object, as zeoup did); a
    /// ConflictError counts as success.
    #[arg(long)]
    pub write: bool,
    /// With --nagios: output metrics (zeo-nagios -m).
    #[arg(short = 'm', long = "output-metrics")]
    pub output_metrics: bool,
    /// With --nagios: status file for rate metrics (zeo-nagios -s).
    #[arg(short = 's', long = "status-path", value_name = "PATH")]
    pub status_path: Option<PathBuf>,
    /// With --nagios: time unit of rate metrics (zeo-nagios -u).
    #[arg(short = 'u', long = "time-units", value_enum, default_value_t = TimeUnit::Minutes)]
    pub time_units: TimeUnit,
    /// How long to wait for the server, e.g. 10s.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Free space beside a Data.fs below which to warn (percent of the file system).
    #[arg(long, default_value = "10%", value_name = "PERCENT", value_parser = parse_percent)]
    pub warn_disk: f64,
    /// Free space beside a Data.fs below which the check is critical.
    #[arg(long, default_value = "5%", value_name = "PERCENT", value_parser = parse_percent)]
    pub crit_disk: f64,
    /// Warn when the commit lock has been held this long.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub warn_lock: std::time::Duration,
    /// Critical when the commit lock has been held this long.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub crit_lock: std::time::Duration,
    /// Warn when the last transaction is older than this (e.g. 1h); off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub warn_commit_age: Option<std::time::Duration>,
    /// Warn when the last pack finished longer ago than this (e.g. 8d); off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub warn_pack_age: Option<std::time::Duration>,
    /// Warn when the last backup finished longer ago than this (e.g. 26h); off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub warn_backup_age: Option<std::time::Duration>,
    /// Warn when a replica lags this far behind its primary (the age of the oldest
    /// transaction it lacks).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    pub warn_lag: std::time::Duration,
    /// Critical when a replica lags this far behind its primary.
    #[arg(long, default_value = "300s", value_name = "DURATION", value_parser = parse_duration)]
    pub crit_lag: std::time::Duration,
}

/// zeo-nagios's `-u` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TimeUnit {
    Seconds,
    Minutes,
    Hours,
    Days,
}

impl TimeUnit {
    pub fn seconds(self) -> f64 {
        match self {
            TimeUnit::Seconds => 1.0,
            TimeUnit::Minutes => 60.0,
            TimeUnit::Hours => 3600.0,
            TimeUnit::Days => 86400.0,
        }
    }
}

/// `30s`, `5m`, `2h`, `7d`, `250ms` or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let mult = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => {
            return Err(format!(
                "{s:?}: use a number with s, m, h, d or ms, e.g. 30s"
            ));
        }
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: use a number with s, m, h, d or ms, e.g. 30s"))?;
    std::time::Duration::try_from_secs_f64(v * mult)
        .map_err(|_| format!("{s:?}: not a usable duration"))
}

/// `10%` or `10` (percent).
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?}: give a percentage such as 10%"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?}: a percentage is between 0 and 100"))
    }
}
