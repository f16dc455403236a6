//! The replication connection's frames: the only reader and writer of the wire format that
//! `docs/replication.md` ("Protocol") documents.
//!
//! Every frame is `len: u32 BE | kind: u8 | body: len bytes | crc: u32 BE`, the CRC-32 of
//! the kind byte and the body. Control frames carry a JSON object; data frames a few
//! big-endian fields and then raw bytes. A bad CRC, an unknown kind, a body over
//! [`MAX_BODY`] or a field that does not parse is a [`ProtoError`]: the connection is
//! closed and the replica reconnects (and proves its position again), so nothing damaged is
//! ever applied.

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version of the handshake; a peer with another is refused with a message.
pub const VERSION: u64 = 1;

/// Largest body accepted: a transaction is sent whole, so this bounds the largest
/// transaction that can be replicated.
pub const MAX_BODY: usize = 1 << 30;

/// Frames up to this size get their whole buffer at once.
const PRESIZE: usize = 32 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Welcome = 2,
    Refuse = 3,
    Status = 4,
    Txns = 5,
    Blob = 6,
    File = 7,
    FileBlob = 8,
    FileEnd = 9,
    Ack = 10,
    Ping = 11,
    Rewritten = 12,
    Fence = 13,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        use Kind::*;
        Some(match b {
            1 => Hello,
            2 => Welcome,
            3 => Refuse,
            4 => Status,
            5 => Txns,
            6 => Blob,
            7 => File,
            8 => FileBlob,
            9 => FileEnd,
            10 => Ack,
            11 => Ping,
            12 => Rewritten,
            13 => Fence,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("a frame of {0} bytes is over the limit of {MAX_BODY}")]
    TooBig(u64),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("checksum mismatch in a {0:?} frame (damaged in transit)")]
    Checksum(Kind),
    #[error("malformed {kind:?} frame: {msg}")]
    Malformed { kind: Kind, msg: String },
    #[error("unexpected {0:?} frame")]
    Unexpected(Kind),
}

/// One frame as read.
#[derive(Debug)]
pub struct Frame {
    pub kind: Kind,
    pub body: Vec<u8>,
}

fn crc(kind: Kind, parts: &[&[u8]]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(&[kind as u8]);
    for p in parts {
        c.update(p);
    }
    c.sum()
}

pub async fn write_frame<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    kind: Kind,
    parts: &[&[u8]],
) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len)
        .ok()
        .filter(|&l| l as usize <= MAX_BODY)
        .ok_or_else(|| std::io::Error::other(format!("frame of {len} bytes is too big")))?;
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&len.to_be_bytes());
    head[4] = kind as u8;
    w.write_all(&head).await?;
    for p in parts {
        w.write_all(p).await?;
    }
    w.write_all(&crc(kind, parts).to_be_bytes()).await?;
    Ok(())
}

pub async fn write_json<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    kind: Kind,
    v: &Value,
) -> std::io::Result<()> {
    write_frame(w, kind, &[v.to_string().as_bytes()]).await?;
    w.flush().await
}

pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<Frame, ProtoError> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_BODY {
        return Err(ProtoError::TooBig(len as u64));
    }
    let kind = Kind::from_u8(head[4]).ok_or(ProtoError::UnknownKind(head[4]))?;
    // Sized at once up to a data chunk's size (no copies while it grows); past that, grown
    // as bytes arrive, so a peer announcing a huge frame and sending nothing costs little.
    let mut body = Vec::with_capacity(len.min(PRESIZE));
    (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    let mut c = [0u8; 4];
    r.read_exact(&mut c).await?;
    if u32::from_be_bytes(c) != crc(kind, &[&body]) {
        return Err(ProtoError::Checksum(kind));
    }
    Ok(Frame { kind, body })
}

impl Frame {
    pub fn json(&self) -> Result<Value, ProtoError> {
        let v: Value = serde_json::from_slice(&self.body).map_err(|e| self.bad(e.to_string()))?;
        if v.is_object() {
            Ok(v)
        } else {
            Err(self.bad("not a JSON object".into()))
        }
    }

    pub fn bad(&self, msg: String) -> ProtoError {
        ProtoError::Malformed {
            kind: self.kind,
            msg,
        }
    }

    /// Split `n` leading bytes off the body.
    pub fn field<'a>(&self, rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], ProtoError> {
        if rest.len() < n {
            return Err(self.bad(format!("{} bytes where a field needs {n}", rest.len())));
        }
        let (a, b) = rest.split_at(n);
        *rest = b;
        Ok(a)
    }

    pub fn u64_field(&self, rest: &mut &[u8]) -> Result<u64, ProtoError> {
        let b = self.field(rest, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub fn b8_field(&self, rest: &mut &[u8]) -> Result<[u8; 8], ProtoError> {
        let b = self.field(rest, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(a)
    }
}

/// A blob chunk's flag: the file's last chunk.
pub const LAST_CHUNK: u8 = 1;

/// `Blob`: `oid(8) tid(8) flags(1) bytes` — one chunk of the blob file of a data record in
/// the transactions of the next `Txns` frame.
pub struct BlobChunk<'a> {
    pub oid: [u8; 8],
    pub tid: [u8; 8],
    pub last: bool,
    pub bytes: &'a [u8],
}

pub fn parse_blob(f: &Frame) -> Result<BlobChunk<'_>, ProtoError> {
    let mut rest = f.body.as_slice();
    let oid = f.b8_field(&mut rest)?;
    let tid = f.b8_field(&mut rest)?;
    let flags = f.field(&mut rest, 1)?[0];
    Ok(BlobChunk {
        oid,
        tid,
        last: flags & LAST_CHUNK != 0,
        bytes: rest,
    })
}

/// `FileBlob`: `path_len(u16) path flags(1) bytes` — a chunk of one file of the primary's
/// blob directory during a full resynchronisation (the path is relative to it).
pub struct FileBlobChunk<'a> {
    pub path: &'a str,
    pub last: bool,
    pub bytes: &'a [u8],
}

pub fn parse_file_blob(f: &Frame) -> Result<FileBlobChunk<'_>, ProtoError> {
    let mut rest = f.body.as_slice();
    let n = f.field(&mut rest, 2)?;
    let n = usize::from(u16::from_be_bytes([n[0], n[1]]));
    let path = std::str::from_utf8(f.field(&mut rest, n)?)
        .map_err(|_| f.bad("the blob path is not UTF-8".into()))?;
    // Only plain relative paths below the blob directory.
    let safe = !path.is_empty()
        && std::path::Path::new(path)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !safe {
        return Err(f.bad(format!("unsafe blob path {path:?}")));
    }
    let flags = f.field(&mut rest, 1)?[0];
    Ok(FileBlobChunk {
        path,
        last: flags & LAST_CHUNK != 0,
        bytes: rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_damage_is_caught() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Txns, &[&7u64.to_be_bytes(), b"abc"])
            .await
            .unwrap();
        write_json(&mut buf, Kind::Ping, &serde_json::json!({"end": 4}))
            .await
            .unwrap();
        let mut r = buf.as_slice();
        let f = read_frame(&mut r).await.unwrap();
        assert_eq!(f.kind, Kind::Txns);
        let mut rest = f.body.as_slice();
        assert_eq!(f.u64_field(&mut rest).unwrap(), 7);
        assert_eq!(rest, b"abc");
        assert_eq!(read_frame(&mut r).await.unwrap().json().unwrap()["end"], 4);
        // Every single-byte flip is refused (or a short read), never a panic or a frame.
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            let mut r = bad.as_slice();
            let first = read_frame(&mut r).await;
            if i < 5 + 11 + 4 {
                assert!(first.is_err(), "flip at {i} accepted");
            }
        }
    }

    #[test]
    fn blob_paths_are_confined() {
        let mk = |p: &str| {
            let mut body = (p.len() as u16).to_be_bytes().to_vec();
            body.extend_from_slice(p.as_bytes());
            body.push(1);
            Frame {
                kind: Kind::FileBlob,
                body,
            }
        };
        assert!(parse_file_blob(&mk("0x00/0x01/0x03a.blob")).is_ok());
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            assert!(parse_file_blob(&mk(bad)).is_err(), "{bad}");
        }
        let f = Frame {
            kind: Kind::Blob,
            body: vec![1, 2],
        };
        assert!(parse_blob(&f).is_err());
    }
}
