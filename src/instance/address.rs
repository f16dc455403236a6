//! Network addresses as written in configuration files and on the command line.
//!
//! One syntax serves the server's `address` and the clients' `servers`, the same one ZConfig's
//! `socket-binding-address` accepts, so a value copied from a `zeo.conf` means the same here:
//!
//! | written            | meaning                                   |
//! |--------------------|-------------------------------------------|
//! | `127.0.0.1:8100`   | TCP, that host and port                   |
//! | `localhost:8100`   | TCP, resolved when used                   |
//! | `[::1]:8100`       | TCP, IPv6 literal                         |
//! | `8100` or `:8100`  | TCP, all interfaces (host is empty)       |
//! | `/srv/zeo/zeo.sock`| Unix socket (anything containing a `/`)   |

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a server listens or where a client connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// TCP. An empty `host` means every interface (only sensible for listening).
    Tcp { host: String, port: u16 },
    /// A Unix domain socket.
    Unix(PathBuf),
}

/// Why an address did not parse; the message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad address {text:?}: {reason} (expected HOST:PORT, [IPV6]:PORT, PORT or a Unix socket path containing '/')"
)]
pub struct AddressError {
    pub text: String,
    pub reason: &'static str,
}

impl Address {
    /// A TCP address on the loopback interface.
    pub fn localhost(port: u16) -> Address {
        Address::Tcp {
            host: "127.0.0.1".into(),
            port,
        }
    }

    /// True for a TCP address without a host (binds every interface).
    pub fn is_all_interfaces(&self) -> bool {
        matches!(self, Address::Tcp { host, .. } if host.is_empty())
    }

    /// The TCP port, if this is a TCP address.
    pub fn port(&self) -> Option<u16> {
        match self {
            Address::Tcp { port, .. } => Some(*port),
            Address::Unix(_) => None,
        }
    }

    /// `host:port` for `ToSocketAddrs`: an empty host becomes `0.0.0.0` (listen everywhere),
    /// an IPv6 literal gets its brackets back. `None` for a Unix socket.
    pub fn socket_addr_string(&self) -> Option<String> {
        match self {
            Address::Tcp { host, port } if host.is_empty() => Some(format!("0.0.0.0:{port}")),
            Address::Tcp { host, port } if host.contains(':') => Some(format!("[{host}]:{port}")),
            Address::Tcp { host, port } => Some(format!("{host}:{port}")),
            Address::Unix(_) => None,
        }
    }

    /// The address a local client uses to reach a server listening here: a server bound to
    /// every interface is reachable on 127.0.0.1.
    pub fn connectable(&self) -> Address {
        match self {
            Address::Tcp { host, port } if host.is_empty() || host == "0.0.0.0" => {
                Address::localhost(*port)
            }
            Address::Tcp { host, port } if host == "::" => Address::Tcp {
                host: "::1".into(),
                port: *port,
            },
            other => other.clone(),
        }
    }
}

fn parse_port(text: &str, whole: &str) -> Result<u16, AddressError> {
    let err = |reason| AddressError {
        text: whole.to_owned(),
        reason,
    };
    if text.is_empty() {
        return Err(err("the port is missing"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("the port is not a number"));
    }
    text.parse::<u16>()
        .map_err(|_| err("the port must be between 0 and 65535"))
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Address, AddressError> {
        let text = s.trim();
        let err = |reason| AddressError {
            text: s.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(err("it is empty"));
        }
        if text.contains('/') {
            if text.contains('\0') {
                return Err(err("a socket path cannot contain NUL"));
            }
            return Ok(Address::Unix(PathBuf::from(text)));
        }
        if text.chars().any(char::is_whitespace) {
            return Err(err("it contains white space"));
        }
        if let Some(rest) = text.strip_prefix('[') {
            let Some((host, port)) = rest.split_once("]:") else {
                return Err(err("an IPv6 address needs the form [ADDR]:PORT"));
            };
            if host.is_empty() || !host.contains(':') || host.parse::<std::net::Ipv6Addr>().is_err()
            {
                return Err(err("the part in brackets is not an IPv6 address"));
            }
            let port = parse_port(port, s)?;
            return Ok(Address::Tcp {
                host: host.to_owned(),
                port,
            });
        }
        match text.rsplit_once(':') {
            None => {
                if !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("a host needs a port (HOST:PORT)"));
                }
                let port = parse_port(text, s)?;
                Ok(Address::Tcp {
                    host: String::new(),
                    port,
                })
            }
            Some((host, port)) => {
                if host.contains(':') {
                    return Err(err("write IPv6 addresses in brackets, [ADDR]:PORT"));
                }
                if host.contains(['[', ']', '(', ')', ',', '@', '\'', '"']) {
                    return Err(err(
                        "the host contains a character not allowed in a host name",
                    ));
                }
                let port = parse_port(port, s)?;
                Ok(Address::Tcp {
                    host: host.to_owned(),
                    port,
                })
            }
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { host, port } if host.is_empty() => write!(f, "{port}"),
            Address::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "{host}:{port}"),
            Address::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        // A bare integer is a port, as in zeo.conf's `address 8100`.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Port(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Port(p) => u16::try_from(p)
                .map(|port| Address::Tcp {
                    host: String::new(),
                    port,
                })
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "bad address {p}: the port must be between 0 and 65535"
                    ))
                }),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tcp(host: &str, port: u16) -> Address {
        Address::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn parses_every_documented_form() {
        assert_eq!("127.0.0.1:8100".parse(), Ok(tcp("127.0.0.1", 8100)));
        assert_eq!("zeo.example.org:9".parse(), Ok(tcp("zeo.example.org", 9)));
        assert_eq!("[::1]:8100".parse(), Ok(tcp("::1", 8100)));
        assert_eq!("8100".parse(), Ok(tcp("", 8100)));
        assert_eq!(":8100".parse(), Ok(tcp("", 8100)));
        assert_eq!(
            "/srv/zeo/var/zeo.sock".parse(),
            Ok(Address::Unix("/srv/zeo/var/zeo.sock".into()))
        );
        assert_eq!(
            "var/zeo.sock".parse(),
            Ok(Address::Unix("var/zeo.sock".into()))
        );
    }

    #[test]
    fn rejects_with_a_reason() {
        for bad in [
            "",
            "bad",
            "host:",
            "host:port",
            "host:70000",
            "::1:8100",
            "[::1]8100",
            "[x]:1",
            "a b:1",
            "-1",
        ] {
            let e = bad.parse::<Address>().unwrap_err();
            assert!(e.to_string().contains("expected HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn all_interfaces_connect_on_loopback() {
        assert!(tcp("", 1).is_all_interfaces());
        assert_eq!(tcp("", 8100).connectable(), tcp("127.0.0.1", 8100));
        assert_eq!(tcp("", 8100).socket_addr_string().unwrap(), "0.0.0.0:8100");
        assert_eq!(tcp("::1", 5).socket_addr_string().unwrap(), "[::1]:5");
    }

    fn any_address() -> impl Strategy<Value = Address> {
        prop_oneof![
            ("[a-z][a-z0-9.-]{0,20}", any::<u16>()).prop_map(|(h, p)| tcp(&h, p)),
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, p)| tcp(&std::net::Ipv4Addr::from(ip).to_string(), p)),
            (any::<[u16; 8]>(), any::<u16>())
                .prop_map(|(ip, p)| tcp(&std::net::Ipv6Addr::from(ip).to_string(), p)),
            any::<u16>().prop_map(|p| tcp("", p)),
            "(/[a-zA-Z0-9._-]{1,12}){1,4}".prop_map(|p| Address::Unix(p.into())),
        ]
    }

    proptest! {
        #[test]
        fn display_parses_back(a in any_address()) {
            prop_assert_eq!(a.to_string().parse::<Address>(), Ok(a));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Address>();
        }
    }
}
