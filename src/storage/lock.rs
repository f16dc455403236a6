//! `Data.fs.lock`, compatible with zc.lockfile (spec §4.2): BSD `flock(LOCK_EX | LOCK_NB)`
//! on the whole file, then `" <pid>\n"` written at the start and the file truncated there.
//! `flock`, not `fcntl`: on Linux the two do not exclude each other, and Python uses
//! `flock`. The file is left in place on release, as zc.lockfile does.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::StorageError;

/// A held lock; released when dropped (closing the descriptor releases the `flock`).
#[derive(Debug)]
pub struct LockFile {
    _file: File,
    path: PathBuf,
}

impl LockFile {
    /// Take the lock without waiting; [`StorageError::Locked`] when another process has it.
    pub fn acquire(path: &Path) -> Result<LockFile, StorageError> {
        let io_err = |e| StorageError::io(path, None, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                StorageError::Locked {
                    path: path.to_path_buf(),
                }
            } else {
                io_err(err)
            });
        }
        let content = format!(" {}\n", std::process::id());
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        file.write_all(content.as_bytes()).map_err(io_err)?;
        file.set_len(content.len() as u64).map_err(io_err)?;
        file.flush().map_err(io_err)?;
        Ok(LockFile {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_a_second_holder_and_writes_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Data.fs.lock");
        std::fs::write(&path, "stale content that is longer").unwrap();
        let lock = LockFile::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!(" {}\n", std::process::id())
        );
        // flock locks belong to the open file description, so a second open in the same
        // process conflicts too.
        assert!(matches!(
            LockFile::acquire(&path),
            Err(StorageError::Locked { .. })
        ));
        drop(lock);
        let again = LockFile::acquire(&path).unwrap();
        assert_eq!(again.path(), path);
        assert!(path.exists());
    }
}
