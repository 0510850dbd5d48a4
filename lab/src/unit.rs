//! The part of systemd's unit syntax that starting a simple service takes: `ExecStart=`,
//! `EnvironmentFile=` and `Environment=` of `[Service]`, and the expansion of `${VAR}` and `$VAR`
//! in the command line. The lab's nodes have no systemd (their PID 1 is a shell script), so with
//! `rdmig-lab up` (its default) they start the installed package's `rdmig-agent.service` with this,
//! as systemd would (systemd.service(5) "Command lines", systemd.exec(5) "Environment").
//!
//! Anything this does not understand in those three settings is refused, not guessed: specifiers
//! (`%n`...), the `@` and `:` prefixes, several `ExecStart=` lines. Other settings (`Restart=`,
//! `StateDirectory=`...) are listed in [`Service::ignored`]; the lab restarts the agent whenever it
//! exits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::LabError;

/// The `[Service]` settings of a unit that start its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `ExecStart=`, split into words, variables not expanded yet.
    pub exec_start: Vec<Word>,
    /// `EnvironmentFile=` paths, with whether a missing file is fine (a leading `-`).
    pub environment_files: Vec<(PathBuf, bool)>,
    /// `Environment=` assignments, in order.
    pub environment: Vec<(String, String)>,
    /// The other settings of `[Service]`, which this does not apply.
    pub ignored: Vec<String>,
}

/// One word of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    /// The whole word was `$NAME`: it becomes the variable's value split at white space (zero or
    /// more words).
    pub split_var: Option<String>,
}

fn invalid(path: &Path, what: String) -> LabError {
    LabError::Invalid(format!("{}: {what}", path.display()))
}

/// Joins continuation lines (a trailing backslash) and drops comments and blank lines.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if cur.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(line);
        out.push(std::mem::take(&mut cur));
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// Splits a command line or an `Environment=` value into words: white space separates, double
/// and single quotes group, a backslash escapes the next character (`\n`, `\t` as in C).
fn split_words(s: &str) -> Result<Vec<Word>, String> {
    let mut words = vec![];
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut text = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' | '\'' => loop {
                    match chars.next() {
                        None => return Err(format!("unterminated {c} quote in {s:?}")),
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => text.push(unescape(chars.next().ok_or_else(|| format!("trailing backslash in {s:?}"))?)),
                        Some(x) => text.push(x),
                    }
                },
                '\\' => text.push(unescape(chars.next().ok_or_else(|| format!("trailing backslash in {s:?}"))?)),
                _ => text.push(c),
            }
        }
        // systemd looks at the word after unquoting: even '$NAME' in quotes is split.
        let split_var = text.strip_prefix('$').filter(|n| is_name(n)).map(str::to_string);
        words.push(Word { text, split_var });
    }
}

fn unescape(c: char) -> char {
    match c {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        x => x,
    }
}

fn is_name(n: &str) -> bool {
    !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !n.starts_with(|c: char| c.is_ascii_digit())
}

impl Service {
    /// Parses a unit file's text (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, LabError> {
        let mut section = String::new();
        let mut svc = Service { exec_start: vec![], environment_files: vec![], environment: vec![], ignored: vec![] };
        let mut exec_lines = 0;
        for line in logical_lines(text) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                continue;
            }
            if section != "Service" {
                continue;
            }
            let (key, value) = line.split_once('=').ok_or_else(|| invalid(path, format!("not KEY=VALUE: {line:?}")))?;
            let (key, value) = (key.trim(), value.trim());
            match key {
                "ExecStart" => {
                    exec_lines += 1;
                    let mut v = value;
                    while let Some(rest) = v.strip_prefix(['-', '+', '!']) {
                        v = rest;
                    }
                    if v.starts_with(['@', ':', '|']) {
                        return Err(invalid(path, format!("ExecStart prefix {:?} is not supported by the lab", &v[..1])));
                    }
                    if v.contains('%') {
                        return Err(invalid(path, "specifiers (%) in ExecStart are not supported by the lab".into()));
                    }
                    svc.exec_start = split_words(v).map_err(|e| invalid(path, e))?;
                }
                "EnvironmentFile" => {
                    let (optional, p) = match value.strip_prefix('-') {
                        Some(p) => (true, p),
                        None => (false, value),
                    };
                    if !p.starts_with('/') {
                        return Err(invalid(path, format!("EnvironmentFile {p:?} is not absolute")));
                    }
                    svc.environment_files.push((PathBuf::from(p), optional));
                }
                "Environment" => {
                    for w in split_words(value).map_err(|e| invalid(path, e))? {
                        let (k, v) = w.text.split_once('=').ok_or_else(|| invalid(path, format!("Environment {:?} is not KEY=VALUE", w.text)))?;
                        svc.environment.push((k.to_string(), v.to_string()));
                    }
                }
                other => svc.ignored.push(other.to_string()),
            }
        }
        match exec_lines {
            0 => return Err(invalid(path, "no ExecStart= in [Service]".into())),
            1 => {}
            n => return Err(invalid(path, format!("{n} ExecStart= lines (only Type=oneshot has several; the lab runs one)"))),
        }
        match svc.exec_start.first() {
            Some(w) if w.split_var.is_none() && w.text.starts_with('/') && !w.text.contains('$') => Ok(svc),
            _ => Err(invalid(path, "ExecStart must begin with an absolute program path".into())),
        }
    }

    pub fn load(path: &Path) -> Result<Self, LabError> {
        let text = std::fs::read_to_string(path).map_err(|e| LabError::io(format!("read {}", path.display()), e))?;
        Self::parse(path, &text)
    }

    /// The program, as ExecStart names it.
    pub fn program(&self) -> &Path {
        Path::new(&self.exec_start[0].text)
    }

    /// The variables the service gets: `Environment=`, then every `EnvironmentFile=` in order
    /// (they override, as in systemd); a missing file is an error unless marked optional.
    pub fn variables(&self) -> Result<BTreeMap<String, String>, LabError> {
        let mut vars: BTreeMap<String, String> = self.environment.iter().cloned().collect();
        for (p, optional) in &self.environment_files {
            match std::fs::read_to_string(p) {
                Ok(text) => vars.extend(parse_environment_file(&text)),
                Err(e) if *optional && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LabError::io(format!("read EnvironmentFile {}", p.display()), e)),
            }
        }
        Ok(vars)
    }

    /// The command line with `vars` substituted: `${NAME}` in place (one word, even when empty),
    /// a word that is exactly `$NAME` replaced by the value split at white space; unset is empty.
    pub fn argv(&self, vars: &BTreeMap<String, String>) -> Vec<String> {
        let mut out = vec![];
        for w in &self.exec_start {
            if let Some(name) = &w.split_var {
                out.extend(vars.get(name).map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>()).unwrap_or_default());
            } else {
                out.push(expand(&w.text, vars));
            }
        }
        out
    }
}

/// Replaces `${NAME}` with its value and `$$` with `$`.
fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('{').and_then(|a| a.split_once('}')).filter(|(n, _)| is_name(n)) {
            out.push_str(vars.get(name).map(String::as_str).unwrap_or(""));
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// An `EnvironmentFile=`: `KEY=VALUE` lines; blank lines, lines starting with `#` or `;` and
/// lines without `=` are ignored; a value in double or single quotes loses them (backslash escapes
/// in double quotes), an unquoted one its surrounding white space.
pub fn parse_environment_file(text: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    for line in logical_lines(text) {
        let Some((k, v)) = line.split_once('=') else { continue };
        let (k, v) = (k.trim(), v.trim());
        if !is_name(k) {
            continue;
        }
        let value = match v.chars().next() {
            Some(q @ ('"' | '\'')) if v.len() >= 2 && v.ends_with(q) => {
                let inner = &v[1..v.len() - 1];
                if q == '"' {
                    let mut s = String::new();
                    let mut it = inner.chars();
                    while let Some(c) = it.next() {
                        s.push(if c == '\\' { it.next().map(unescape).unwrap_or('\\') } else { c });
                    }
                    s
                } else {
                    inner.to_string()
                }
            }
            _ => v.to_string(),
        };
        out.push((k.to_string(), value));
    }
    out
}

/// `text` (an environment file) with `settings` in place of its lines for those keys, the others
/// kept as they are; keys it lacks are appended.
pub fn set_in_environment_file(text: &str, settings: &[(&str, String)]) -> String {
    let mut out = String::new();
    let mut done = vec![false; settings.len()];
    for line in text.lines() {
        let key = line.split_once('=').map(|(k, _)| k.trim()).filter(|k| !k.starts_with(['#', ';']));
        match key.and_then(|k| settings.iter().position(|(s, _)| *s == k)) {
            Some(i) => {
                out.push_str(&format!("{}={}\n", settings[i].0, settings[i].1));
                done[i] = true;
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (i, (k, v)) in settings.iter().enumerate() {
        if !done[i] {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unit the rdmig package installs.
    const PACKAGED: &str = include_str!("../../packaging/rdmig/rdmig-agent.service");
    /// The settings file it installs.
    const PACKAGED_ENV: &str = include_str!("../../packaging/rdmig/agent.env");

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_packaged_unit_starts_the_agent_with_the_nodes_settings() {
        let svc = Service::parse(Path::new("rdmig-agent.service"), PACKAGED).unwrap();
        assert_eq!(svc.program(), Path::new("/usr/bin/rdmig"));
        assert_eq!(svc.environment_files, vec![(PathBuf::from("/etc/rdmig/agent.env"), false)]);
        assert!(svc.ignored.iter().any(|k| k == "Restart"));
        let node = set_in_environment_file(
            PACKAGED_ENV,
            &[
                ("RDMIG_LISTEN", "10.99.0.2:7800".into()),
                ("RDMIG_RDMA_ADDR", "10.0.1.12".into()),
                ("RDMIG_NUMBER_RANGE", "2/3".into()),
                ("RDMIG_TLS_DIR", "/mnt/node/tls".into()),
                ("RDMIG_ALLOW_PEERS", "node1,node2,node3".into()),
                ("RDMIG_WORK_DIR", "/tmp/rdmig-agent".into()),
            ],
        );
        let v: BTreeMap<String, String> = parse_environment_file(&node).into_iter().collect();
        assert_eq!(
            svc.argv(&v),
            ["/usr/bin/rdmig", "agent", "--listen", "10.99.0.2:7800", "--rdma-addr", "10.0.1.12", "--number-range", "2/3", "--work-dir", "/tmp/rdmig-agent",]
        );
        // The packaged journal is rdmig's default one, in the unit's StateDirectory.
        assert_eq!(v["RDMIG_JOURNAL"], rdmig::journal::DEFAULT_PATH);
        assert!(svc.ignored.iter().any(|k| k == "StateDirectory") && PACKAGED.contains("\nStateDirectory=rdmig\n"));
        // Every other line of the packaged file stays, comments included.
        assert!(node.contains("# More `rdmig agent` flags") && node.contains("RDMIG_AGENT_OPTS=\n"));
        // $RDMIG_AGENT_OPTS splits into words.
        let mut v2 = v.clone();
        v2.insert("RDMIG_AGENT_OPTS".into(), " --keep-images  --rdma-device rxe1 ".into());
        assert_eq!(svc.argv(&v2)[10..], ["--keep-images", "--rdma-device", "rxe1"]);
        // The agent reads its TLS directory and peers from the environment the unit gives it.
        assert_eq!(v["RDMIG_TLS_DIR"], "/mnt/node/tls");
        assert_eq!(v["RDMIG_ALLOW_PEERS"], "node1,node2,node3");
    }

    #[test]
    fn expansion_follows_systemd() {
        let unit = "[Unit]\nExecStart=/not/this\n[Service]\nEnvironment=A=1 \"B=two words\"\n\
                    ExecStart=-/bin/prog \"${B}\" $B x${A}y ${UNSET} '$B' $$A \\\n  last\n";
        let svc = Service::parse(Path::new("t"), unit).unwrap();
        let v: BTreeMap<String, String> = svc.environment.iter().cloned().collect();
        assert_eq!(v, vars(&[("A", "1"), ("B", "two words")]));
        assert_eq!(svc.argv(&v), ["/bin/prog", "two words", "two", "words", "x1y", "", "two", "words", "$A", "last"]);
    }

    #[test]
    fn environment_files() {
        let t = "# c\n; c\nA=1\n  B = spaced  \nC=\"q \\\"x\\\" y\"\nD='s $x'\nnot a line\n9X=bad\nE=\n";
        assert_eq!(
            parse_environment_file(t),
            [("A", "1"), ("B", "spaced"), ("C", "q \"x\" y"), ("D", "s $x"), ("E", "")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(set_in_environment_file("# x\nA=1\nB=2\n", &[("B", "3".into()), ("C", "4".into())]), "# x\nA=1\nB=3\nC=4\n");
    }

    #[test]
    fn what_the_lab_cannot_do_is_refused() {
        for (unit, why) in [
            ("[Service]\nType=oneshot\n", "no ExecStart"),
            ("[Service]\nExecStart=/a\nExecStart=/b\n", "2 ExecStart"),
            ("[Service]\nExecStart=@/a b\n", "prefix"),
            ("[Service]\nExecStart=/a %n\n", "specifiers"),
            ("[Service]\nExecStart=a b\n", "absolute program"),
            ("[Service]\nExecStart=/a \"b\n", "unterminated"),
            ("[Service]\nEnvironmentFile=rel\nExecStart=/a\n", "not absolute"),
        ] {
            let e = Service::parse(Path::new("u"), unit).unwrap_err().to_string();
            assert!(e.contains(why), "{unit:?}: {e}");
        }
    }
}
