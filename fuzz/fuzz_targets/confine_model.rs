//! A model check of the agent's file confinement (`rdmig_confine::Confined`): a short sequence
//! of its operations (open, dir, create_new, remove, symlink) on paths built from a few
//! components that try every way out (`..`, absolute and empty components, links made by
//! earlier operations), run in a fresh migration directory of a temporary work directory. After
//! each operation:
//!
//! - nothing outside the migration directory changed (the whole temporary root is walked);
//! - what an operation did, it did where the model says: the path walked beneath the
//!   directory, `..` never above it, through real directories only (no link on the way, not
//!   even one that stays inside), and the file or link it made has that very name;
//! - the only links inside are `<dir>/parent`, the only ones the agent makes.
//!
//! Input: a link to plant in the migration directory first, as if CRIU had left `parent` there
//! (an index into the link targets; past them, none), then operations: an opcode byte, for a
//! link a target byte, a component count and that many component bytes (each byte modulo its
//! table's length). fuzz/seeds/confine_model.py writes the seeds in this format.
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use rdmig_confine::Confined;

/// What paths are made of: names (CRIU's own among them), the ways up, and "/" for an empty
/// component (or an absolute path when it comes first).
const COMPONENTS: [&str; 8] = ["a", "b", "..", ".", "parent", "/", "x/../..", "pre-1"];
/// Operations per input: enough for a link, a directory through it and a file under that.
const MAX_OPS: usize = 12;
const MAX_COMPONENTS: u8 = 4;

/// Link targets: CRIU's, up and out by `..` (to a sibling migration, the work directory, a
/// decoy `etc` above it), and absolute. The absolute one names the decoy in the temporary
/// root, not the host's /etc: were a link ever followed, nothing of this machine is touched.
fn targets(root: &Path) -> Vec<String> {
    let mut t: Vec<String> = ["../pre-1", "..", ".", "a", "../../m-2", "../../etc", "../../../etc", "../../../../etc"].map(String::from).into();
    t.push(format!("{}/etc", root.display()));
    t
}

#[derive(Debug)]
enum Op {
    Open(String),
    Dir(String),
    CreateNew(String),
    Remove(String),
    Symlink(String, String),
}

/// The input's bytes, one at a time (None at the end).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn path(&mut self) -> Option<String> {
        let n = 1 + self.byte()? % MAX_COMPONENTS;
        let comps: Option<Vec<&str>> = (0..n).map(|_| Some(COMPONENTS[self.byte()? as usize % COMPONENTS.len()])).collect();
        // "/" stands for an empty component: "a" "/" "b" is "a//b", "/" "a" is "/a".
        Some(comps?.iter().map(|c| if *c == "/" { "" } else { c }).collect::<Vec<_>>().join("/"))
    }

    fn op(&mut self, targets: &[String]) -> Option<Op> {
        Some(match self.byte()? % 5 {
            0 => Op::Open(self.path()?),
            1 => Op::Dir(self.path()?),
            2 => Op::CreateNew(self.path()?),
            3 => Op::Remove(self.path()?),
            _ => {
                let t = targets[self.byte()? as usize % targets.len()].clone();
                Op::Symlink(t, self.path()?)
            }
        })
    }
}

/// Where `rel` leads from `base` walked as the confinement must: never above `base`, through
/// real directories only (a link anywhere on the way, even one that stays inside, is the end).
/// Empty and `.` components stay.
fn walk(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut at = base.to_path_buf();
    let mut depth = 0usize;
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth = depth.checked_sub(1)?;
                // `at` is a real directory (no link in it), so its parent is `at` less a name.
                at.pop();
            }
            name => {
                at.push(name);
                depth += 1;
                if !fs::symlink_metadata(&at).ok()?.is_dir() {
                    return None;
                }
            }
        }
    }
    Some(at)
}

/// `rel`'s directory part (walked) and its last component, which must be a plain name: what a
/// successful operation on a file or link in `rel` must have used.
fn beneath(base: &Path, rel: &str) -> (PathBuf, String) {
    assert!(!rel.split('/').any(str::is_empty), "{rel:?}: an empty component was accepted");
    let (d, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    assert!(name != "." && name != "..", "{rel:?}: a file named {name:?}");
    let dir = walk(base, d).unwrap_or_else(|| panic!("{rel:?}: {d:?} is not a real directory beneath {}", base.display()));
    (dir, name.to_string())
}

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

/// Everything under `root` by its path, links not followed; `skip`'s subtree left out.
fn snapshot(root: &Path, skip: Option<&Path>, out: &mut BTreeMap<PathBuf, Entry>) {
    for e in fs::read_dir(root).expect("a directory of the temporary root") {
        let p = e.expect("a directory entry").path();
        if Some(p.as_path()) == skip {
            continue;
        }
        let m = fs::symlink_metadata(&p).expect("an entry's metadata");
        let entry = if m.is_symlink() {
            Entry::Link(fs::read_link(&p).expect("a link's target"))
        } else if m.is_dir() {
            snapshot(&p, skip, out);
            Entry::Dir
        } else {
            Entry::File(fs::read(&p).expect("a file's bytes"))
        };
        out.insert(p, entry);
    }
}

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::Builder::new().prefix("rdmig-confine-").tempdir().expect("a temporary root");
    // Canonical, so that the model's paths compare with the kernel's.
    let root = tmp.path().canonicalize().expect("the temporary root");
    let work = root.join("work");
    let mig = work.join("m-1");
    for d in [root.join("etc"), mig.join("pre-1"), work.join("m-2"), work.join("criu-plugins")] {
        fs::create_dir_all(d).expect("the layout");
    }
    for f in ["etc/passwd", "work/m-2/pages-1.img", "work/criu-plugins/librdmig_criu.so", "work/m-1/pre-1/pages-1.img"] {
        fs::write(root.join(f), f).expect("the layout");
    }
    let targets = targets(&root);
    let mut input = Input(data);
    let Some(plant) = input.byte() else { return };
    if let Some(t) = targets.get(plant as usize) {
        std::os::unix::fs::symlink(t, mig.join("parent")).expect("the planted link");
    }
    let mut outside = BTreeMap::new();
    snapshot(&root, Some(mig.as_path()), &mut outside);

    // The confinement in use and the directory it holds (beneath the migration's, after an open).
    let mut conf = Confined::open(&mig).expect("the migration directory");
    let mut base = mig.clone();
    for _ in 0..MAX_OPS {
        let Some(op) = input.op(&targets) else { break };
        match &op {
            Op::Open(rel) => {
                // As the agent opens a migration's directory: by a path, the last component no
                // link. (The agent's own path names it; links before the last are not its
                // concern, so the model takes what was opened only when it is beneath.)
                let p = PathBuf::from(format!("{}/{rel}", base.display()));
                if let Ok(c) = Confined::open(&p) {
                    let m = fs::symlink_metadata(&p).expect("what was opened");
                    assert!(m.is_dir(), "{op:?}: opened a link or a file");
                    if let Some(at) = walk(&base, rel) {
                        (conf, base) = (c, at);
                    }
                }
            }
            Op::Dir(rel) => {
                if let Ok(p) = conf.dir(rel) {
                    // A path for tools that write there by name: it must lead where the model
                    // goes (`a/..` is the directory itself, fine), through real directories.
                    assert!(!rel.split('/').any(str::is_empty), "{op:?}: an empty component was accepted");
                    // The same directory, however spelled (an Open of `a//..` leaves the
                    // handle's own path unnormalised; the agent only opens paths it made).
                    assert_eq!(fs::canonicalize(&p).ok(), fs::canonicalize(base.join(rel)).ok(), "{op:?}: {} vs {}", p.display(), base.join(rel).display());
                    assert!(walk(&base, rel).is_some(), "{op:?}: not a real directory beneath");
                }
            }
            Op::CreateNew(rel) => {
                if let Ok(mut f) = conf.create_new(rel) {
                    let (dir, name) = beneath(&base, rel);
                    let at = fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).expect("the new file's path");
                    assert_eq!(at, dir.join(&name), "{op:?}: created elsewhere");
                    let m = fs::symlink_metadata(&at).expect("the new file");
                    assert!(m.is_file() && m.permissions().mode() & 0o777 == 0o600, "{op:?}: {m:?}");
                    f.write_all(b"x").expect("the new file is writable");
                }
            }
            Op::Remove(rel) => {
                if conf.remove(rel).is_ok() {
                    let (dir, name) = beneath(&base, rel);
                    assert!(fs::symlink_metadata(dir.join(name)).is_err(), "{op:?}: removed something else");
                }
            }
            Op::Symlink(target, rel) => {
                if conf.symlink(target, rel).is_ok() {
                    let (dir, name) = beneath(&base, rel);
                    assert_eq!(name, "parent", "{op:?}");
                    assert_eq!(fs::read_link(dir.join(name)).ok().as_deref(), Some(Path::new(target)), "{op:?}");
                }
            }
        }
        let mut now = BTreeMap::new();
        snapshot(&root, Some(mig.as_path()), &mut now);
        assert!(now == outside, "{op:?} changed what is outside the migration directory:\nbefore {outside:#?}\nafter {now:#?}");
        assert!(fs::symlink_metadata(&mig).expect("the migration directory").is_dir(), "{op:?}");
        let mut inside = BTreeMap::new();
        snapshot(&mig, None, &mut inside);
        for (p, e) in &inside {
            if let Entry::Link(t) = e {
                assert!(p.file_name().is_some_and(|n| n == "parent"), "{op:?}: a link {} -> {}", p.display(), t.display());
            }
        }
    }
});
