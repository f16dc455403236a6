//! Process-level plumbing for the manager: descriptors, identity, directories.
//!
//! Everything here runs in a single-threaded process (the manager forks before any thread or
//! runtime exists), so changing process-wide state such as the umask or fds 0–2 is safe.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("username '{0}' not found")]
    NoSuchUser(String),
    #[error("uid '{0}' not found")]
    NoSuchUid(String),
    #[error("only root can use user = \"{0}\" to change users")]
    NotRoot(String),
    #[error("can't switch to user '{user}': {err}")]
    Switch { user: String, err: nix::Error },
    #[error("can't create {path}: {err}")]
    Mkdir { path: PathBuf, err: io::Error },
}

/// Close every descriptor from 3 up: what the manager inherited from whoever started it.
pub fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; nothing in this process owns any above 2
    // yet (called right after fork, before the manager opens anything).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc != 0 {
        let max = max_fd();
        for fd in 3..max {
            // SAFETY: as above; EBADF on unused numbers is harmless.
            unsafe { libc::close(fd) };
        }
    }
}

/// Mark every descriptor from 3 up close-on-exec, so a foreground manager's program does
/// not inherit what the manager inherited (zdaemon closes only 3..99; §9 item 20).
pub fn cloexec_inherited_fds() {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    // SAFETY: only sets a flag on descriptors.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if rc != 0 {
        for fd in 3..max_fd() {
            // SAFETY: F_SETFD on a possibly unused number fails with EBADF, harmlessly.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

fn max_fd() -> i32 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft.min(65536) as i32)
        .unwrap_or(1024)
}

/// Put /dev/null on fd 0 (zdaemon leaves the program with fd 0 closed; §9 item 10).
pub fn stdin_from_devnull() -> io::Result<()> {
    let null = File::open("/dev/null")?;
    dup_onto(&null, 0)
}

/// Make `fd` (0, 1 or 2) a copy of `file`.
pub fn dup_onto(file: &File, fd: i32) -> io::Result<()> {
    // SAFETY: dup2 onto a standard descriptor number; `file` stays open and owned.
    if unsafe { libc::dup2(file.as_raw_fd(), fd) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Open a log-like file for appending, creating it (mode 0644 before the umask).
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

pub fn set_umask(mask: u32) {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// The user a manager runs as, resolved from a name or a numeric uid.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub home: PathBuf,
}

pub fn resolve_user(spec: &str) -> Result<Identity, IdentityError> {
    let user = if let Ok(uid) = spec.parse::<u32>() {
        User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .ok_or_else(|| IdentityError::NoSuchUid(spec.to_owned()))?
    } else {
        User::from_name(spec)
            .ok()
            .flatten()
            .ok_or_else(|| IdentityError::NoSuchUser(spec.to_owned()))?
    };
    Ok(Identity {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
        home: user.dir,
    })
}

/// Decide whether a user switch is needed: `Ok(None)` when already running as that user.
/// Only root may switch, as in zdaemon (§1.3 step 5).
pub fn plan_switch(spec: Option<&str>) -> Result<Option<Identity>, IdentityError> {
    let Some(spec) = spec else { return Ok(None) };
    let id = resolve_user(spec)?;
    let euid = Uid::effective();
    if euid == id.uid {
        Ok(None)
    } else if euid.is_root() {
        Ok(Some(id))
    } else {
        Err(IdentityError::NotRoot(spec.to_owned()))
    }
}

/// Create `dir` (and its parents) if missing; when switching users, hand the directories we
/// created, and `dir` itself, to the target user (zdaemon crashes here as root; §9 item 17).
pub fn make_dir_for(dir: &Path, owner: Option<&Identity>) -> Result<(), IdentityError> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    std::fs::create_dir_all(dir).map_err(|err| IdentityError::Mkdir {
        path: dir.to_path_buf(),
        err,
    })?;
    if let Some(id) = owner {
        if missing.is_empty() {
            missing.push(dir.to_path_buf());
        }
        for d in missing {
            let _ = nix::unistd::chown(&d, Some(id.uid), Some(id.gid));
        }
    }
    Ok(())
}

/// Give `file` to the target user when it exists (a transcript created earlier by root).
pub fn chown_file(file: &Path, owner: &Identity) {
    if file.exists() {
        let _ = nix::unistd::chown(file, Some(owner.uid), Some(owner.gid));
    }
}

/// Drop to `id`: primary group, its supplementary groups, then the uid.
pub fn switch_to(id: &Identity) -> Result<(), IdentityError> {
    let err = |err| IdentityError::Switch {
        user: id.name.clone(),
        err,
    };
    nix::unistd::setgid(id.gid).map_err(err)?;
    let cname = CString::new(id.name.clone()).map_err(|_| err(nix::Error::EINVAL))?;
    nix::unistd::initgroups(&cname, id.gid).map_err(err)?;
    nix::unistd::setuid(id.uid).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_by_name_and_uid() {
        assert_eq!(resolve_user("0").unwrap().name, "root");
        assert_eq!(resolve_user("root").unwrap().uid, Uid::from_raw(0));
        assert!(matches!(
            resolve_user("no-such-user-zz"),
            Err(IdentityError::NoSuchUser(_))
        ));
        assert!(plan_switch(None).unwrap().is_none());
    }
}
