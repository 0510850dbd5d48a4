//! Which `rdma_rxe`, `ib_uverbs`, `ib_cm`, `rdma_cm` and `rdma_ucm` a host runs: rdmig's
//! (softroce patches 0015, 0023 and 0026 give them a module version) or Debian's stock ones,
//! loaded (`/sys/module`) and installed (what `modprobe` would load, from `modinfo`).

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// The version rdmig's patched modules carry (`MODULE_VERSION` of softroce patch 0015); the
/// stock modules have none.
pub const RDMIG_MODULE_VERSION: &str = "0.1.0-rdmig";

/// The modules rdmig replaces, in load order (the RDMA CM, for rdma_cm processes: our ib_cm and
/// rdma_cm, and rdma_ucm on them and our ib_uverbs).
pub const MODULES: [&str; 5] = ["ib_cm", "rdma_cm", "ib_uverbs", "rdma_rxe", "rdma_ucm"];

/// What to do when a stock module is in the way.
pub const INSTALL_HINT: &str = "install rdmig's (dkms) modules: apt-get install rdmig-rxe-dkms (or `dkms install rdmig-rxe/0.1.0`, softroce/README.md), \
                                then reload them: modprobe -r rdma_rxe rdma_ucm rdma_cm ib_cm ib_uverbs; modprobe -a rdma_rxe rdma_ucm";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// rdmig's module (patched, with a version ending in `-rdmig`, or rdma_rxe's control
    /// interface present).
    Rdmig,
    /// Debian's own module.
    Stock,
}

/// One module as loaded, or as installed for a kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleInfo {
    pub name: String,
    pub flavour: Flavour,
    /// `version` (none for the stock modules).
    pub version: Option<String>,
    /// `srcversion`, a hash of the sources (only modules with a version have one).
    pub srcversion: Option<String>,
    /// The file (installed modules only).
    pub filename: Option<String>,
}

fn flavour_of(version: Option<&str>) -> Flavour {
    if version.is_some_and(|v| v.ends_with("-rdmig")) {
        Flavour::Rdmig
    } else {
        Flavour::Stock
    }
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The loaded module `name` from `sys_module` (normally `/sys/module`); None when not loaded.
pub fn loaded_in(sys_module: &Path, name: &str) -> Option<ModuleInfo> {
    let dir = sys_module.join(name);
    // Built-in modules have a directory too, but no refcnt (and are never ours).
    if !dir.join("refcnt").exists() && !dir.join("initstate").exists() {
        return None;
    }
    let version = read_trimmed(&dir.join("version"));
    let mut flavour = flavour_of(version.as_deref());
    // rdmig's rdma_rxe built before patch 0015 has no version, but its control interface.
    if name == "rdma_rxe" && dir.join("parameters/dirty_log").exists() {
        flavour = Flavour::Rdmig;
    }
    Some(ModuleInfo { name: name.to_string(), flavour, version, srcversion: read_trimmed(&dir.join("srcversion")), filename: None })
}

/// The loaded module `name`; None when not loaded.
pub fn loaded(name: &str) -> Option<ModuleInfo> {
    loaded_in(Path::new("/sys/module"), name)
}

/// Parses `modinfo` output for one module.
pub fn parse_modinfo(name: &str, text: &str) -> Option<ModuleInfo> {
    let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(|v| v.trim().to_string())).filter(|v| !v.is_empty());
    let filename = field("filename")?;
    let version = field("version");
    Some(ModuleInfo { name: name.to_string(), flavour: flavour_of(version.as_deref()), srcversion: field("srcversion"), version, filename: Some(filename) })
}

/// The module `name` that `modprobe` would load for kernel `kver` (None: the running one), from
/// `modinfo`; None when it has no such module or modinfo is missing.
pub fn installed(name: &str, kver: Option<&str>) -> Option<ModuleInfo> {
    let mut cmd = Command::new("modinfo");
    if let Some(k) = kver {
        cmd.args(["-k", k]);
    }
    let out = cmd.arg(name).output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_modinfo(name, &String::from_utf8_lossy(&out.stdout))
}

/// Why `/dev/rxe_ctl` is missing, in words a user can act on.
pub fn missing_ctl_reason() -> String {
    match loaded("rdma_rxe") {
        Some(m) if m.flavour == Flavour::Stock => format!("stock rdma_rxe loaded (it has no /dev/rxe_ctl): {INSTALL_HINT}"),
        Some(_) => "rdmig's rdma_rxe is loaded but /dev/rxe_ctl is missing (no devtmpfs or udev?)".to_string(),
        None => {
            "rdma_rxe is not loaded: load rdmig's (modprobe rdma_rxe, with rdmig-rxe-dkms installed) and add a device (rdma link add rxe0 type rxe netdev DEV)"
                .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_stock_from_ours_in_sysfs() {
        let dir = std::env::temp_dir().join(format!("rdmig-rxe-module-test-{}", std::process::id()));
        let m = dir.as_path();
        std::fs::create_dir_all(m.join("rdma_rxe/parameters")).unwrap();
        std::fs::write(m.join("rdma_rxe/refcnt"), "0\n").unwrap();
        let stock = loaded_in(m, "rdma_rxe").unwrap();
        assert_eq!((stock.flavour, stock.version.as_deref()), (Flavour::Stock, None));
        std::fs::write(m.join("rdma_rxe/version"), format!("{RDMIG_MODULE_VERSION}\n")).unwrap();
        std::fs::write(m.join("rdma_rxe/srcversion"), "DFC4420F4058F089D0C25A5\n").unwrap();
        let ours = loaded_in(m, "rdma_rxe").unwrap();
        assert_eq!(
            (ours.flavour, ours.version.as_deref(), ours.srcversion.as_deref()),
            (Flavour::Rdmig, Some(RDMIG_MODULE_VERSION), Some("DFC4420F4058F089D0C25A5"))
        );
        // Ours from before patch 0015: no version, but the dirty log parameter.
        std::fs::remove_file(m.join("rdma_rxe/version")).unwrap();
        std::fs::write(m.join("rdma_rxe/parameters/dirty_log"), "Y\n").unwrap();
        assert_eq!(loaded_in(m, "rdma_rxe").unwrap().flavour, Flavour::Rdmig);
        assert!(loaded_in(m, "ib_uverbs").is_none());
        std::fs::remove_dir_all(m).unwrap();
    }

    #[test]
    fn parses_modinfo() {
        let ours = "filename:       /lib/modules/6.1.0-57-amd64/updates/dkms/rdma_rxe.ko\nversion:        0.1.0-rdmig\nlicense:        Dual BSD/GPL\n\
                    srcversion:     DFC4420F4058F089D0C25A5\nname:           rdma_rxe\n";
        let m = parse_modinfo("rdma_rxe", ours).unwrap();
        assert_eq!(m.flavour, Flavour::Rdmig);
        assert_eq!(m.filename.as_deref(), Some("/lib/modules/6.1.0-57-amd64/updates/dkms/rdma_rxe.ko"));
        assert_eq!(m.srcversion.as_deref(), Some("DFC4420F4058F089D0C25A5"));
        let stock = "filename:       /lib/modules/6.1.0-57-amd64/kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko\nalias:          rdma-link-rxe\n\
                     license:        Dual BSD/GPL\nsrcversion_bogus: x\nname:           rdma_rxe\n";
        let m = parse_modinfo("rdma_rxe", stock).unwrap();
        assert_eq!((m.flavour, m.version, m.srcversion), (Flavour::Stock, None, None));
        assert!(parse_modinfo("x", "").is_none());
    }

    /// The version the patch gives the modules, the DKMS package's and this constant agree.
    #[test]
    fn patch_dkms_conf_and_constant_agree() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../softroce");
        let patch = std::fs::read_dir(root.join("patches"))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("0015-"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .expect("softroce/patches/0015-*.patch");
        let line = format!("+MODULE_VERSION(\"{RDMIG_MODULE_VERSION}\");");
        assert_eq!(patch.lines().filter(|l| *l == line).count(), 2, "patch 0015 must add {line} to rdma_rxe and ib_uverbs");
        let conf = std::fs::read_to_string(root.join("dkms.conf")).unwrap();
        let pkg = conf.lines().find_map(|l| l.strip_prefix("PACKAGE_VERSION=")).unwrap().trim_matches('"');
        assert_eq!(format!("{pkg}-rdmig"), RDMIG_MODULE_VERSION);
        assert_eq!(pkg, env!("CARGO_PKG_VERSION"), "dkms.conf's PACKAGE_VERSION and rdmig's version");
    }
}
