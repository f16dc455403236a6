//! A ZConfig `zeo.conf` (the file mkzeoinstance writes, read by runzeo and zeoctl) mapped onto
//! [`ServerConfig`].
//!
//! Sections understood: `<zeo>` (with `<ssl>`), `<filestorage>`, `<blobstorage>` around a
//! `<filestorage>`, `<mappingstorage>`, `<eventlog>` with one `<logfile>`, `<runner>`,
//! `<environment>`. Keys the Python tools know but zodbctl does not act on (legacy zdaemon
//! keys, log formats, `monitor-address`, ...) become [`Notice`]s naming key and line; keys
//! nobody knows and sections zodbctl cannot serve are errors, as they are for ZConfig.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::config::{
    EventLogConfig, FileStorageConfig, MemoryStorageConfig, ReplicationConfig, RunnerConfig,
    ServerConfig, StorageConfig, TlsConfig, ZeoConfig,
};
use super::error::{ConfigError, Notice};
use super::units::{CommandLine, ExitCodes, LogLevel, Seconds, Umask, parse_bool};
use super::zconfig::{self, Document, KeyValue, Section};

/// Read a zeo.conf into the model, with notices for what is read but not used.
pub fn server_from_zconfig(path: &Path) -> Result<(ServerConfig, Vec<Notice>), ConfigError> {
    let doc = zconfig::parse_file(path)?;
    server_from_document(&doc)
}

/// Map a parsed ZConfig document onto the model.
pub fn server_from_document(doc: &Document) -> Result<(ServerConfig, Vec<Notice>), ConfigError> {
    let mut m = Mapper {
        notices: Vec::new(),
    };
    let config = m.server(doc)?;
    // Reported in file order, whatever order the sections were mapped in.
    m.notices
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Ok((config, m.notices))
}

struct Mapper {
    notices: Vec<Notice>,
}

/// The server-wide keys of one `<zrs>`, with the line that set each.
struct ZrsKeys<'a> {
    replicate_to: Option<(&'a KeyValue, super::Address)>,
    keep_alive: Option<(&'a KeyValue, Seconds)>,
}

fn err_at(kv: &KeyValue, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(&kv.file, Some(kv.line), Some(&kv.key), message)
}

fn err_section(s: &Section, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(&s.file, Some(s.line), Some(&s.header()), message)
}

/// The keys of one section, checked against what it allows and for repeats.
struct Keys<'a> {
    section: &'a Section,
    by_name: HashMap<String, &'a KeyValue>,
}

impl<'a> Keys<'a> {
    fn new(section: &'a Section, allowed: &[&str]) -> Result<Keys<'a>, ConfigError> {
        let mut by_name = HashMap::new();
        for kv in &section.keys {
            let name = kv.key.to_lowercase();
            if !allowed.contains(&name.as_str()) {
                return Err(err_at(
                    kv,
                    format!(
                        "not a known key in {} (allowed: {})",
                        section.header(),
                        allowed.join(", ")
                    ),
                ));
            }
            if by_name.insert(name, kv).is_some() {
                return Err(err_at(
                    kv,
                    format!("given more than once in {}", section.header()),
                ));
            }
        }
        Ok(Keys { section, by_name })
    }

    fn get(&self, key: &str) -> Option<&'a KeyValue> {
        self.by_name.get(key).copied()
    }

    fn string(&self, key: &str) -> Option<String> {
        self.get(key).map(|kv| kv.value.clone())
    }

    fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        match self.get(key) {
            Some(kv) if kv.value.is_empty() => Err(err_at(kv, "a path is needed")),
            Some(kv) => Ok(Some(PathBuf::from(&kv.value))),
            None => Ok(None),
        }
    }

    fn required_path(&self, key: &str) -> Result<PathBuf, ConfigError> {
        self.path(key)?
            .ok_or_else(|| err_section(self.section, format!("key `{key}` is required")))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.parse(key, |v| {
            parse_bool(v).ok_or_else(|| "expected true/false, yes/no or on/off".to_owned())
        })
    }

    fn parse<T>(
        &self,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(key) {
            Some(kv) => f(&kv.value).map(Some).map_err(|m| err_at(kv, m)),
            None => Ok(None),
        }
    }
}

fn integer<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a valid integer here"))
}

impl Mapper {
    fn notice(&mut self, kv: &KeyValue, message: impl Into<String>) {
        self.notices.push(Notice {
            file: kv.file.clone(),
            line: kv.line,
            key: kv.key.clone(),
            message: message.into(),
        });
    }

    fn section_notice(&mut self, s: &Section, message: impl Into<String>) {
        self.notices.push(Notice {
            file: s.file.clone(),
            line: s.line,
            key: s.header(),
            message: message.into(),
        });
    }

    fn server(&mut self, doc: &Document) -> Result<ServerConfig, ConfigError> {
        let root = &doc.root;
        for import in &doc.imports {
            if import.package == "zc.zrs" {
                // Its <zrs> section is understood (replication, docs/replication.md).
                continue;
            }
            self.notices.push(Notice {
                file: import.file.clone(),
                line: import.line,
                key: format!("%import {}", import.package),
                message:
                    "Python schema extensions are not supported; sections they define are refused"
                        .into(),
            });
        }
        if let Some(kv) = root.keys.first() {
            return Err(err_at(
                kv,
                "keys must be inside a section (<zeo>, <filestorage NAME>, <eventlog>, <runner>, <environment>)",
            ));
        }
        let mut zeo: Option<ZeoConfig> = None;
        let mut storages = BTreeMap::new();
        let mut eventlog: Option<EventLogConfig> = None;
        let mut runner: Option<RunnerConfig> = None;
        let mut environment = BTreeMap::new();
        let mut seen_env = false;
        let mut unnamed_storage = false;
        let mut replication = ReplicationConfig::default();
        // The <zrs> that set replicate-to (and keep-alive-delay), for the "differs" errors.
        let mut replicate_to_from: Option<&KeyValue> = None;
        let mut keep_alive_from: Option<&KeyValue> = None;
        for s in &root.sections {
            match s.kind.as_str() {
                "zrs" => {
                    let (inner_name, storage, zrs) = self.zrs(s)?;
                    let name = match s.name.clone().or(inner_name) {
                        Some(n) => n,
                        None => {
                            if unnamed_storage {
                                return Err(err_section(
                                    s,
                                    "only one storage may be unnamed; name it, e.g. <zrs 2>",
                                ));
                            }
                            unnamed_storage = true;
                            "1".to_owned()
                        }
                    };
                    if let Some((kv, to)) = zrs.replicate_to {
                        match (&replication.address, replicate_to_from) {
                            (Some(prev), Some(prev_kv)) if *prev != to => {
                                return Err(err_at(
                                    kv,
                                    format!(
                                        "{to} differs from replicate-to {prev} at line {}: zodbctl serves every \
                                         replicated storage of a server on one replication address; use the same one",
                                        prev_kv.line
                                    ),
                                ));
                            }
                            _ => {
                                replication.address = Some(to);
                                replicate_to_from = Some(kv);
                            }
                        }
                    }
                    if let Some((kv, delay)) = zrs.keep_alive {
                        match keep_alive_from {
                            Some(prev) if replication.keep_alive_delay != delay => {
                                self.notice(
                                    kv,
                                    format!(
                                        "differs from keep-alive-delay at line {}; one delay serves every storage: {} is kept",
                                        prev.line, replication.keep_alive_delay
                                    ),
                                );
                            }
                            _ => {
                                replication.keep_alive_delay = delay;
                                keep_alive_from = Some(kv);
                            }
                        }
                    }
                    if storages.insert(name.clone(), storage).is_some() {
                        return Err(err_section(
                            s,
                            format!("a storage named {name:?} is already defined"),
                        ));
                    }
                }
                "zeo" => {
                    if zeo.is_some() {
                        return Err(err_section(s, "only one <zeo> section is allowed"));
                    }
                    zeo = Some(self.zeo(s)?);
                }
                "filestorage" | "blobstorage" | "mappingstorage" => {
                    let name = match &s.name {
                        Some(n) => n.clone(),
                        None => {
                            // runzeo gives the one unnamed storage the id "1".
                            if unnamed_storage {
                                return Err(err_section(
                                    s,
                                    "only one storage may be unnamed; name it, e.g. <filestorage 2>",
                                ));
                            }
                            unnamed_storage = true;
                            "1".to_owned()
                        }
                    };
                    let storage = self.storage(s)?;
                    if storages.insert(name.clone(), storage).is_some() {
                        return Err(err_section(
                            s,
                            format!("a storage named {name:?} is already defined"),
                        ));
                    }
                }
                "eventlog" => {
                    if eventlog.is_some() {
                        return Err(err_section(s, "only one <eventlog> section is allowed"));
                    }
                    eventlog = Some(self.eventlog(s)?);
                }
                "runner" => {
                    if runner.is_some() {
                        return Err(err_section(s, "only one <runner> section is allowed"));
                    }
                    runner = Some(self.runner(s)?);
                }
                "environment" => {
                    if seen_env {
                        return Err(err_section(s, "only one <environment> section is allowed"));
                    }
                    seen_env = true;
                    if let Some(sub) = s.sections.first() {
                        return Err(err_section(
                            sub,
                            "<environment> holds only NAME value lines",
                        ));
                    }
                    for kv in &s.keys {
                        if environment
                            .insert(kv.key.clone(), kv.value.clone())
                            .is_some()
                        {
                            return Err(err_at(kv, "given more than once in <environment>"));
                        }
                    }
                }
                other => {
                    return Err(err_section(
                        s,
                        format!(
                            "section type <{other}> is not supported (allowed: zeo, filestorage, blobstorage, mappingstorage, zrs, eventlog, runner, environment)"
                        ),
                    ));
                }
            }
        }
        let Some(zeo) = zeo else {
            return Err(ConfigError::invalid(
                &root.file,
                None,
                Some("<zeo>"),
                "a zeo.conf needs a <zeo> section with an address",
            ));
        };
        if storages.is_empty() {
            return Err(ConfigError::invalid(
                &root.file,
                None,
                Some("<filestorage>"),
                "a zeo.conf needs at least one storage section (<filestorage 1> with a path)",
            ));
        }
        Ok(ServerConfig {
            zeo,
            storages,
            // runzeo without <eventlog> logs to standard error.
            eventlog: eventlog.unwrap_or(EventLogConfig {
                path: PathBuf::from("STDERR"),
                level: LogLevel::Info,
            }),
            runner: runner.unwrap_or_default(),
            environment,
            backup: Default::default(),
            metrics: None,
            replication,
        })
    }

    /// zc.zrs's `<zrs>`: one file storage (plain or in a `<blobstorage>`) and where it
    /// replicates from and to. Returns the inner storage's name, the storage (with its
    /// `replicate-from`) and the server-wide keys.
    fn zrs<'s>(
        &mut self,
        s: &'s Section,
    ) -> Result<(Option<String>, StorageConfig, ZrsKeys<'s>), ConfigError> {
        let k = Keys::new(
            s,
            &[
                "replicate-from",
                "replicate-to",
                "keep-alive-delay",
                "check-checksums",
                "name",
            ],
        )?;
        let address = |kv: &KeyValue| -> Result<super::Address, ConfigError> {
            kv.value
                .parse()
                .map_err(|e: super::AddressError| err_at(kv, e.to_string()))
        };
        let replicate_from = match k.get("replicate-from") {
            Some(kv) => {
                let a = address(kv)?;
                if a.is_all_interfaces() {
                    return Err(err_at(
                        kv,
                        format!(
                            "{a} has no host: write the primary's replication address as HOST:PORT"
                        ),
                    ));
                }
                Some(a)
            }
            None => None,
        };
        let replicate_to = match s
            .keys
            .iter()
            .find(|kv| kv.key.eq_ignore_ascii_case("replicate-to"))
        {
            Some(kv) => {
                let a = address(kv)?;
                if a.is_all_interfaces() {
                    self.notice(
                        kv,
                        "kept, but note: a bare port listens on every network interface; write 127.0.0.1:PORT to listen locally",
                    );
                }
                Some((kv, a))
            }
            None => None,
        };
        let keep_alive = match s
            .keys
            .iter()
            .find(|kv| kv.key.eq_ignore_ascii_case("keep-alive-delay"))
        {
            Some(kv) => {
                let v: u64 = integer(&kv.value).map_err(|m| err_at(kv, m))?;
                if v == 0 {
                    self.notice(
                        kv,
                        "0 (zc.zrs: no heartbeats) is not supported: zodbctl always sends them, \
                         every 5 seconds by default",
                    );
                    None
                } else {
                    Some((kv, Seconds::secs(v)))
                }
            }
            None => None,
        };
        if let Some(kv) = k.get("check-checksums") {
            self.notice(
                kv,
                "ignored: zodbctl always checks every replicated transaction",
            );
        }
        if let Some(kv) = k.get("name") {
            self.notice(kv, "ignored: the storage is named by its section");
        }
        let inner: Vec<&Section> = s.sections.iter().collect();
        let (inner_name, storage) = match inner.as_slice() {
            [fs] if matches!(fs.kind.as_str(), "filestorage" | "blobstorage") => {
                (fs.name.clone(), self.storage(fs)?)
            }
            [other] if other.kind == "mappingstorage" => {
                return Err(err_section(
                    other,
                    "zodbctl replicates file storages only; serve this storage outside <zrs>",
                ));
            }
            _ => {
                return Err(err_section(
                    s,
                    "a <zrs> must hold exactly one <filestorage> (or a <blobstorage> around one)",
                ));
            }
        };
        let StorageConfig::File(mut f) = storage else {
            unreachable!("filestorage and blobstorage map to file storages")
        };
        if replicate_from.is_some() {
            self.section_notice(
                s,
                "a replica: zeo.conf has no read-only-address, so read-only clients cannot reach \
                 this storage until the server is promoted (convert with `zodbctl import` and set \
                 [zeo] read-only-address)",
            );
        }
        f.replicate_from = replicate_from;
        Ok((
            inner_name,
            StorageConfig::File(f),
            ZrsKeys {
                replicate_to,
                keep_alive,
            },
        ))
    }

    fn zeo(&mut self, s: &Section) -> Result<ZeoConfig, ConfigError> {
        let k = Keys::new(
            s,
            &[
                "address",
                "read-only",
                "invalidation-queue-size",
                "invalidation-age",
                "transaction-timeout",
                "pid-filename",
                "client-conflict-resolution",
                "msgpack",
                "monitor-address",
                "authentication-protocol",
                "authentication-database",
                "authentication-realm",
            ],
        )?;
        let address: super::Address = match k.get("address") {
            Some(kv) => kv
                .value
                .parse()
                .map_err(|e: super::AddressError| err_at(kv, e.to_string()))?,
            None => return Err(err_section(s, "key `address` is required")),
        };
        if let (Some(kv), true) = (k.get("address"), address.is_all_interfaces()) {
            self.notice(
                kv,
                "kept, but note: a bare port listens on every network interface; write 127.0.0.1:PORT to listen locally",
            );
        }
        for key in [
            "monitor-address",
            "authentication-protocol",
            "authentication-database",
            "authentication-realm",
        ] {
            if let Some(kv) = k.get(key) {
                self.notice(kv, "removed in ZEO 5; ignored");
            }
        }
        if let Some(kv) = k.get("client-conflict-resolution") {
            self.notice(
                kv,
                "ignored: zodbctl always leaves conflict resolution to the clients",
            );
        }
        let mut tls = None;
        for sub in &s.sections {
            if sub.kind != "ssl" || tls.is_some() {
                return Err(err_section(
                    sub,
                    "<zeo> allows one <ssl> subsection and nothing else",
                ));
            }
            let sk = Keys::new(
                sub,
                &["certificate", "key", "authenticate", "password-function"],
            )?;
            if let Some(kv) = sk.get("password-function") {
                self.notice(
                    kv,
                    "not used (it names Python code): convert this file with `zodbctl import` \
                     and set `key-password-file` in [zeo.tls] to a file holding the passphrase",
                );
            }
            tls = Some(TlsConfig {
                certificate: sk.required_path("certificate")?,
                key: sk.path("key")?,
                key_password_file: None,
                authenticate: sk.required_path("authenticate")?,
            });
        }
        let defaults = ZeoConfig::default();
        Ok(ZeoConfig {
            address,
            read_only: k.bool("read-only")?.unwrap_or(false),
            invalidation_queue_size: k
                .parse("invalidation-queue-size", integer)?
                .unwrap_or(defaults.invalidation_queue_size),
            invalidation_age: k.parse("invalidation-age", |v| v.parse::<Seconds>())?,
            transaction_timeout: self.transaction_timeout(&k)?,
            msgpack: k.bool("msgpack")?.unwrap_or(false),
            pid_file: k.path("pid-filename")?.unwrap_or(defaults.pid_file),
            max_frame_size: defaults.max_frame_size,
            threads: None,
            tls,
            read_only_address: None,
            admin_socket: defaults.admin_socket,
        })
    }

    /// `transaction-timeout`: runzeo's schema types it `integer` while its `-t` takes a float;
    /// zodbctl takes fractions in both places (and units, as in the TOML), noting that runzeo
    /// would refuse such a file. 0 and negative values, which runzeo accepts and which time
    /// every transaction out at once, are errors.
    fn transaction_timeout(&mut self, k: &Keys) -> Result<Option<Seconds>, ConfigError> {
        let Some(kv) = k.get("transaction-timeout") else {
            return Ok(None);
        };
        let v = kv.value.trim();
        let t = v
            .parse::<Seconds>()
            .ok()
            .filter(|t| !t.duration().is_zero() && !v.starts_with('-'))
            .ok_or_else(|| {
                err_at(
                    kv,
                    format!(
                        "{v:?} is not a transaction timeout: give a number of seconds greater \
                         than 0, such as 30 or 2.5 (leave the key out for no timeout)"
                    ),
                )
            })?;
        if v.parse::<u64>().is_err() {
            self.notice(
                kv,
                format!(
                    "read as {t} seconds; note that runzeo accepts only whole seconds here \
                     (its -t option takes fractions)"
                ),
            );
        }
        Ok(Some(t))
    }

    fn storage(&mut self, s: &Section) -> Result<StorageConfig, ConfigError> {
        match s.kind.as_str() {
            "filestorage" => self.filestorage(s, None).map(StorageConfig::File),
            "blobstorage" => {
                let k = Keys::new(s, &["blob-dir"])?;
                let blob_dir = k.required_path("blob-dir")?;
                let inner: Vec<&Section> = s.sections.iter().collect();
                match inner.as_slice() {
                    [fs] if fs.kind == "filestorage" => {
                        if fs.name.is_some() {
                            self.section_notice(fs, "the inner storage's name is not used; the <blobstorage> name is the storage id");
                        }
                        self.filestorage(fs, Some(blob_dir))
                            .map(StorageConfig::File)
                    }
                    _ => Err(err_section(
                        s,
                        "a <blobstorage> must hold exactly one <filestorage> (other base storages are not supported)",
                    )),
                }
            }
            _ => {
                let k = Keys::new(s, &[])?;
                drop(k);
                if let Some(sub) = s.sections.first() {
                    return Err(err_section(sub, "<mappingstorage> has no subsections"));
                }
                self.section_notice(
                    s,
                    "served as a memory storage: non-historical, old revisions dropped after history-seconds (300)",
                );
                Ok(StorageConfig::Memory(MemoryStorageConfig::default()))
            }
        }
    }

    fn filestorage(
        &mut self,
        s: &Section,
        outer_blob_dir: Option<PathBuf>,
    ) -> Result<FileStorageConfig, ConfigError> {
        let k = Keys::new(
            s,
            &[
                "path",
                "blob-dir",
                "create",
                "read-only",
                "quota",
                "packer",
                "pack-gc",
                "pack-keep-old",
            ],
        )?;
        if let Some(sub) = s.sections.first() {
            return Err(err_section(sub, "<filestorage> has no subsections"));
        }
        // mkzeoinstance without -b leaves `blob-dir` out; an empty value means none.
        let blob_dir = match k.get("blob-dir") {
            Some(kv) if kv.value.is_empty() => None,
            Some(kv) => {
                if outer_blob_dir.is_some() {
                    return Err(err_at(
                        kv,
                        "the <blobstorage> around this storage already sets blob-dir",
                    ));
                }
                Some(PathBuf::from(&kv.value))
            }
            None => None,
        };
        if let Some(true) = k.bool("create")? {
            if let Some(kv) = k.get("create") {
                self.notice(
                    kv,
                    "ignored: zodbctl never truncates an existing Data.fs on start",
                );
            }
        }
        if let Some(kv) = k.get("quota") {
            self.notice(kv, "not supported; the storage is not size-limited");
        }
        if let Some(kv) = k.get("packer") {
            self.notice(
                kv,
                "not supported (a Python function); zodbctl's own pack is used",
            );
        }
        Ok(FileStorageConfig {
            path: k.required_path("path")?,
            blob_dir: outer_blob_dir.or(blob_dir),
            read_only: k.bool("read-only")?.unwrap_or(false),
            pack_gc: k.bool("pack-gc")?.unwrap_or(true),
            pack_keep_old: k.bool("pack-keep-old")?.unwrap_or(true),
            pack_days: 0,
            replicate_from: None,
        })
    }

    fn eventlog(&mut self, s: &Section) -> Result<EventLogConfig, ConfigError> {
        let k = Keys::new(s, &["level", "propagate"])?;
        if let Some(kv) = k.get("propagate") {
            self.notice(kv, "ignored (there is no parent logger)");
        }
        let logger_level = k
            .parse("level", |v| v.parse::<LogLevel>())?
            .unwrap_or(LogLevel::Info);
        let mut chosen: Option<EventLogConfig> = None;
        for h in &s.sections {
            match h.kind.as_str() {
                "logfile" => {
                    let hk = Keys::new(
                        h,
                        &[
                            "path",
                            "level",
                            "format",
                            "dateformat",
                            "max-size",
                            "old-files",
                            "when",
                            "interval",
                            "encoding",
                            "delay",
                            "style",
                            "formatter",
                        ],
                    )?;
                    if chosen.is_some() {
                        self.section_notice(
                            h,
                            "only the first <logfile> is written; this one is ignored",
                        );
                        continue;
                    }
                    for key in [
                        "format",
                        "dateformat",
                        "style",
                        "formatter",
                        "encoding",
                        "delay",
                    ] {
                        if let Some(kv) = hk.get(key) {
                            self.notice(kv, "ignored: zodbctl writes its own log line format");
                        }
                    }
                    for key in ["max-size", "old-files", "when", "interval"] {
                        if let Some(kv) = hk.get(key) {
                            self.notice(kv, "ignored: rotate with logrotate and `zodbctl logreopen` (etc/logrotate.conf)");
                        }
                    }
                    let handler_level = hk.parse("level", |v| v.parse::<LogLevel>())?;
                    chosen = Some(EventLogConfig {
                        path: hk.required_path("path")?,
                        // A record must pass the logger and the handler: the stricter wins.
                        level: handler_level.map_or(logger_level, |h| h.max(logger_level)),
                    });
                }
                "syslog" | "email-notifier" | "http-logger" => {
                    self.section_notice(h, "log handler not supported; ignored");
                }
                other => {
                    return Err(err_section(
                        h,
                        format!(
                            "<{other}> is not a log handler (allowed: logfile, syslog, email-notifier, http-logger)"
                        ),
                    ));
                }
            }
        }
        Ok(chosen.unwrap_or_else(|| {
            self.section_notice(s, "no <logfile>: logging to standard error");
            EventLogConfig {
                path: PathBuf::from("STDERR"),
                level: logger_level,
            }
        }))
    }

    fn runner(&mut self, s: &Section) -> Result<RunnerConfig, ConfigError> {
        let k = Keys::new(
            s,
            &[
                "program",
                "socket-name",
                "daemon",
                "directory",
                "backoff-limit",
                "forever",
                "exit-codes",
                "start-test-program",
                "start-timeout",
                "stop-timeout",
                "user",
                "umask",
                "logfile",
                "transcript",
                "prompt",
                "python",
                "zdrun",
                "hang-around",
                "default-to-interactive",
            ],
        )?;
        for key in [
            "prompt",
            "python",
            "zdrun",
            "hang-around",
            "default-to-interactive",
        ] {
            if let Some(kv) = k.get(key) {
                self.notice(kv, "legacy zdaemon key; ignored");
            }
        }
        for sub in &s.sections {
            if sub.kind == "eventlog" {
                self.section_notice(
                    sub,
                    "the manager logs to the transcript; this <eventlog> is ignored",
                );
            } else {
                return Err(err_section(
                    sub,
                    "<runner> allows only an <eventlog> subsection",
                ));
            }
        }
        // zdaemon splits program lines on white space only (no quoting).
        let words = |v: &str| -> Result<CommandLine, String> {
            let w: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
            if w.is_empty() {
                Err("the command line is empty".into())
            } else {
                Ok(CommandLine(w))
            }
        };
        let mut program = k.parse("program", words)?;
        if let (Some(kv), Some(p)) = (k.get("program"), &program) {
            // mkzeoinstance's bin/runzeo runs `runzeo -C <this file>`: zodbctl's own server
            // on the same configuration does that job, so the default program replaces it.
            if p.words().len() == 1 && p.program().ends_with("/runzeo") {
                self.notice(
                    kv,
                    "runzeo on this configuration: replaced by `zodbctl serve` (the default program)",
                );
                program = None;
            } else {
                self.notice(
                    kv,
                    "kept: the manager runs this command instead of `zodbctl serve`",
                );
            }
        }
        let d = RunnerConfig::default();
        let backoff_limit = k.parse("backoff-limit", integer::<u32>)?;
        if let (Some(kv), Some(0)) = (k.get("backoff-limit"), backoff_limit) {
            return Err(err_at(kv, "must be at least 1 (zdaemon busy-loops with 0)"));
        }
        Ok(RunnerConfig {
            program,
            socket: k.path("socket-name")?.unwrap_or(d.socket),
            daemon: k.bool("daemon")?.unwrap_or(true),
            backoff_limit: backoff_limit.unwrap_or(d.backoff_limit),
            forever: k.bool("forever")?.unwrap_or(false),
            exit_codes: k
                .parse("exit-codes", |v| v.parse::<ExitCodes>())?
                .unwrap_or_default(),
            start_timeout: k
                .parse("start-timeout", |v| v.parse::<Seconds>())?
                .unwrap_or(d.start_timeout),
            stop_timeout: k
                .parse("stop-timeout", |v| v.parse::<Seconds>())?
                .unwrap_or(d.stop_timeout),
            directory: k.path("directory")?,
            umask: k
                .parse("umask", |v| v.parse::<Umask>())?
                .unwrap_or_default(),
            user: k.string("user").filter(|u| !u.is_empty()),
            transcript: k.path("transcript")?.unwrap_or(d.transcript),
            logfile: k.path("logfile")?,
            start_test_program: k.parse("start-test-program", words)?,
            ready_check: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<(ServerConfig, Vec<Notice>), ConfigError> {
        let doc = zconfig::parse_str(text, Path::new("zeo.conf"), &|_| None)?;
        server_from_document(&doc)
    }

    #[test]
    fn minimal() {
        let (c, n) =
            load("<zeo>\naddress 8100\n</zeo>\n<filestorage>\npath /d/Data.fs\n</filestorage>\n")
                .unwrap();
        assert!(c.zeo.address.is_all_interfaces());
        assert!(
            matches!(&c.storages["1"], StorageConfig::File(f) if f.path == Path::new("/d/Data.fs"))
        );
        assert_eq!(c.eventlog.path, Path::new("STDERR"));
        // The bare port is kept, with a note that it listens on every interface.
        assert_eq!(n.len(), 1);
        assert!(n[0].message.contains("every network interface"));
    }

    #[test]
    fn blobstorage_and_mapping() {
        let (c, n) = load(
            "<zeo>\naddress 127.0.0.1:1\n</zeo>\n<blobstorage main>\nblob-dir /b\n<filestorage>\npath /d.fs\n</filestorage>\n</blobstorage>\n<mappingstorage temp>\n</mappingstorage>\n",
        )
        .unwrap();
        assert!(
            matches!(&c.storages["main"], StorageConfig::File(f) if f.blob_dir.as_deref() == Some(Path::new("/b")))
        );
        assert!(matches!(&c.storages["temp"], StorageConfig::Memory(_)));
        assert_eq!(n.len(), 1);
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = load("<zeo>\naddress 1\nfrob 2\n</zeo>\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("zeo.conf:3: frob: not a known key in <zeo> (allowed: address"),
            "{e}"
        );
        let e = load("<zeo>\naddress x\n</zeo>\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("zeo.conf:2: address: bad address"),
            "{e}"
        );
        let e = load("<zeo>\naddress 1\n</zeo>\n<relstorage 1>\n</relstorage>\n").unwrap_err();
        assert_eq!(e.line(), Some(4));
        let e = load("<zeo>\naddress 1\n</zeo>\n<filestorage>\npath /a\n</filestorage>\n<filestorage>\npath /b\n</filestorage>\n").unwrap_err();
        assert_eq!(e.line(), Some(7));
        let e = load("<zeo>\naddress 1\n</zeo>\n<runner>\nbackoff-limit 5 # c\n</runner>\n")
            .unwrap_err();
        assert!(e.to_string().contains("backoff-limit"), "{e}");
    }

    #[test]
    fn transaction_timeout_takes_fractions_and_refuses_zero() {
        let conf = |t: &str| {
            format!(
                "<zeo>\naddress 127.0.0.1:1\ntransaction-timeout {t}\n</zeo>\n\
                 <filestorage>\npath /a\n</filestorage>\n"
            )
        };
        let (c, n) = load(&conf("30")).unwrap();
        assert_eq!(c.zeo.transaction_timeout.unwrap().duration().as_secs(), 30);
        assert!(n.is_empty());
        // runzeo's zeo.conf schema wants an integer: the fraction is read, with a note.
        let (c, n) = load(&conf("2.5")).unwrap();
        assert_eq!(
            c.zeo.transaction_timeout.unwrap().duration(),
            std::time::Duration::from_millis(2500)
        );
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].key.as_str(), n[0].line), ("transaction-timeout", 3));
        assert!(n[0].message.contains("whole seconds"), "{}", n[0].message);
        for bad in ["0", "0.0", "-5", "soon"] {
            let e = load(&conf(bad)).unwrap_err();
            assert_eq!(e.line(), Some(3), "{bad}");
            assert!(e.to_string().contains("greater than 0"), "{bad}: {e}");
        }
    }

    /// The zeo.conf plone.recipe.zeoserver writes (supervisor.md §5.2).
    #[test]
    fn plone_recipe_zeoserver() {
        let (c, n) = load(
            "%define INSTANCE /srv/parts/zeoserver\n%define DATA_DIR /srv/var/filestorage\n\n\
             <zeo>\n  address 8100\n  read-only false\n  invalidation-queue-size 100\n  \
             pid-filename /srv/var/zeoserver.pid\n</zeo>\n\n\
             <blobstorage 1>\n  blob-dir /srv/var/blobstorage\n  <filestorage 1>\n    \
             path ${DATA_DIR}/Data.fs\n  </filestorage>\n</blobstorage>\n\n\
             <eventlog>\n  level info\n  <logfile>\n    path /srv/var/log/zeoserver.log\n    \
             format %(asctime)s %(message)s\n  </logfile>\n</eventlog>\n\n\
             <runner>\n  program $INSTANCE/bin/runzeo\n  socket-name /srv/var/zeoserver.sock\n  \
             daemon true\n  forever false\n  backoff-limit 10\n  exit-codes 0, 2\n  \
             directory $INSTANCE\n  default-to-interactive true\n\n  \
             # It is used by zdctl's logtail command, zdrun/zdctl doesn't write it.\n  \
             logfile /srv/var/log/zeoserver.log\n</runner>\n",
        )
        .unwrap();
        let StorageConfig::File(f) = &c.storages["1"] else {
            panic!()
        };
        assert_eq!(f.path, Path::new("/srv/var/filestorage/Data.fs"));
        assert_eq!(
            f.blob_dir.as_deref(),
            Some(Path::new("/srv/var/blobstorage"))
        );
        assert_eq!(c.zeo.pid_file, Path::new("/srv/var/zeoserver.pid"));
        assert_eq!(c.runner.socket, Path::new("/srv/var/zeoserver.sock"));
        assert_eq!(c.runner.program, None);
        let keys: Vec<_> = n.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "address",
                "<filestorage 1>",
                "format",
                "program",
                "default-to-interactive"
            ]
        );
    }

    #[test]
    fn zc_zrs_replica_and_primary() {
        let (c, n) = load(
            "%import zc.zrs\n<zeo>\naddress 127.0.0.1:8100\n</zeo>\n\
             <zrs>\n  replicate-from primary-host:8001\n  replicate-to 8101\n  keep-alive-delay 60\n  \
             <filestorage 1>\n    path /var/Data.fs\n  </filestorage>\n</zrs>\n",
        )
        .unwrap();
        let StorageConfig::File(f) = &c.storages["1"] else {
            panic!("{c:?}")
        };
        assert_eq!(f.path, Path::new("/var/Data.fs"));
        assert_eq!(
            f.replicate_from.as_ref().unwrap().to_string(),
            "primary-host:8001"
        );
        let to = c.replication.address.as_ref().unwrap();
        assert!(to.is_all_interfaces() && to.port() == Some(8101));
        assert_eq!(c.replication.keep_alive_delay, Seconds::secs(60));
        assert!(c.problems().is_empty());
        // No note for the %import; one for the bare port, one for the missing read-only address.
        let keys: Vec<_> = n.iter().map(|n| (n.key.as_str(), n.line)).collect();
        assert_eq!(keys, [("<zrs>", 5), ("replicate-to", 7)], "{n:?}");
        assert!(n[0].message.contains("until the server is promoted"));

        // A primary: replicate-to only, around a blobstorage; named by the <zrs>.
        let (c, n) = load(
            "%import zc.zrs\n<zeo>\naddress 127.0.0.1:8100\n</zeo>\n\
             <zrs main>\n  replicate-to 127.0.0.1:8101\n  <blobstorage>\n    blob-dir /b\n    \
             <filestorage>\n      path /d.fs\n    </filestorage>\n  </blobstorage>\n</zrs>\n",
        )
        .unwrap();
        assert!(n.is_empty(), "{n:?}");
        let StorageConfig::File(f) = &c.storages["main"] else {
            panic!("{c:?}")
        };
        assert!(f.replicate_from.is_none());
        assert_eq!(f.blob_dir.as_deref(), Some(Path::new("/b")));
        assert_eq!(
            c.replication.address,
            Some(super::super::Address::localhost(8101))
        );
    }

    #[test]
    fn zc_zrs_mistakes() {
        let zeo = "<zeo>\naddress 127.0.0.1:8100\n</zeo>\n";
        let e = load(&format!(
            "{zeo}<zrs>\nreplicate-from nowhere\n<filestorage>\npath /a\n</filestorage>\n</zrs>\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("zeo.conf:5: replicate-from: bad address"),
            "{e}"
        );
        let e = load(&format!(
            "{zeo}<zrs>\n<mappingstorage 1>\n</mappingstorage>\n</zrs>\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("replicates file storages only"),
            "{e}"
        );
        let e = load(&format!("{zeo}<zrs>\nreplicate-to 1\n</zrs>\n")).unwrap_err();
        assert!(e.to_string().contains("exactly one <filestorage>"), "{e}");
        let e = load(&format!(
            "{zeo}<zrs 1>\nreplicate-to 127.0.0.1:1\n<filestorage>\npath /a\n</filestorage>\n</zrs>\n\
             <zrs 2>\nreplicate-to 127.0.0.1:2\n<filestorage>\npath /b\n</filestorage>\n</zrs>\n"
        ))
        .unwrap_err();
        assert_eq!(e.line(), Some(11), "{e}");
        assert!(e.to_string().contains("one replication address"), "{e}");
        let e = load(&format!(
            "{zeo}<zrs>\nfrob 1\n<filestorage>\npath /a\n</filestorage>\n</zrs>\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("not a known key in <zrs>"), "{e}");
    }

    #[test]
    fn legacy_keys_are_reported() {
        let (c, n) = load(
            "<zeo>\naddress 1\nmonitor-address 99\n</zeo>\n<filestorage 1>\npath /a\n</filestorage>\n<runner>\nprogram /i/bin/runzeo\npython /usr/bin/python\nexit-codes 0, 2\n</runner>\n",
        )
        .unwrap();
        assert_eq!(c.runner.program, None);
        let keys: Vec<_> = n.iter().map(|n| (n.key.as_str(), n.line)).collect();
        assert_eq!(
            keys,
            [
                ("address", 2),
                ("monitor-address", 3),
                ("program", 9),
                ("python", 10)
            ]
        );
    }
}
