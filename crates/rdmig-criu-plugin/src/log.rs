//! Messages into CRIU's own log through its exported `print_on_level(level, fmt, ...)`.
//!
//! The symbol is looked up in the running program (`dlsym(RTLD_DEFAULT)`) when the plugin is
//! initialised rather than linked as an undefined reference, so the same crate also links into
//! ordinary programs (the main crate uses it as an rlib for the image format). Outside CRIU, or
//! before init, messages go to stderr.

use std::ffi::{c_char, c_uint, CString};
use std::sync::atomic::{AtomicUsize, Ordering};

/// CRIU's levels (compel/loglevels.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error = 1,
    Info = 3,
    Debug = 4,
}

type PrintOnLevel = unsafe extern "C" fn(c_uint, *const c_char, ...);
type GetImageDir = unsafe extern "C" fn() -> libc::c_int;

static PRINT_ON_LEVEL: AtomicUsize = AtomicUsize::new(0);
static GET_IMAGE_DIR: AtomicUsize = AtomicUsize::new(0);

fn lookup(name: &str) -> usize {
    let c = CString::new(name).expect("no NUL in symbol names");
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads the name.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) as usize }
}

/// Resolves CRIU's exported functions; false if this is not running inside criu.
pub fn resolve() -> bool {
    PRINT_ON_LEVEL.store(lookup("print_on_level"), Ordering::Relaxed);
    GET_IMAGE_DIR.store(lookup("criu_get_image_dir"), Ordering::Relaxed);
    PRINT_ON_LEVEL.load(Ordering::Relaxed) != 0 && GET_IMAGE_DIR.load(Ordering::Relaxed) != 0
}

/// CRIU's images directory fd (valid in the criu master and in restored tasks).
pub fn image_dir_fd() -> Option<libc::c_int> {
    let p = GET_IMAGE_DIR.load(Ordering::Relaxed);
    if p == 0 {
        return None;
    }
    // SAFETY: p is criu_get_image_dir's address as returned by dlsym; its signature is
    // `int criu_get_image_dir(void)` (criu-plugin.h).
    let f: GetImageDir = unsafe { std::mem::transmute::<usize, GetImageDir>(p) };
    // SAFETY: calling CRIU's own function from a hook, where it is valid.
    let fd = unsafe { f() };
    (fd >= 0).then_some(fd)
}

/// Appends how long a hook's verbs work took to the images directory's times file
/// (`rdmig_image::timing`, for rdmig's timeline).
pub fn times(kind: rdmig_image::timing::Kind, took: std::time::Duration) {
    append_times(&rdmig_image::timing::line(kind, took));
}

/// The steps of one hook call's verbs work, timed one after the other, for the times file's
/// step lines (`rdmig_image::timing::step_line`). A step marked more than once is summed.
pub struct Steps {
    kind: rdmig_image::timing::Kind,
    last: std::time::Instant,
    sums: Vec<(&'static str, std::time::Duration)>,
}

impl Steps {
    pub fn new(kind: rdmig_image::timing::Kind) -> Self {
        Steps { kind, last: std::time::Instant::now(), sums: vec![] }
    }

    /// Ends the step that ran since the last mark (or since [`Steps::new`]) as `name`.
    pub fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        let took = now - self.last;
        self.last = now;
        match self.sums.iter_mut().find(|(n, _)| *n == name) {
            Some((_, sum)) => *sum += took,
            None => self.sums.push((name, took)),
        }
    }

    /// Appends the steps' lines, in one write.
    pub fn write(self) {
        let text: String = self.sums.iter().map(|(n, d)| rdmig_image::timing::step_line(self.kind, n, *d)).collect();
        if !text.is_empty() {
            append_times(&text);
        }
    }
}

/// Appends `text` to the times file. Best effort: a failure is logged at debug level and the
/// hook goes on. The file is opened without following a link and without blocking, and written
/// only if it is a regular file, whatever stands at its name.
fn append_times(text: &str) {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let Some(dir) = image_dir_fd() else { return };
    let name = CString::new(rdmig_image::timing::FILE).expect("no NUL in the name");
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: openat with CRIU's images directory fd and a NUL-terminated name that outlives
    // the call; it only creates or opens that file.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        log(Level::Debug, &format!("{}: {}", rdmig_image::timing::FILE, std::io::Error::last_os_error()));
        return;
    }
    // SAFETY: openat just returned this descriptor, and nothing else owns it.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return;
    }
    // One write: O_APPEND keeps the lines of several processes whole.
    if let Err(e) = (&f).write_all(text.as_bytes()) {
        log(Level::Debug, &format!("{}: {e}", rdmig_image::timing::FILE));
    }
}

pub fn log(level: Level, msg: &str) {
    let line = format!("rdmig_criu: {}\n", msg.replace('\0', " "));
    let p = PRINT_ON_LEVEL.load(Ordering::Relaxed);
    if p == 0 {
        eprint!("{line}");
        return;
    }
    let text = CString::new(line).expect("NULs were replaced");
    // SAFETY: p is print_on_level's address from dlsym, a printf-like variadic function; the
    // format is the static "%s" and the one argument a NUL-terminated string that outlives the call.
    unsafe {
        let f: PrintOnLevel = std::mem::transmute::<usize, PrintOnLevel>(p);
        f(level as c_uint, c"%s".as_ptr(), text.as_ptr());
    }
}

macro_rules! error { ($($a:tt)*) => { $crate::log::log($crate::log::Level::Error, &format!($($a)*)) } }
macro_rules! info { ($($a:tt)*) => { $crate::log::log($crate::log::Level::Info, &format!($($a)*)) } }
macro_rules! debug { ($($a:tt)*) => { $crate::log::log($crate::log::Level::Debug, &format!($($a)*)) } }
pub(crate) use {debug, error, info};
