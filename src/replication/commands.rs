//! `zodbctl promote` and `zodbctl resync`: requests to a running server's admin socket
//! (see [`super::admin`] for the protocol).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde_json::{Value, json};

use super::admin::{self, AdminError};
use crate::cli::{GlobalArgs, PromoteArgs, ResyncArgs};
use crate::error::usage;

/// How long a promotion or a resynchronisation request may take to be answered.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `zodbctl promote`: make this replica server the writable primary.
pub fn promote(g: &GlobalArgs, args: &PromoteArgs) -> Result<u8> {
    let socket = admin_socket(g, args.socket.as_ref())?;
    let req = json!({"cmd": "promote", "storage": args.storage, "force": args.force});
    send(&socket, &req)
}

/// `zodbctl resync`: make a running replica resynchronise in full from its primary.
pub fn resync(g: &GlobalArgs, args: &ResyncArgs) -> Result<u8> {
    let socket = admin_socket(g, args.socket.as_ref())?;
    let req = json!({"cmd": "resync", "storage": args.storage});
    send(&socket, &req)
}

fn send(socket: &std::path::Path, req: &Value) -> Result<u8> {
    match admin::call(socket, req, TIMEOUT) {
        Ok(answer) => {
            match answer["message"].as_str() {
                Some(m) => println!("{m}"),
                None => println!("done"),
            }
            Ok(0)
        }
        // The server's words say what to do; exit status 1.
        Err(AdminError::Refused(msg)) => Err(anyhow!(msg)),
        // Its message already says the cause (not repeated by the error chain).
        Err(e) => Err(anyhow!(e.to_string())),
    }
}

/// `--socket`, else the `[zeo] admin-socket` of the server instance that -C/-i/
/// $ZODBCTL_INSTANCE/the current directory names, resolved against it.
fn admin_socket(g: &GlobalArgs, socket: Option<&PathBuf>) -> Result<PathBuf> {
    if let Some(s) = socket {
        return Ok(s.clone());
    }
    let inst =
        crate::instance::locate(g).map_err(|e| usage(anyhow!("{e}; or give --socket PATH")))?;
    let Some(server) = inst.server() else {
        return Err(usage(anyhow!(
            "{} is a {} configuration; name the server instance with -i DIR (e.g. a cluster's replica1), or give --socket PATH",
            inst.file.display(),
            inst.config.kind_name()
        )));
    };
    Ok(inst.resolve(&server.zeo.admin_socket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// A one-shot admin socket answering `answer`; returns the request it got.
    fn serve_once(path: PathBuf, answer: &'static str) -> std::thread::JoinHandle<String> {
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            s.write_all(answer.as_bytes()).unwrap();
            line
        })
    }

    #[test]
    fn promote_sends_the_request_and_reports_a_refusal() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("a.sock");
        let g = GlobalArgs::default();
        let t = serve_once(sock.clone(), "{\"ok\": true, \"message\": \"promoted\"}\n");
        let args = PromoteArgs {
            storage: Some("1".into()),
            force: true,
            socket: Some(sock.clone()),
        };
        assert_eq!(promote(&g, &args).unwrap(), 0);
        let req: Value = serde_json::from_str(&t.join().unwrap()).unwrap();
        assert_eq!(
            req,
            json!({"cmd": "promote", "storage": "1", "force": true})
        );

        std::fs::remove_file(&sock).unwrap();
        let t = serve_once(
            sock.clone(),
            "{\"ok\": false, \"error\": \"stale: use --force\"}\n",
        );
        let args = ResyncArgs {
            storage: None,
            socket: Some(sock),
        };
        let e = resync(&g, &args).unwrap_err();
        assert_eq!(e.to_string(), "stale: use --force");
        assert_eq!(crate::error::exit_code(&e), 1);
        let req: Value = serde_json::from_str(&t.join().unwrap()).unwrap();
        assert_eq!(req, json!({"cmd": "resync", "storage": null}));
    }

    #[test]
    fn the_socket_comes_from_the_instance() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("etc")).unwrap();
        std::fs::write(
            tmp.path().join("etc/zeo.toml"),
            "[zeo]\nadmin-socket = \"run/admin.sock\"\n",
        )
        .unwrap();
        let g = GlobalArgs {
            instance: Some(tmp.path().to_path_buf()),
            config: None,
        };
        assert_eq!(
            admin_socket(&g, None).unwrap(),
            tmp.path().join("run/admin.sock")
        );
        let e = promote(
            &g,
            &PromoteArgs {
                storage: None,
                force: false,
                socket: None,
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot reach the server's admin socket"),
            "{e}"
        );
        assert_eq!(crate::error::exit_code(&e), 1);
    }
}
