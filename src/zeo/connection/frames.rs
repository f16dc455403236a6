//! The read side of a connection, cut into frames.

use super::*;

/// The read side of a connection, cut into frames.
///
/// Requests are read into one buffer and processed as soon as they are complete, on the
/// connection's own task: a pipelining client's requests arrive many per segment, and one
/// wake-up and one `recv` then serve them all. Frames are processed before more is read, so
/// the buffer holds at most what one `recv` brought plus one incomplete frame, which is
/// bounded by `max-frame-size`.
pub(super) struct FrameReader<R> {
    rd: R,
    buf: Vec<u8>,
    /// Start of the first unprocessed byte.
    pos: usize,
    max: usize,
}

/// Bytes asked of each `recv`.
pub(super) const READ_CHUNK: usize = 64 << 10;
/// Buffer capacity kept between large frames.
pub(super) const KEEP_READ_CAPACITY: usize = 1 << 20;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(super) fn new(rd: R, max: usize) -> Self {
        FrameReader {
            rd,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            max,
        }
    }

    /// The next complete frame's payload, if the buffer holds one; an error for a frame
    /// larger than allowed.
    pub(super) fn next_frame(&mut self) -> Result<Option<&[u8]>, String> {
        let avail = &self.buf[self.pos..];
        let Some(len) = avail.first_chunk::<4>() else {
            return Ok(None);
        };
        let n = u32::from_be_bytes(*len) as usize;
        if n > self.max {
            return Err(format!(
                "frame of {n} bytes exceeds the limit of {} bytes",
                self.max
            ));
        }
        if avail.len() < 4 + n {
            return Ok(None);
        }
        let start = self.pos + 4;
        self.pos = start + n;
        Ok(Some(&self.buf[start..start + n]))
    }

    /// Read more; false at end of stream. Cancel-safe (a read that did not finish took
    /// nothing), so it can wait in a `select!`.
    pub(super) async fn fill(&mut self) -> std::io::Result<bool> {
        // Move the incomplete frame to the front, and give back a large frame's memory.
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.buf.capacity() > KEEP_READ_CAPACITY {
                self.buf = Vec::with_capacity(READ_CHUNK);
            }
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        // Room for the frame being read, grown with the data actually received so a
        // lying length costs nothing.
        let want = match self.buf.first_chunk::<4>() {
            Some(len) => (4 + u32::from_be_bytes(*len) as usize).saturating_sub(self.buf.len()),
            None => 0,
        };
        self.buf.reserve(want.clamp(READ_CHUNK, 1 << 20));
        let n = self.rd.read_buf(&mut self.buf).await?;
        crate::zeo::stats::SERVER.add_in(n);
        Ok(n > 0)
    }

    /// The next frame, reading as needed (the handshake); None at end of stream.
    pub(super) async fn next_owned(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(f) = self.next_frame()? {
                return Ok(Some(f.to_vec()));
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}
