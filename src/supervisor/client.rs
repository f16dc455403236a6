//! The control client: one request per connection, as zdaemon's controller does (§1.4).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::protocol::{self, InstanceStatus, ParsedStatus};

/// A healthy manager answers in microseconds; one that does not answer within this time is
/// treated as not running rather than hanging the controller.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Send `command` and return the whole reply. Any connection error means "manager not up".
pub fn request(socket: &Path, command: &str) -> io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(REPLY_TIMEOUT))?;
    s.set_write_timeout(Some(REPLY_TIMEOUT))?;
    s.write_all(command.as_bytes())?;
    s.write_all(b"\n")?;
    s.shutdown(Shutdown::Write)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// The manager's status, or `None` when no manager answers.
pub fn status(socket: &Path) -> Option<(ParsedStatus, String)> {
    let reply = request(socket, "status").ok()?;
    protocol::parse_status(&reply).map(|p| (p, reply))
}

/// The rich status record, or `None` when no manager answers.
pub fn json_status(socket: &Path) -> Option<InstanceStatus> {
    let reply = request(socket, "json").ok()?;
    serde_json::from_str(reply.trim_end()).ok()
}
