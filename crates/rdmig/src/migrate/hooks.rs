//! The user's commands around a migration (`--hook-pre`, `--hook-post`, `--hook-fail`), run with
//! the migration's facts in `RDMIG_*` environment variables.

use super::Run;

pub(super) fn run_hook(cmd: &Option<String>, env: &[(&str, String)]) -> Result<(), String> {
    let Some(c) = cmd else { return Ok(()) };
    let st =
        std::process::Command::new("sh").arg("-c").arg(c).envs(env.iter().map(|(k, v)| (*k, v.as_str()))).status().map_err(|e| format!("hook {c:?}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("hook {c:?} failed ({st})"))
    }
}

impl Run<'_> {
    pub(super) fn hook_env(&self, phase: &str, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("RDMIG_ID", self.id.to_string()),
            ("RDMIG_PID", self.pid().to_string()),
            ("RDMIG_CONTAINER", self.o.container.as_ref().map(|c| c.to_string()).unwrap_or_default()),
            ("RDMIG_DESTINATION", self.o.to.to_string()),
            ("RDMIG_SOURCE", self.src.as_ref().map(|s| s.hostname.clone()).unwrap_or_default()),
            ("RDMIG_STRATEGY", format!("{:?}", self.o.strategy).to_lowercase()),
            ("RDMIG_PHASE", phase.to_string()),
        ];
        v.extend_from_slice(extra);
        v
    }
}
