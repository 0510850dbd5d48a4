//! One migration of a process at a time: `rdmig migrate` holds an exclusive `flock` on
//! `<dir>/migrate-<pid>.lock` (a container's: `migrate-container-<name>.lock`) for the whole run, so a second one of the same process is refused
//! before it touches anything. The kernel drops the lock when its holder exits, however it
//! exits: a stale file locks nothing.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Where the locks live.
pub const LOCK_DIR: &str = "/run/rdmig";

/// What a migration moves, as its lock names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Subject {
    Pid(i32),
    /// A Podman container, by its (validated) name.
    Container(String),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Pid(p) => write!(f, "pid {p}"),
            Subject::Container(n) => write!(f, "container {n}"),
        }
    }
}

/// Held for as long as it lives.
#[derive(Debug)]
pub(super) struct MigrationLock {
    _file: Flock<File>,
}

impl MigrationLock {
    /// Takes the lock of `what` for migration `id`, or says who holds it.
    pub(super) fn take(dir: &Path, what: &Subject, id: &str) -> Result<Self, String> {
        let path = lock_path(dir, what);
        std::fs::create_dir_all(dir).map_err(|e| format!("migration lock {}: {e}", path.display()))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("migration lock {}: {e}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut f) => {
                // Who holds it, for the message of a refused second run.
                let _ = f.set_len(0).and_then(|_| f.rewind()).and_then(|_| writeln!(f, "migration {id} by rdmig pid {}", std::process::id()));
                Ok(Self { _file: f })
            }
            Err((mut f, Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                let holder = holder.trim();
                Err(format!(
                    "another `rdmig migrate` of {what} is in progress{}: one migration of a process at a time",
                    if holder.is_empty() { String::new() } else { format!(" ({holder})") }
                ))
            }
            Err((_, e)) => Err(format!("migration lock {}: {e}", path.display())),
        }
    }
}

fn lock_path(dir: &Path, what: &Subject) -> PathBuf {
    match what {
        Subject::Pid(pid) => dir.join(format!("migrate-{pid}.lock")),
        // The name has no `/` (`ContainerName`), and this prefix no pid has.
        Subject::Container(name) => dir.join(format!("migrate-container-{name}.lock")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let d = tempfile::tempdir().unwrap();
        let p = |pid| Subject::Pid(pid);
        let first = MigrationLock::take(d.path(), &p(4242), "m-aaaa").unwrap();
        let e = MigrationLock::take(d.path(), &p(4242), "m-bbbb").unwrap_err();
        assert!(e.contains("another `rdmig migrate` of pid 4242 is in progress"), "{e}");
        assert!(e.contains("m-aaaa") && e.contains(&format!("rdmig pid {}", std::process::id())), "{e}");
        // Another process is not locked by it.
        let other = MigrationLock::take(d.path(), &p(4243), "m-cccc").unwrap();
        drop(first);
        let again = MigrationLock::take(d.path(), &p(4242), "m-dddd").unwrap();
        let e = MigrationLock::take(d.path(), &p(4242), "m-eeee").unwrap_err();
        assert!(e.contains("m-dddd") && !e.contains("m-aaaa"), "{e}");
        // A container is locked by its name, apart from any pid.
        let c = Subject::Container("srv".into());
        let ctr = MigrationLock::take(d.path(), &c, "m-ffff").unwrap();
        let e = MigrationLock::take(d.path(), &c, "m-gggg").unwrap_err();
        assert!(e.contains("another `rdmig migrate` of container srv is in progress") && e.contains("m-ffff"), "{e}");
        drop((again, other, ctr));
    }

    #[test]
    fn a_lock_directory_that_cannot_exist_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let e = MigrationLock::take(&file.join("sub"), &Subject::Pid(7), "m-x").unwrap_err();
        assert!(e.contains("migration lock"), "{e}");
    }
}
