//! Files replaced whole or not at all: written under a temporary name beside the final one, then
//! renamed over it, so that a reader (a later migration, a plot viewer, a script polling a
//! report) never sees half a file, and a failed write leaves the old file as it was. The one
//! writer of that pattern for the crate: timelines, plots, samples, kept check results, the
//! plugin copied into CRIU's directory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A temporary name in `path`'s directory: hidden, unique to this process and call (two writers
/// of the same file never share one), ending in `.EXT`, by default `path`'s own extension.
fn temp_name(path: &Path, ext: Option<&str>) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} has no file name", path.display())))?;
    let ext = match ext {
        Some(e) => format!(".{e}"),
        None => path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default(),
    };
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(path.with_file_name(format!(".{}.{}-{n}.tmp{ext}", name.to_string_lossy(), std::process::id())))
}

/// Has `write` make the file at a temporary path beside `path`, then renames it over `path`. On
/// any error the temporary file is removed and `path` is untouched; `io_err` turns this
/// function's own I/O errors into the caller's error type.
pub fn replace_with<E>(path: &Path, io_err: impl Fn(io::Error) -> E, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    replace_via(path, None, io_err, write)
}

/// [`replace_with`] for a PNG drawn by plotters, which picks the image format from the file
/// name: the temporary file ends in `.png` whatever `path` ends in.
pub fn replace_png<E>(path: &Path, io_err: impl Fn(io::Error) -> E, draw: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    replace_via(path, Some("png"), io_err, draw)
}

fn replace_via<E>(path: &Path, ext: Option<&str>, io_err: impl Fn(io::Error) -> E, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    let tmp = temp_name(path, ext).map_err(&io_err)?;
    let done = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(&io_err));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// [`replace_with`] for bytes in hand.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_with(path, |e| e, |tmp| std::fs::write(tmp, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_file_and_leaves_nothing_beside_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        replace(&p, b"one").unwrap();
        replace(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(names(d.path()), ["a.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_its_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("plot.png");
        replace(&p, b"old").unwrap();
        let r: Result<(), io::Error> = replace_with(
            &p,
            |e| e,
            |tmp| {
                std::fs::write(tmp, b"half")?;
                Err(io::Error::other("drawing failed"))
            },
        );
        assert_eq!(r.unwrap_err().to_string(), "drawing failed");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(names(d.path()), ["plot.png"]);
    }

    #[test]
    fn the_temporary_name_has_the_extension_asked_for_and_differs_per_call() {
        let p = Path::new("/x/probes.json");
        let (a, b) = (temp_name(p, None).unwrap(), temp_name(p, None).unwrap());
        assert_ne!(a, b);
        assert_eq!(a.extension().unwrap(), "json");
        assert_eq!(a.parent().unwrap(), Path::new("/x"));
        assert!(a.file_name().unwrap().to_string_lossy().starts_with(".probes.json."));
        assert_eq!(temp_name(Path::new("/x/chart.out"), Some("png")).unwrap().extension().unwrap(), "png");
        assert_eq!(temp_name(Path::new("/"), None).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
