# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_zodbctl_global_optspecs
    string join \n i/instance= C/config= h/help V/version
end

function __fish_zodbctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_zodbctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_zodbctl_using_subcommand
    set -l cmd (__fish_zodbctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c zodbctl -n "__fish_zodbctl_needs_command" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_needs_command" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "create" -d 'Lay out a new server, client or cluster instance (like mkzeoinstance)'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "import" -d 'Convert a ZConfig zeo.conf into zodbctl\'s TOML configuration'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "show" -d 'Print the effective configuration, defaults filled in, as TOML'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "serve" -d 'Run the ZEO storage server in the foreground (like runzeo)'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "bench" -d 'Generate load against any ZEO server and report ops/s and latencies'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "verify" -d 'Check a Data.fs for damage, as fstest does'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "dump" -d 'Print the records of a Data.fs, as fsdump does'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "backup" -d 'Back up a Data.fs and its blobs into a repozo repository (full or incremental)'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "restore" -d 'Restore a Data.fs (and its blobs) from a repozo repository'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "pack" -d 'Pack storages: through a ZEO server (as zeopack), or offline on a Data.fs'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "start" -d 'Start the instance (or every instance of a cluster) under its manager'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "stop" -d 'Stop the program and its manager'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "restart" -d 'Stop and start the program again (the manager keeps running)'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "status" -d 'Show whether the manager and the program are running'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "kill" -d 'Send a signal to the program (default TERM)'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "wait" -d 'Wait until the program has exited'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "fg" -d 'Run the program in the foreground, with its output on the terminal'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "logtail" -d 'Show the end of the transcript or log file'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "logreopen" -d 'Reopen the transcript and tell the program to reopen its logs (SIGUSR2)'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "up" -d 'Create a server instance if DIR has none, start it, and wait until it serves'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "top" -d 'Live dashboard of a cluster, an instance or any ZEO servers, with actions (like top)'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "promote" -d 'Turn this replica server into the writable primary (failover)'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "resync" -d 'Tell a running replica to discard its copy and resynchronise in full from its primary'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "check" -d 'Check the health of a ZEO server, an instance or a cluster (like zeoup and zeo-nagios)'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "generate-docs" -d 'Write the man pages and shell completions (for maintainers)'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "manager" -d 'The daemon manager of one instance, as `start` runs it (internal: its settings come from `start`; the argument only names the instance in `ps`)'
complete -c zodbctl -n "__fish_zodbctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and not __fish_seen_subcommand_from server client cluster help" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and not __fish_seen_subcommand_from server client cluster help" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and not __fish_seen_subcommand_from server client cluster help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and not __fish_seen_subcommand_from server client cluster help" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and not __fish_seen_subcommand_from server client cluster help" -f -a "server" -d 'A ZEO server instance: etc/zeo.toml, var/, log/, logrotate, cron, systemd and wrappers'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and not __fish_seen_subcommand_from server client cluster help" -f -a "client" -d 'A Zope/WSGI client instance of one or more ZEO servers'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and not __fish_seen_subcommand_from server client cluster help" -f -a "cluster" -d 'A server and N clients with consistent addresses, and cluster.toml listing them'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and not __fish_seen_subcommand_from server client cluster help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from server" -s a -l address -d 'Address to listen on: HOST:PORT, [V6]:PORT, PORT or a Unix socket path' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from server" -l storage -d 'A storage to serve, NAME or NAME=TYPE (TYPE is file or memory); repeatable' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from server" -l unix-user -d 'Run the server as this Unix user when started as root (`--user` is an old name)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from server" -l metrics -d 'Serve Prometheus metrics, /healthz and /readyz on HOST:PORT ([metrics] in zeo.toml)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from server" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from server" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from server" -l blobs -d 'Give file storages a blob directory (var/blobs)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from server" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from server" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from client" -l server -d 'A ZEO server address, HOST:PORT or a Unix socket path; repeat for fail-over servers' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from client" -l storage -d 'Name of the storage on the server' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from client" -l cache-size -d 'Size of the client\'s ZEO cache, e.g. 128MB' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from client" -l program -d 'Program the instance runs (shell-style quoting); default `runwsgi -v etc/zope.ini`' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from client" -l python -d 'The Python virtualenv Zope is installed in: the program becomes its `bin/runwsgi` (absolute) and its `bin` leads the program\'s PATH' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from client" -l admin -d 'Zope\'s first user, with the Manager role: writes `inituser`, as mkwsgiinstance -u does' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from client" -l http -d 'Where the Zope HTTP server listens: HOST:PORT or a Unix socket path' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from client" -l unix-user -d 'Run the program as this Unix user when started as root (`--user` is an old name)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from client" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from client" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from client" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from client" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from cluster" -l clients -d 'Number of client instances' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from cluster" -l base-port -d 'Port of the server; client N listens on BASE+N (the layout: see above)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from cluster" -l replicas -d 'Number of hot-standby replica servers (replica1, ...), each a byte-identical copy of the server\'s file storages, promoted with `zodbctl promote` on failover' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from cluster" -l program -d 'Program every client runs (shell-style quoting); default `runwsgi -v etc/zope.ini`' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from cluster" -l python -d 'The Python virtualenv Zope is installed in: clients run its `bin/runwsgi` (absolute) with its `bin` leading their PATH' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from cluster" -l admin -d 'Zope\'s first user, with the Manager role, in every client (writes `inituser`)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from cluster" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from cluster" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from cluster" -l sessions -d 'Add a shared, non-historical "sessions" storage mounted in every client'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from cluster" -l blobs -d 'Give file storages a blob directory'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from cluster" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from cluster" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from help" -f -a "server" -d 'A ZEO server instance: etc/zeo.toml, var/, log/, logrotate, cron, systemd and wrappers'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from help" -f -a "client" -d 'A Zope/WSGI client instance of one or more ZEO servers'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from help" -f -a "cluster" -d 'A server and N clients with consistent addresses, and cluster.toml listing them'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand create; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand import" -s o -l output -d 'Write the TOML here instead of standard output (never overwrites an existing file)' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand import" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand import" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand import" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand import" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand show" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand show" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand show" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand show" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -s a -l address -d 'Address to listen on: HOST:PORT, [V6]:PORT, PORT (all interfaces) or a Unix socket path' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -s f -l filename -d 'The Data.fs to serve as storage "1"' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -s t -l timeout -d 'Transaction timeout in seconds (fractions allowed, e.g. 2.5; more than 0): a commit that holds the lock longer is aborted and its connection closed' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l pid-file -d 'Write the server\'s pid to this file' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l blob-dir -d 'Blob directory of the storage given with --filename' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l log-file -d 'Write the event log here (reopened on SIGUSR2)' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l memory -d 'Also serve a non-historical memory storage named NAME (session data; its contents do not survive a restart); repeatable' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l metrics -d 'Serve Prometheus metrics, /healthz and /readyz over HTTP on HOST:PORT (overrides the configuration\'s [metrics] address)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l threads -d 'Network threads (each connection lives on one); default: the configuration\'s `threads`, else one per two CPUs, at most 8' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l replicate-from -d 'Serve as a hot-standby replica of the primary whose replication address is ADDR (HOST:PORT or a Unix socket path): the -f storage, or every file storage of the configuration, is kept a byte-identical copy of the primary\'s. The replica accepts no writes, and its --address opens only once it is promoted (`zodbctl promote`)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l replicate-to -d 'Let replicas of this server\'s file storages connect on ADDR (the configuration\'s [replication] address): HOST:PORT, PORT (all interfaces) or a Unix socket path' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l read-only-address -d 'Also listen on ADDR, serving every client there read-only: a replica\'s clients before promotion, or read-only clients of a primary ([zeo] read-only-address)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l replication-mode -d 'async: a commit is acknowledged once durable here; sync: only once a replica has it durable too (needs --replicate-to or [replication] address)' -r -f -a "async\t'A commit is acknowledged once durable on this server'
sync\t'A commit is acknowledged once a replica has it durable too'"
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l admin-socket -d 'The admin socket `zodbctl promote` and `zodbctl resync` talk to (default: the configuration\'s [zeo] admin-socket, var/zeo-admin.sock)' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l peer -d 'Another server\'s replication address (repeatable; added to [replication] peers): a primary asks its peers at start and then periodically whether one of them was promoted in a newer epoch, and if so stops accepting writes' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l read-only -d 'Serve every storage read-only'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l msgpack -d 'Announce the msgpack encoding (M5) instead of pickle (Z5)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -l resync -d 'On a replica: discard the local copy and resynchronise it in full from the primary on the first connection (after a refusal for divergence, once its extra transactions are to be dropped)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand serve" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand bench" -l storage -d 'Storage name on the server' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand bench" -s c -l connections -d 'Number of concurrent connections' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand bench" -s n -l objects -d 'Objects written in the add phase (and read afterwards)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand bench" -l objects-per-txn -d 'Objects per transaction in the add and update phases' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand bench" -l pipeline -d 'Requests kept in flight per connection during read phases' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand bench" -l max-seconds -d 'Upper bound on the time of each phase, in seconds' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand bench" -l phases -d 'Phases to run, in order' -r -f -a "add\t''
update\t''
cold-read\t''
warm-read\t''
mixed\t''"
complete -c zodbctl -n "__fish_zodbctl_using_subcommand bench" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand bench" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand bench" -l json -d 'Print results as JSON'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand bench" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand bench" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand verify" -l storage -d 'Without PATH: only the instance\'s storage of this name' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand verify" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand verify" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand verify" -s v -l verbose -d 'Be more verbose (-v: per transaction, -vv: per data record), as fstest'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand verify" -l deep -d 'Also check what fstest does not: record tids, previous-record and back pointers, that current objects refer only to existing objects (as fsrefs), and that Data.fs.index agrees with the file. Reports every problem, not only the first'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand verify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand verify" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand dump" -l storage -d 'Without PATH: the instance\'s storage of this name (needed when it has several)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand dump" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand dump" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand dump" -s v -l verbose -d 'Print every header field of every record instead (fsdump\'s `Dumper`)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand dump" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand dump" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -s f -l file -d 'The Data.fs to back up (with -r); default: the instance\'s file storages' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -s r -l repository -d 'The repository directory (must exist); default: the instance\'s, under its [backup] repository (created when missing)' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -l storage -d 'Only the instance\'s storage of this name' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -l keep -d 'Keep only the newest N full backups and their incrementals (0: all)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -l blob-dir -d 'The blob directory to back up with the file (default with an instance: the storage\'s, when [backup] blobs is true)' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -s F -l full -d 'Make a full backup, even when an incremental one would do'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -s Q -l quick -d 'Decide from the last .dat line only (compare the last backed-up chunk, not all); with --verify: check sizes only, not md5s'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -s z -l gzip -d 'Write gzip-compressed backup files (default with an instance: its [backup] gzip)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -l no-gzip -d 'Write plain backup files'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -s k -l kill-old-on-full -d 'After a full backup, delete the older backups (with their .dat, .index and blobs)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -l no-blobs -d 'Do not back up blobs'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -l verify -d 'Check the repository instead (repozo -V): every chain file present, sizes and md5s right (sizes only with --quick), blob files present. Exit status 1 on a problem'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -l json -d 'Print the result as JSON (one object per storage)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand backup" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restore" -s r -l repository -d 'The repository directory; default: the instance\'s' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restore" -s o -l output -d 'The file to write ("-": standard output); default: the instance\'s Data.fs' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restore" -l storage -d 'With an instance: the storage of this name' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restore" -s D -l date -d 'Restore the state as of this UTC time, yyyy-mm-dd[-hh[-mm[-ss]]] (as repozo -D)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restore" -l blob-dir -d 'Restore the blobs into this directory (default with an instance: the storage\'s)' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restore" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restore" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restore" -s w -l verify -d 'Check each backup file\'s size and md5 against the .dat while restoring (repozo -w)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restore" -l no-blobs -d 'Do not restore blobs'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restore" -s F -l full -d 'Rewrite the whole file even when an earlier restore could be extended'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restore" -l json -d 'Print the result as JSON'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restore" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restore" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand pack" -l storage -d 'Without TARGET: only the instance\'s storage of this name' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand pack" -s S -d 'The storage name for servers given without :NAME (zeopack\'s -S; default 1)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand pack" -l blob-dir -d 'The blob directory of a Data.fs packed offline (default: the instance\'s)' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand pack" -s d -l days -d 'Pack to this many days before the reference time (default: the instance\'s pack-days, else 0)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand pack" -s t -l time -d 'The reference time: today at this local time (default: now)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand pack" -l at -d 'Pack to exactly this time, in seconds since the epoch (UTC), instead of -t and -d' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand pack" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand pack" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand pack" -l no-gc -d 'Offline: pack without garbage collection (keep unreachable objects). A server packs with its own pack-gc setting'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand pack" -l keep-old -d 'Offline: keep the previous file as Data.fs.old (the default, or the instance\'s pack-keep-old)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand pack" -l no-keep-old -d 'Offline: do not keep Data.fs.old (nor the blob directory\'s .old)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand pack" -l json -d 'Print the results as JSON (one object per target, in an array) instead of a line each'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand pack" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand pack" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand start" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand start" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand start" -l foreground -d 'Run the manager in the foreground and exit with the program\'s status (for systemd)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand start" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand start" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand stop" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand stop" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand stop" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand stop" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restart" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restart" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restart" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand restart" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand status" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand status" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand status" -l json -d 'Print the status as JSON: one record for an instance, one document keyed by member name for a cluster; running servers\' records carry their figures under "server" and the status of their replicated storages under "replication"'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand status" -s l -l long -d 'Also print the manager\'s raw status block (zdaemon\'s `status -l`)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand status" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand kill" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand kill" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand kill" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand kill" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand wait" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand wait" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand wait" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand wait" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand fg" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand fg" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand fg" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand fg" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand logtail" -s n -l lines -d 'Number of lines to show (per member on a cluster)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand logtail" -s m -l member -d 'On a cluster: only this member (its name in cluster.toml); `-i DIR/MEMBER` works too' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand logtail" -l file -d 'Show this log file instead: a relative path is relative to the instance directory' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand logtail" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand logtail" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand logtail" -s f -l follow -d 'Keep following the file as it grows (on a cluster: every member\'s, each line prefixed with the member\'s name)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand logtail" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand logtail" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand logreopen" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand logreopen" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand logreopen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand logreopen" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand up" -s a -l address -d 'Address of the server created when DIR has no instance yet' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand up" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand up" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand up" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand up" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand top" -l interval -d 'Seconds between refreshes (fractions allowed)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand top" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand top" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand top" -l once -d 'Print one frame as plain text and exit (two samples, one interval apart, for rates)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand top" -l json -d 'Print the snapshot the screen is drawn from as JSON and exit'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand top" -l read-only -d 'Disable every action (start, stop, restart, logreopen, kill, pack, backup, promote)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand top" -l mouse -d 'Use the mouse: the wheel scrolls, a click selects (the terminal\'s own text selection then needs Shift)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand top" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand top" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand promote" -l storage -d 'Only this replicated storage (default: every replicated storage of the server)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand promote" -l socket -d 'The server\'s admin socket (default: the instance\'s [zeo] admin-socket)' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand promote" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand promote" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand promote" -l force -d 'Promote even when the replica is stale (behind what the primary last confirmed) or has diverged, or while the primary still streams to it; transactions it lacks are lost. A primary that still runs is told of the new epoch and stops accepting writes'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand promote" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand promote" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand resync" -l storage -d 'Only this replicated storage (default: every replicated storage of the server)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand resync" -l socket -d 'The server\'s admin socket (default: the instance\'s [zeo] admin-socket)' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand resync" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand resync" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand resync" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand resync" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -s s -l status-path -d 'With --nagios: status file for rate metrics (zeo-nagios -s)' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -s u -l time-units -d 'With --nagios: time unit of rate metrics (zeo-nagios -u)' -r -f -a "seconds\t''
minutes\t''
hours\t''
days\t''"
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -l timeout -d 'How long to wait for the server, e.g. 10s' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -l warn-disk -d 'Free space beside a Data.fs below which to warn (percent of the file system)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -l crit-disk -d 'Free space beside a Data.fs below which the check is critical' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -l warn-lock -d 'Warn when the commit lock has been held this long' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -l crit-lock -d 'Critical when the commit lock has been held this long' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -l warn-commit-age -d 'Warn when the last transaction is older than this (e.g. 1h); off by default' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -l warn-pack-age -d 'Warn when the last pack finished longer ago than this (e.g. 8d); off by default' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -l warn-backup-age -d 'Warn when the last backup finished longer ago than this (e.g. 26h); off by default' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -l warn-lag -d 'Warn when a replica lags this far behind its primary (the age of the oldest transaction it lacks)' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -l crit-lag -d 'Critical when a replica lags this far behind its primary' -r
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -l nagios -d 'Nagios plugin output: zeo-nagios\'s messages, perfdata and exit codes'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -l json -d 'Print the checks as one JSON document'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -l write -d 'Also commit a probe (a new revision of the root object, as zeoup did); a ConflictError counts as success'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -s m -l output-metrics -d 'With --nagios: output metrics (zeo-nagios -m)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand check" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand generate-docs" -l out -d 'The checkout\'s top directory; man/ and completions/ are written below it' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand generate-docs" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand generate-docs" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand generate-docs" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand generate-docs" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand manager" -s i -l instance -d 'The instance (or cluster) directory to act on' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand manager" -s C -l config -d 'Use this configuration file instead of the instance\'s own' -r -F
complete -c zodbctl -n "__fish_zodbctl_using_subcommand manager" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand manager" -s V -l version -d 'Print version'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "create" -d 'Lay out a new server, client or cluster instance (like mkzeoinstance)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "import" -d 'Convert a ZConfig zeo.conf into zodbctl\'s TOML configuration'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "show" -d 'Print the effective configuration, defaults filled in, as TOML'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "serve" -d 'Run the ZEO storage server in the foreground (like runzeo)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "bench" -d 'Generate load against any ZEO server and report ops/s and latencies'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "verify" -d 'Check a Data.fs for damage, as fstest does'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "dump" -d 'Print the records of a Data.fs, as fsdump does'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "backup" -d 'Back up a Data.fs and its blobs into a repozo repository (full or incremental)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "restore" -d 'Restore a Data.fs (and its blobs) from a repozo repository'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "pack" -d 'Pack storages: through a ZEO server (as zeopack), or offline on a Data.fs'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "start" -d 'Start the instance (or every instance of a cluster) under its manager'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "stop" -d 'Stop the program and its manager'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "restart" -d 'Stop and start the program again (the manager keeps running)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "status" -d 'Show whether the manager and the program are running'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "kill" -d 'Send a signal to the program (default TERM)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "wait" -d 'Wait until the program has exited'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "fg" -d 'Run the program in the foreground, with its output on the terminal'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "logtail" -d 'Show the end of the transcript or log file'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "logreopen" -d 'Reopen the transcript and tell the program to reopen its logs (SIGUSR2)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "up" -d 'Create a server instance if DIR has none, start it, and wait until it serves'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "top" -d 'Live dashboard of a cluster, an instance or any ZEO servers, with actions (like top)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "promote" -d 'Turn this replica server into the writable primary (failover)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "resync" -d 'Tell a running replica to discard its copy and resynchronise in full from its primary'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "check" -d 'Check the health of a ZEO server, an instance or a cluster (like zeoup and zeo-nagios)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "generate-docs" -d 'Write the man pages and shell completions (for maintainers)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "manager" -d 'The daemon manager of one instance, as `start` runs it (internal: its settings come from `start`; the argument only names the instance in `ps`)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and not __fish_seen_subcommand_from create import show serve bench verify dump backup restore pack start stop restart status kill wait fg logtail logreopen up top promote resync check generate-docs manager help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and __fish_seen_subcommand_from create" -f -a "server" -d 'A ZEO server instance: etc/zeo.toml, var/, log/, logrotate, cron, systemd and wrappers'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and __fish_seen_subcommand_from create" -f -a "client" -d 'A Zope/WSGI client instance of one or more ZEO servers'
complete -c zodbctl -n "__fish_zodbctl_using_subcommand help; and __fish_seen_subcommand_from create" -f -a "cluster" -d 'A server and N clients with consistent addresses, and cluster.toml listing them'
