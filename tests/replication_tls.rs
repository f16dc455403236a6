//! Replication over the servers' `[zeo.tls]`: two `zodbctl serve` processes, the primary's
//! replication listener TLS with client certificates, the replica connecting with its own
//! certificate as the client's and verifying the primary's against its `authenticate`. A
//! Python ZEO client commits through the primary over TLS; the replica's Data.fs becomes
//! byte-identical. A replica whose certificate the primary does not accept, and one without
//! TLS, are refused, logged, and keep their files; the primary goes on serving.
//!
//! The certificates: the CA rig of `support::tls` (the primary's server certificate, for
//! 127.0.0.1, and the Python client's), plus self-signed certificates for the replicas. The
//! primary's `authenticate` holds the CA and the good replica's certificate (pinned); the
//! replicas' `authenticate` is the CA (the primary's certificate chains to it and names
//! 127.0.0.1, the host of `--replicate-from`).

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Serve, path_str as s};

const SCENARIOS: &str = include_str!("python/zeo_scenarios.py");

/// A self-signed certificate `NAME.pem` with its key `NAME.key` in `dir` (version 3, as
/// `openssl req -x509` writes it).
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (pem, key, subj) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("/CN={name}"),
    );
    support::tls::openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem,
            "-days", "2", "-subj", &subj,
        ],
    );
    (dir.join(pem), dir.join(key))
}

/// A server directory `dir/NAME` with `etc/zeo.toml`: a file storage `var/Data.fs`, a
/// read-only address unless it is the primary, and `[zeo.tls]` when `tls` is (certificate, key,
/// authenticate).
fn server_dir(dir: &Path, name: &str, tls: Option<(&Path, &Path, &Path)>) -> (PathBuf, PathBuf) {
    let d = dir.join(name);
    fs::create_dir_all(d.join("etc")).unwrap();
    fs::create_dir_all(d.join("var")).unwrap();
    // A replica's writable address opens only when it is promoted: its read-only address is
    // the one it listens on (and the one the test harness reads back).
    let mut toml = if name == "primary" {
        String::from("[zeo]\naddress = \"127.0.0.1:0\"\n")
    } else {
        format!(
            "[zeo]\naddress = \"127.0.0.1:{}\"\nread-only-address = \"127.0.0.1:0\"\n",
            support::free_port()
        )
    };
    if let Some((cert, key, auth)) = tls {
        toml += &format!(
            "[zeo.tls]\ncertificate = \"{}\"\nkey = \"{}\"\nauthenticate = \"{}\"\n",
            s(cert),
            s(key),
            s(auth)
        );
    }
    toml += "[storages.1]\ntype = \"file\"\npath = \"var/Data.fs\"\n\
             [eventlog]\npath = \"STDERR\"\n";
    let conf = d.join("etc/zeo.toml");
    fs::write(&conf, toml).unwrap();
    (conf, d.join("var/Data.fs"))
}

fn read(p: &Path) -> Option<Vec<u8>> {
    fs::read(p).ok()
}

/// Wait (bounded) until the replica's file is the primary's, byte for byte.
fn wait_identical(primary: &Path, replica: &Path, what: &str, logs: impl Fn() -> String) {
    let same = support::wait_until(Duration::from_secs(30), || {
        let p = read(primary);
        p.is_some() && p == read(replica)
    });
    assert!(
        same,
        "{what}: the replica's Data.fs is not the primary's ({:?} vs {:?} bytes)\n{}",
        read(primary).map(|b| b.len()),
        read(replica).map(|b| b.len()),
        logs()
    );
}

#[test]
fn replication_over_tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(certs) = support::tls::make_certs(d, None) else {
        return;
    };
    let (replica_cert, replica_key) = self_signed(d, "replica");
    let (rogue_cert, rogue_key) = self_signed(d, "rogue");
    // The primary accepts clients with a certificate of the CA, and the replica's (pinned).
    let primary_auth = d.join("primary-auth.pem");
    fs::write(
        &primary_auth,
        [
            fs::read(&certs.ca).unwrap(),
            fs::read(&replica_cert).unwrap(),
        ]
        .concat(),
    )
    .unwrap();

    let repl_port = support::free_port();
    let repl_addr = format!("127.0.0.1:{repl_port}");
    let (pconf, pfs) = server_dir(
        d,
        "primary",
        Some((&certs.server_cert, &certs.server_key, &primary_auth)),
    );
    let mut primary = Serve::in_dir(&d.join("primary"))
        .config(&pconf)
        .args(["--replicate-to", &repl_addr])
        .start();
    assert!(
        support::wait_until(Duration::from_secs(20), || primary
            .log()
            .contains("listening for replicas on")),
        "{}",
        primary.logs()
    );

    let (rconf, rfs) = server_dir(d, "replica", Some((&replica_cert, &replica_key, &certs.ca)));
    let mut replica = Serve::in_dir(&d.join("replica"))
        .config(&rconf)
        .args(["--replicate-from", &repl_addr])
        .start();

    // A Python ZEO client commits through the primary, over TLS with its certificate.
    let commit = || {
        support::python_stdout(
            SCENARIOS,
            &[
                "tls_commit",
                &primary.addr(),
                s(&certs.ca),
                s(&certs.client_cert),
                s(&certs.client_key),
            ],
        )
    };
    let out = commit();
    assert!(out.contains("OK tls_commit"), "{out}\n{}", primary.logs());
    let logs = || {
        format!(
            "--- primary\n{}\n--- replica\n{}",
            primary.logs(),
            replica.logs()
        )
    };
    wait_identical(&pfs, &rfs, "after the first commit", logs);
    let committed = read(&pfs).map_or(0, |b| b.len());
    assert!(committed > 4, "nothing committed: {committed} bytes");
    assert!(!primary.log().contains("TLS handshake with"), "{}", logs());

    // A replica whose certificate is not in the primary's `authenticate`.
    let (gconf, gfs) = server_dir(d, "rogue", Some((&rogue_cert, &rogue_key, &certs.ca)));
    let mut rogue = Serve::in_dir(&d.join("rogue"))
        .config(&gconf)
        .args(["--replicate-from", &repl_addr])
        .start();
    // And one without TLS.
    let (nconf, nfs) = server_dir(d, "plain", None);
    let mut plain = Serve::in_dir(&d.join("plain"))
        .config(&nconf)
        .args(["--replicate-from", &repl_addr])
        .start();
    let (rogue_before, plain_before) = (read(&gfs), read(&nfs));

    let refused = support::wait_until(Duration::from_secs(20), || {
        rogue
            .log()
            .contains("TLS: the primary ended the connection")
            && plain.log().contains("this replica needs [zeo.tls] too")
            && primary.log().matches("TLS handshake with").count() >= 2
    });
    let all = |rogue: &support::Server, plain: &support::Server| {
        format!(
            "--- primary\n{}\n--- rogue\n{}\n--- plain\n{}",
            primary.logs(),
            rogue.logs(),
            plain.logs()
        )
    };
    assert!(refused, "{}", all(&rogue, &plain));
    // The primary names the peer and the reason.
    let plog = primary.log();
    assert!(
        plog.contains("replication: TLS handshake with 127.0.0.1:") && plog.contains("failed"),
        "{plog}"
    );

    // The second commit reaches the good replica; the refused ones keep their files.
    let out = commit();
    assert!(out.contains("OK tls_commit"), "{out}\n{}", primary.logs());
    wait_identical(&pfs, &rfs, "after the second commit", logs);
    assert!(read(&pfs).map_or(0, |b| b.len()) > committed);
    assert_eq!(read(&gfs), rogue_before, "{}", all(&rogue, &plain));
    assert_eq!(read(&nfs), plain_before, "{}", all(&rogue, &plain));
    assert_ne!(read(&gfs), read(&pfs));

    rogue.assert_healthy("refused over TLS");
    plain.assert_healthy("refused without TLS");
    assert_eq!(rogue.terminate(), 0);
    assert_eq!(plain.terminate(), 0);
    assert_eq!(replica.terminate(), 0);
    assert_eq!(primary.terminate(), 0);
}
