//! Sized-message framing (`ZEO.asyncio.smp`, zeo-protocol.md §1.2): every message in both
//! directions is a `u32` big-endian length followed by that many payload bytes.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::WireError;

/// Default bound on an incoming frame: large object records travel in one frame (blobs are
/// chunked), so the bound is generous, but a hostile length prefix must not make us allocate.
pub const DEFAULT_MAX_FRAME: usize = 256 * 1024 * 1024;

/// Buffer growth step while a frame's bytes arrive: a peer that announces a large frame and
/// then sends little costs us only what it sent.
const GROW: usize = 64 * 1024;

/// Read one frame's payload. `Ok(None)` on a clean end of stream between frames; an error if
/// the stream ends inside a frame or the announced length exceeds `max` (checked before any
/// allocation).
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, WireError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(eof_inside_frame());
        }
        got += n;
    }
    let len = u32::from_be_bytes(len);
    if len as u64 > max as u64 {
        return Err(WireError::FrameTooLarge {
            len: len.into(),
            max,
        });
    }
    let len = len as usize;
    let mut buf = Vec::with_capacity(len.min(GROW));
    let read = r.take(len as u64).read_to_end(&mut buf).await?;
    if read != len {
        return Err(eof_inside_frame());
    }
    Ok(Some(buf))
}

fn eof_inside_frame() -> WireError {
    WireError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "connection closed inside a frame",
    ))
}

/// Write one frame (length prefix and payload, in one buffer so that a frame is never
/// interleaved with another writer's).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&frame(payload)).await
}

/// A payload with its length prefix.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(payload.len() + 4);
    push_frame(&mut buf, payload);
    buf
}

/// Append a framed payload to an output buffer (for batching several frames in one write).
///
/// Payloads are produced by our own encoders and bounded far below 4 GiB; a longer one
/// would be a bug, and is clamped rather than written with a wrapped length.
pub fn push_frame(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&payload[..len as usize]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_split_reads() {
        let mut data = frame(b"M5");
        data.extend(frame(b""));
        data.extend(frame(&[7u8; 100_000]));
        let (mut a, mut b) = tokio::io::duplex(1000);
        let writer = tokio::spawn(async move {
            a.write_all(&data).await.unwrap();
        });
        assert_eq!(read_frame(&mut b, 1 << 20).await.unwrap().unwrap(), b"M5");
        assert_eq!(read_frame(&mut b, 1 << 20).await.unwrap().unwrap(), b"");
        assert_eq!(
            read_frame(&mut b, 1 << 20).await.unwrap().unwrap().len(),
            100_000
        );
        writer.await.unwrap();
        assert!(read_frame(&mut b, 1 << 20).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversize_and_truncated_frames_are_errors() {
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2];
        assert!(matches!(
            read_frame(&mut r, 1 << 20).await,
            Err(WireError::FrameTooLarge {
                len: 0xffff_ffff,
                ..
            })
        ));
        let mut r: &[u8] = &[0, 0, 0, 5, 1, 2];
        assert!(matches!(
            read_frame(&mut r, 100).await,
            Err(WireError::Io(_))
        ));
        let mut r: &[u8] = &[0, 0];
        assert!(matches!(
            read_frame(&mut r, 100).await,
            Err(WireError::Io(_))
        ));
    }
}
