//! Positional reads of a Data.fs for the offline tools.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Positional reads through a window buffer: the checker skips pickles by position, so it
/// reads headers at increasing offsets with the occasional jump.
pub struct PosReader<'f> {
    file: &'f File,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
    /// The file's size when the reader was made: reads never go past it, so a damaged
    /// length cannot make us allocate more than the file holds.
    size: u64,
    /// How much to read ahead on a miss.
    window: usize,
}

const WINDOW: usize = 1 << 20;

impl<'f> PosReader<'f> {
    /// A reader for walking the file forwards (large read-ahead).
    pub fn new(file: &'f File, size: u64) -> Self {
        Self::with_window(file, size, WINDOW)
    }

    /// A reader for scattered reads (e.g. current records in oid order): a small
    /// read-ahead, so each miss costs about one page.
    pub fn scattered(file: &'f File, size: u64) -> Self {
        Self::with_window(file, size, 4096)
    }

    fn with_window(file: &'f File, size: u64, window: usize) -> Self {
        PosReader {
            file,
            buf: Vec::new(),
            start: 0,
            size,
            window,
        }
    }

    /// Up to `len` bytes at `pos`; fewer only at the end of the file.
    pub fn read(&mut self, pos: u64, len: usize) -> io::Result<&[u8]> {
        let len = len.min(usize::try_from(self.size.saturating_sub(pos)).unwrap_or(usize::MAX));
        let in_window = pos >= self.start
            && pos - self.start <= self.buf.len() as u64
            && (pos - self.start) as usize + len <= self.buf.len();
        if !in_window {
            let room = usize::try_from(self.size.saturating_sub(pos)).unwrap_or(usize::MAX);
            self.fill(pos, len.max(self.window.min(room)))?;
        }
        let off = (pos - self.start) as usize;
        let end = (off + len).min(self.buf.len());
        Ok(&self.buf[off.min(end)..end])
    }

    fn fill(&mut self, pos: u64, want: usize) -> io::Result<()> {
        self.buf.resize(want, 0);
        self.start = pos;
        let mut got = 0;
        while got < want {
            match self.file.read_at(&mut self.buf[got..], pos + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.truncate(got);
        Ok(())
    }
}
