//! Moving bytes: the md5 that repozo's format requires is the floor of a backup's time, so
//! the copy hides behind it. One thread reads large blocks and hashes them while another
//! writes the previous ones; gzip output is compressed by every core at once as independent
//! gzip members (a multi-member stream is one valid gzip file: Python's `gzip`, `zcat` and
//! repozo read it whole); a plain restore without verification is `copy_file_range`, the
//! kernel's copy.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};

/// Block size of the pipelines: large enough that per-block costs vanish, small enough
/// that a few in flight stay cheap.
pub const BLOCK: usize = 8 << 20;

/// Gzip members are compressed from blocks of this size, one per core at a time.
const GZ_BLOCK: usize = 4 << 20;

/// zlib level of the gzip members. repozo uses 9; on Data.fs content (measured on the
/// generated 1 GB file: pickles, hex and text) level 3 writes about 6 % more bytes for a
/// fifth of the CPU, level 6 2 % more for half of it.
pub const GZIP_LEVEL: u32 = 3;

/// Which side of a copy failed, so the caller can name the file.
#[derive(Debug)]
pub enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

pub type CopyResult<T> = std::result::Result<T, CopyError>;

/// What a copy did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Copied {
    /// Uncompressed bytes read from the source.
    pub bytes: u64,
    /// Bytes written to the destination.
    pub written: u64,
    /// md5 of the uncompressed bytes, when asked for.
    pub md5: Option<[u8; 16]>,
}

/// Copy `len` bytes of `src` at `start` to `out` at `out_pos`, hashing them; gzip members
/// at `gzip` level when given. `progress` gets the uncompressed bytes done so far.
pub fn copy_range(
    src: &File,
    start: u64,
    len: u64,
    out: &File,
    out_pos: u64,
    gzip: Option<u32>,
    progress: &(dyn Fn(u64) + Sync),
) -> CopyResult<Copied> {
    let mut pos = start;
    let end = start + len;
    let produce = |buf: &mut Vec<u8>, cap: usize| -> io::Result<usize> {
        let n = (end - pos).min(cap as u64) as usize;
        buf.resize(n, 0);
        src.read_exact_at(buf, pos).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file ended before position {end} (it shrank while being read)"),
                )
            } else {
                e
            }
        })?;
        pos += n as u64;
        Ok(n)
    };
    match gzip {
        None => match hashed_kernel_copy(src, start, len, out, out_pos, progress) {
            Some(done) => done,
            None => pipeline(produce, true, BLOCK, out, out_pos, progress),
        },
        Some(level) => gzip_pipeline(produce, level, out, out_pos, progress),
    }
}

/// A plain copy with its md5, as two independent threads: one hashes the range through a
/// read-only map of the source (no copy into user space), the other has the kernel copy it
/// (`copy_file_range`). Neither waits for the other, so the copy hides behind the md5 even
/// on a busy machine, where handing blocks between threads costs a wake-up each. Both see
/// the same bytes: the range is below the committed end (or a finished backup file), which
/// nothing rewrites. `None` when the file cannot be mapped (the caller uses the pipeline).
fn hashed_kernel_copy(
    src: &File,
    start: u64,
    len: u64,
    out: &File,
    out_pos: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Option<CopyResult<Copied>> {
    if len == 0 {
        return None;
    }
    let page = 4096;
    let map_start = start - start % page;
    let skip = (start - map_start) as usize;
    // SAFETY: the map is read-only and the mapped range of the file is never changed
    // while a backup or restore reads it (see above); a concurrent truncation would be a
    // broken writer, the same invariant the storage engine's own map relies on.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(map_start)
            .len(skip + len as usize)
            .map(src)
    }
    .ok()?;
    let _ = map.advise(memmap2::Advice::Sequential);
    let data = &map[skip..];
    Some(std::thread::scope(|s| {
        let hasher = s.spawn(|| {
            let mut md5 = Md5::new();
            let mut done = 0u64;
            for chunk in data.chunks(BLOCK) {
                md5.update(chunk);
                done += chunk.len() as u64;
                progress(done);
            }
            <[u8; 16]>::from(md5.finalize())
        });
        // The kernel copy ends well before the md5: its flush to disk overlaps the hashing
        // instead of following it (the caller's own sync then finds nothing left to write).
        let copied = copy_file_range_from(src, start, len, out, out_pos, &|_| {})
            .and_then(|c| out.sync_data().map(|()| c).map_err(CopyError::Write));
        let md5 = hasher
            .join()
            .map_err(|_| CopyError::Read(io::Error::other("the hashing thread panicked")))?;
        let copied = copied?;
        Ok(Copied {
            md5: Some(md5),
            ..copied
        })
    }))
}

/// Decompress (when `gzip`) or read the whole of `src`, optionally hashing, and write it to
/// `out` at `out_pos`. Without a hash and without gzip this is `copy_file_range`.
pub fn restore_file(
    src: &File,
    gzip: bool,
    hash: bool,
    out: &File,
    out_pos: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> CopyResult<Copied> {
    if gzip {
        let mut dec = flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 20, src));
        let produce = |buf: &mut Vec<u8>, cap: usize| -> io::Result<usize> {
            buf.resize(cap, 0);
            let mut n = 0;
            while n < cap {
                let got = dec.read(&mut buf[n..])?;
                if got == 0 {
                    break;
                }
                n += got;
            }
            buf.truncate(n);
            Ok(n)
        };
        return pipeline(produce, hash, BLOCK, out, out_pos, progress);
    }
    let len = src.metadata().map_err(CopyError::Read)?.len();
    if hash {
        return copy_range(src, 0, len, out, out_pos, None, progress);
    }
    copy_file_range_from(src, 0, len, out, out_pos, progress)
}

/// Hash a range of a file without copying it (backup decisions, restore checks).
pub fn md5_range(
    src: &File,
    start: u64,
    len: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<[u8; 16]> {
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; BLOCK.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(BLOCK as u64) as usize;
        src.read_exact_at(&mut buf[..n], start + done)?;
        md5.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    Ok(md5.finalize().into())
}

/// The md5 and uncompressed size of a whole backup file (verify).
pub fn md5_file(
    src: &File,
    gzip: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<(u64, [u8; 16])> {
    if !gzip {
        let len = src.metadata()?.len();
        return Ok((len, md5_range(src, 0, len, progress)?));
    }
    let mut dec = flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 20, src));
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = dec.read(&mut buf)?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        total += n as u64;
        progress(total);
    }
    Ok((total, md5.finalize().into()))
}

/// One thread fills blocks (reading, hashing), the caller's thread writes them.
fn pipeline(
    mut produce: impl FnMut(&mut Vec<u8>, usize) -> io::Result<usize> + Send,
    hash: bool,
    block: usize,
    out: &File,
    out_pos: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> CopyResult<Copied> {
    const IN_FLIGHT: usize = 4;
    std::thread::scope(|s| {
        let (full_tx, full_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let reader = s.spawn(move || -> io::Result<(u64, Option<[u8; 16]>)> {
            let mut md5 = hash.then(Md5::new);
            let mut made = 0;
            let mut total = 0u64;
            loop {
                let mut buf = match empty_rx.try_recv() {
                    Ok(b) => b,
                    Err(_) if made < IN_FLIGHT => {
                        made += 1;
                        Vec::with_capacity(block)
                    }
                    // The writer stopped (an error): it says why.
                    Err(_) => match empty_rx.recv() {
                        Ok(b) => b,
                        Err(_) => break,
                    },
                };
                let n = produce(&mut buf, block)?;
                if n == 0 {
                    break;
                }
                if let Some(m) = md5.as_mut() {
                    m.update(&buf[..n]);
                }
                total += n as u64;
                if full_tx.send(buf).is_err() {
                    break;
                }
            }
            Ok((total, md5.map(|m| m.finalize().into())))
        });
        let mut written = 0u64;
        let mut failed = None;
        for buf in full_rx.iter() {
            if let Err(e) = out.write_all_at(&buf, out_pos + written) {
                failed = Some(e);
                break;
            }
            written += buf.len() as u64;
            progress(written);
            let _ = empty_tx.try_send(buf);
        }
        // Unblock the reader if we stopped early.
        drop(full_rx);
        drop(empty_tx);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the reading thread panicked")));
        if let Some(e) = failed {
            return Err(CopyError::Write(e));
        }
        let (bytes, md5) = read.map_err(CopyError::Read)?;
        Ok(Copied {
            bytes,
            written,
            md5,
        })
    })
}

type Work = (u64, Vec<u8>);

/// A reader (hashing), one compressor per core, and the caller's thread writing the members
/// in order. Buffers circulate through a bounded pool, which bounds the memory in flight.
fn gzip_pipeline(
    mut produce: impl FnMut(&mut Vec<u8>, usize) -> io::Result<usize> + Send,
    level: u32,
    out: &File,
    out_pos: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> CopyResult<Copied> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 16));
    let pool = workers * 2 + 2;
    std::thread::scope(|s| {
        let (work_tx, work_rx) = sync_channel::<Work>(pool);
        let work_rx = Arc::new(Mutex::new(work_rx));
        let (done_tx, done_rx) = sync_channel::<(u64, Vec<u8>, usize)>(pool);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(pool);
        let reader = s.spawn(move || -> io::Result<(u64, [u8; 16])> {
            let mut md5 = Md5::new();
            let mut made = 0;
            let mut seq = 0u64;
            let mut total = 0u64;
            loop {
                let mut buf = match empty_rx.try_recv() {
                    Ok(b) => b,
                    Err(_) if made < pool => {
                        made += 1;
                        Vec::with_capacity(GZ_BLOCK)
                    }
                    Err(_) => match empty_rx.recv() {
                        Ok(b) => b,
                        Err(_) => break,
                    },
                };
                let n = produce(&mut buf, GZ_BLOCK)?;
                if n == 0 {
                    break;
                }
                md5.update(&buf[..n]);
                total += n as u64;
                if work_tx.send((seq, buf)).is_err() {
                    break;
                }
                seq += 1;
            }
            Ok((total, md5.finalize().into()))
        });
        for _ in 0..workers {
            let work_rx = Arc::clone(&work_rx);
            let done_tx: SyncSender<(u64, Vec<u8>, usize)> = done_tx.clone();
            let empty_tx = empty_tx.clone();
            s.spawn(move || {
                loop {
                    let next = work_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((seq, buf))) = next else { break };
                    let member = compress_member(&buf, level);
                    let n = buf.len();
                    let _ = empty_tx.try_send(buf);
                    if done_tx.send((seq, member, n)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        drop(empty_tx);
        let written = write_in_order(done_rx, out, out_pos, progress);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the reading thread panicked")));
        let written = written.map_err(CopyError::Write)?;
        let (bytes, md5) = read.map_err(CopyError::Read)?;
        Ok(Copied {
            bytes,
            written,
            md5: Some(md5),
        })
    })
}

fn write_in_order(
    done_rx: Receiver<(u64, Vec<u8>, usize)>,
    out: &File,
    out_pos: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<u64> {
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    let mut written = 0u64;
    let mut raw = 0u64;
    for (seq, member, n) in done_rx.iter() {
        pending.insert(seq, (member, n));
        while let Some((member, n)) = pending.remove(&next) {
            out.write_all_at(&member, out_pos + written)?;
            written += member.len() as u64;
            raw += n as u64;
            progress(raw);
            next += 1;
        }
    }
    Ok(written)
}

/// One complete gzip member (header, deflate data, CRC and size trailer).
fn compress_member(data: &[u8], level: u32) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 3 + 64),
        flate2::Compression::new(level),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// The kernel's copy (no pass through user space), falling back to a pipeline where the
/// file systems do not support it.
fn copy_file_range_from(
    src: &File,
    src_pos: u64,
    len: u64,
    out: &File,
    out_pos: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> CopyResult<Copied> {
    let mut done = 0u64;
    while done < len {
        let mut off_in = (src_pos + done) as libc::loff_t;
        let mut off_out = (out_pos + done) as libc::loff_t;
        let want = (len - done).min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the duration of the call and the offsets
        // are valid pointers to locals.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                out.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            let unsupported = matches!(
                e.raw_os_error(),
                Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)
            );
            if unsupported && done == 0 {
                let mut pos = 0u64;
                let produce = |buf: &mut Vec<u8>, cap: usize| -> io::Result<usize> {
                    let n = (len - pos).min(cap as u64) as usize;
                    buf.resize(n, 0);
                    src.read_exact_at(buf, src_pos + pos)?;
                    pos += n as u64;
                    Ok(n)
                };
                return pipeline(produce, false, BLOCK, out, out_pos, progress);
            }
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Which side failed is not reported by the call; ENOSPC/EDQUOT/EFBIG are the
            // destination's, anything else most likely the source's.
            return Err(match e.raw_os_error() {
                Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => CopyError::Write(e),
                _ => CopyError::Read(e),
            });
        }
        if n == 0 {
            return Err(CopyError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ended at {done} of {len} bytes"),
            )));
        }
        done += n as u64;
        progress(done);
    }
    Ok(Copied {
        bytes: len,
        written: len,
        md5: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| ((i * 7919) % 251) as u8 ^ (i / 1000) as u8)
            .collect()
    }

    #[test]
    fn plain_and_gzip_copies_agree() {
        let data = sample(GZ_BLOCK * 2 + 12345);
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        std::fs::write(&src_path, &data).unwrap();
        let src = File::open(&src_path).unwrap();
        let want: [u8; 16] = Md5::digest(&data[100..]).into();
        let out = File::create(dir.path().join("plain")).unwrap();
        let c = copy_range(&src, 100, data.len() as u64 - 100, &out, 0, None, &|_| {}).unwrap();
        assert_eq!(c.md5, Some(want));
        assert_eq!(
            std::fs::read(dir.path().join("plain")).unwrap(),
            &data[100..]
        );
        let gz = File::create(dir.path().join("gz")).unwrap();
        let c = copy_range(&src, 100, data.len() as u64 - 100, &gz, 0, Some(6), &|_| {}).unwrap();
        assert_eq!(c.md5, Some(want));
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(File::open(dir.path().join("gz")).unwrap())
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, &data[100..]);
        let (n, m) = md5_file(&File::open(dir.path().join("gz")).unwrap(), true, &|_| {}).unwrap();
        assert_eq!((n, m), (data.len() as u64 - 100, want));
        let restored = File::create(dir.path().join("r")).unwrap();
        restore_file(
            &File::open(dir.path().join("gz")).unwrap(),
            true,
            true,
            &restored,
            100,
            &|_| {},
        )
        .unwrap();
        restore_file(&src, false, false, &restored, 0, &|_| {}).unwrap();
        assert_eq!(
            &std::fs::read(dir.path().join("r")).unwrap()[..data.len()],
            &data[..]
        );
    }

    #[test]
    fn a_short_source_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("src"), b"abc").unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let out = File::create(dir.path().join("out")).unwrap();
        assert!(matches!(
            copy_range(&src, 0, 10, &out, 0, None, &|_| {}),
            Err(CopyError::Read(_))
        ));
    }
}
