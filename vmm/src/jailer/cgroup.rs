//! cgroups for the jailed VMM: `<mount>/<exec file name>/<id>` in each hierarchy a `--cgroup FILE=VALUE`
//! names. Version 1: the hierarchy of the controller (the part of FILE before the first dot, e.g.
//! `memory.limit_in_bytes` in `/sys/fs/cgroup/memory`). Version 2: the unified hierarchy (the `cgroup2`
//! mount), where the controller is first enabled in `cgroup.subtree_control` of every ancestor. The jailer
//! writes the values, then moves itself in, before it forks or execs: microvm and all its threads are
//! charged from their first page.

use std::path::{Path, PathBuf};

/// A `--cgroup FILE=VALUE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub file: String,
    pub value: String,
}

impl Setting {
    /// Parses `FILE=VALUE` (FILE a plain name such as `memory.max`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((file, value))
                if file.contains('.')
                    && !file.contains('/')
                    && !file.starts_with('.')
                    && !value.is_empty() =>
            {
                Ok(Setting {
                    file: file.to_owned(),
                    value: value.to_owned(),
                })
            }
            _ => Err(format!("{s:?} is not FILE=VALUE with FILE like memory.max")),
        }
    }

    fn controller(&self) -> &str {
        self.file.split('.').next().unwrap_or_default()
    }
}

/// Why the cgroup could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read /proc/mounts: {0}")]
    Mounts(#[source] std::io::Error),
    #[error("no cgroup v1 hierarchy has the {0} controller")]
    NoV1Controller(String),
    #[error("no cgroup v2 hierarchy is mounted")]
    NoV2,
    #[error("the cgroup v2 controller {0} is not available in {1} (it has: {2})")]
    NoV2Controller(String, PathBuf, String),
    #[error("cgroup {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
}

/// The mount points of cgroup file systems of type `fstype`, with their mount options.
fn mounts(fstype: &str) -> Result<Vec<(PathBuf, Vec<String>)>, CgroupError> {
    let text = std::fs::read_to_string("/proc/mounts").map_err(CgroupError::Mounts)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[2] == fstype).then(|| {
                (
                    PathBuf::from(f[1]),
                    f[3].split(',').map(str::to_owned).collect(),
                )
            })
        })
        .collect())
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|e| CgroupError::Io(path.to_owned(), e))
}

fn create(dir: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(dir).map_err(|e| CgroupError::Io(dir.to_owned(), e))
}

/// Creates the cgroups `name` (relative) for `settings` in hierarchy `version`, writes the values and
/// moves this process in. Nothing to do without settings.
pub fn join(version: u8, name: &Path, settings: &[Setting]) -> Result<(), CgroupError> {
    if settings.is_empty() {
        return Ok(());
    }
    let pid = std::process::id().to_string();
    if version == 1 {
        let all = mounts("cgroup")?;
        let mut joined: Vec<PathBuf> = Vec::new();
        for s in settings {
            let c = s.controller();
            let (mnt, _) = all
                .iter()
                .find(|(_, opts)| opts.iter().any(|o| o == c))
                .ok_or_else(|| CgroupError::NoV1Controller(c.to_owned()))?;
            let dir = mnt.join(name);
            create(&dir)?;
            write(&dir.join(&s.file), &s.value)?;
            if !joined.contains(&dir) {
                joined.push(dir);
            }
        }
        for dir in joined {
            write(&dir.join("cgroup.procs"), &pid)?;
        }
        return Ok(());
    }
    let (mnt, _) = mounts("cgroup2")?
        .into_iter()
        .next()
        .ok_or(CgroupError::NoV2)?;
    let available = std::fs::read_to_string(mnt.join("cgroup.controllers"))
        .map_err(|e| CgroupError::Io(mnt.join("cgroup.controllers"), e))?;
    let mut controllers: Vec<&str> = settings.iter().map(Setting::controller).collect();
    controllers.sort_unstable();
    controllers.dedup();
    // Files every cgroup has (cgroup.max.depth, cgroup.freeze...) need no controller.
    controllers.retain(|c| *c != "cgroup");
    for c in &controllers {
        if !available.split_whitespace().any(|a| a == *c) {
            return Err(CgroupError::NoV2Controller(
                (*c).to_owned(),
                mnt.clone(),
                available.trim().to_owned(),
            ));
        }
    }
    // Enable the controllers from the top down to the new cgroup's parent.
    let mut dir = mnt.clone();
    for part in name.components() {
        for c in &controllers {
            write(&dir.join("cgroup.subtree_control"), &format!("+{c}"))?;
        }
        dir.push(part);
        create(&dir)?;
    }
    for s in settings {
        write(&dir.join(&s.file), &s.value)?;
    }
    write(&dir.join("cgroup.procs"), &pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        let s = Setting::parse("memory.max=1000").unwrap();
        assert_eq!(s.controller(), "memory");
        assert_eq!(s.value, "1000");
        assert!(Setting::parse("memory").is_err());
        assert!(Setting::parse("max=1").is_err());
        assert!(Setting::parse("../memory.max=1").is_err());
        assert!(Setting::parse("memory.max=").is_err());
    }
}
