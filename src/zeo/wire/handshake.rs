//! The handshake (zeo-protocol.md §1.3–§1.4): the server announces `Z5` or `M5` as its first
//! frame; the client answers with a letter and the version `5`, or with `ruok` for a status
//! document.

use super::{Encoding, WireError};

/// The only protocol version spoken (ZEO 5 and 6 clients).
pub const VERSION: &[u8] = b"5";

/// The status request of `zeo-nagios`.
pub const RUOK: &[u8] = b"ruok";

/// What a client's first frame asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientHandshake {
    /// Send the status JSON as one frame, then close.
    Ruok,
    /// Speak this encoding on the connection (the client's letter, as the reference server
    /// does, whatever was announced).
    Protocol(Encoding),
}

fn letter(enc: Encoding) -> u8 {
    match enc {
        Encoding::Pickle => b'Z',
        Encoding::Msgpack => b'M',
    }
}

/// The server's announcement frame payload: `Z5` or `M5`.
pub fn announcement(enc: Encoding) -> [u8; 2] {
    [letter(enc), VERSION[0]]
}

/// Validate the client's answer: `ruok`, or `M5`/`Z5` exactly. Anything else (another version,
/// another letter, extra bytes) is [`WireError::BadHandshake`]: the server logs and closes.
pub fn parse_client_handshake(frame: &[u8]) -> Result<ClientHandshake, WireError> {
    match frame {
        RUOK => Ok(ClientHandshake::Ruok),
        [b'Z', rest @ ..] if rest == VERSION => Ok(ClientHandshake::Protocol(Encoding::Pickle)),
        [b'M', rest @ ..] if rest == VERSION => Ok(ClientHandshake::Protocol(Encoding::Msgpack)),
        _ => Err(bad(frame)),
    }
}

/// Client side: the encoding a server announced, if it offers version 5 (or later, which the
/// client answers with 5, as ZEO's client does).
pub fn parse_server_announcement(frame: &[u8]) -> Result<Encoding, WireError> {
    let enc = match frame.first() {
        Some(b'Z') => Encoding::Pickle,
        Some(b'M') => Encoding::Msgpack,
        _ => return Err(bad(frame)),
    };
    if frame[1..].is_empty() || frame[1..] < *VERSION {
        return Err(bad(frame));
    }
    Ok(enc)
}

fn bad(frame: &[u8]) -> WireError {
    let shown: String = frame
        .iter()
        .take(40)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    WireError::BadHandshake(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_answers() {
        assert_eq!(announcement(Encoding::Msgpack), *b"M5");
        assert_eq!(announcement(Encoding::Pickle), *b"Z5");
        assert_eq!(
            parse_client_handshake(b"M5").unwrap(),
            ClientHandshake::Protocol(Encoding::Msgpack)
        );
        assert_eq!(
            parse_client_handshake(b"Z5").unwrap(),
            ClientHandshake::Protocol(Encoding::Pickle)
        );
        assert_eq!(
            parse_client_handshake(b"ruok").unwrap(),
            ClientHandshake::Ruok
        );
        for bad in [&b"M4"[..], b"M6", b"M55", b"X5", b"", b"Z"] {
            assert!(parse_client_handshake(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_announcements() {
        assert_eq!(parse_server_announcement(b"Z5").unwrap(), Encoding::Pickle);
        assert_eq!(parse_server_announcement(b"M6").unwrap(), Encoding::Msgpack);
        assert!(parse_server_announcement(b"M4").is_err());
        assert!(parse_server_announcement(b"Q5").is_err());
        assert!(parse_server_announcement(b"M").is_err());
    }
}
