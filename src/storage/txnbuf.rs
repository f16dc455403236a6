//! The data records of a transaction being committed, before the vote writes them.
//!
//! Small transactions stay in memory. Past [`SPILL_AT`] bytes the buffered records move to
//! `Data.fs.tmp` (the file Python uses for the same purpose; only written while holding
//! the storage lock), so a large import does not hold its whole size in memory. Records are
//! never split between the file and memory: the spill happens before a record is added.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Bytes kept in memory before spilling to the temporary file.
pub const SPILL_AT: usize = 16 << 20;

pub struct TxnBuffer {
    /// The records not spilled (all of them for small transactions).
    pub mem: Vec<u8>,
    spill: Option<(File, PathBuf)>,
    spilled: u64,
    tmp_path: PathBuf,
}

impl std::fmt::Debug for TxnBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnBuffer")
            .field("len", &self.len())
            .field("spilled", &self.spilled)
            .finish()
    }
}

impl TxnBuffer {
    pub fn new(tmp_path: PathBuf) -> TxnBuffer {
        TxnBuffer {
            mem: Vec::new(),
            spill: None,
            spilled: 0,
            tmp_path,
        }
    }

    pub fn len(&self) -> u64 {
        self.spilled + self.mem.len() as u64
    }

    /// Called before appending a record: move the in-memory records to the file when they
    /// have grown past the threshold.
    pub fn make_room(&mut self) -> io::Result<()> {
        if self.mem.len() < SPILL_AT {
            return Ok(());
        }
        if self.spill.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.tmp_path)?;
            self.spill = Some((file, self.tmp_path.clone()));
        }
        if let Some((file, _)) = &self.spill {
            file.write_all_at(&self.mem, self.spilled)?;
        }
        self.spilled += self.mem.len() as u64;
        self.mem.clear();
        Ok(())
    }

    /// Forget everything from `len` on. `len` is never inside the spilled part: only the
    /// record added last is ever rolled back, and it is always in memory.
    pub fn truncate(&mut self, len: u64) {
        let keep = len.saturating_sub(self.spilled) as usize;
        self.mem.truncate(keep);
    }

    /// `len` bytes at offset `off`.
    pub fn read(&self, off: u64, len: usize) -> io::Result<Vec<u8>> {
        if off >= self.spilled {
            let start = (off - self.spilled) as usize;
            return self
                .mem
                .get(start..start + len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| io::Error::other("read past the transaction buffer"));
        }
        let (file, _) = self
            .spill
            .as_ref()
            .ok_or_else(|| io::Error::other("no spill file"))?;
        let mut v = vec![0u8; len];
        file.read_exact_at(&mut v, off)?;
        Ok(v)
    }

    /// Write the spilled part to `out` at `pos`, in chunks; returns the bytes written.
    /// Whether some records went to the temporary file.
    pub fn has_spilled(&self) -> bool {
        self.spill.is_some()
    }

    pub fn copy_spilled(&self, out: &File, pos: u64) -> io::Result<u64> {
        let Some((file, _)) = &self.spill else {
            return Ok(0);
        };
        let mut chunk = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < self.spilled {
            let n = ((self.spilled - done) as usize).min(chunk.len());
            file.read_exact_at(&mut chunk[..n], done)?;
            out.write_all_at(&chunk[..n], pos + done)?;
            done += n as u64;
        }
        Ok(done)
    }
}

impl Drop for TxnBuffer {
    fn drop(&mut self) {
        if let Some((_, path)) = self.spill.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_whole_records_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("Data.fs.tmp");
        let mut b = TxnBuffer::new(tmp.clone());
        let rec = vec![7u8; SPILL_AT / 2 + 1];
        for i in 0..5u8 {
            b.make_room().unwrap();
            let mut r = rec.clone();
            r[0] = i;
            b.mem.extend_from_slice(&r);
        }
        assert!(tmp.exists());
        assert_eq!(b.len(), 5 * rec.len() as u64);
        for i in 0..5u64 {
            let got = b.read(i * rec.len() as u64, 2).unwrap();
            assert_eq!(got, vec![i as u8, 7]);
        }
        let mark = b.len();
        b.make_room().unwrap();
        b.mem.extend_from_slice(b"extra");
        b.truncate(mark);
        assert_eq!(b.len(), mark);
        let out = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("out"))
            .unwrap();
        let n = b.copy_spilled(&out, 10).unwrap();
        assert_eq!(n + b.mem.len() as u64, b.len());
        drop(b);
        assert!(!tmp.exists());
    }
}
