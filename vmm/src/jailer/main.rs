//! `microvm-jailer`: starts `microvm` inside a jail, as Firecracker's `jailer` starts Firecracker.
//!
//! Run as root. In order: closes every inherited file descriptor above 2, clears the environment, creates
//! `<chroot-base-dir>/<exec-file name>/<id>/root` (refusing one that exists), copies the exec file (with
//! its loader and shared libraries at their host paths, when it is dynamically linked: [`libs`]) and every
//! `--file` into it and creates `/dev/kvm` and `/dev/net/tun` there (mknod, owned by the uid/gid), puts
//! itself in the cgroups asked for ([`cgroup`]), sets the resource limits, enters the network namespace,
//! optionally a new PID namespace (forking: the child is PID 1 there), makes a new mount namespace and
//! `pivot_root`s into the jail ([`jail`]), drops to the uid/gid with every capability gone (bounding set
//! included), and execs the exec file with the arguments after `--` and an empty environment.
//!
//! Every failure is one line on stderr and exit status 1.

mod cgroup;
mod jail;
mod libs;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// `setrlimit`'s resource type: `__rlimit_resource_t` in glibc, a plain `c_int` in musl.
#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

/// Why the jail could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum JailerError {
    #[error("--id {0:?}: use 1 to 64 letters, digits and '-'")]
    BadId(String),
    #[error("--exec-file {0}: {1}")]
    ExecFile(PathBuf, #[source] std::io::Error),
    #[error("--resource-limit {0:?}: use fsize=N or no-file=N")]
    BadLimit(String),
    #[error("cannot set the {0} resource limit: {1}")]
    SetLimit(&'static str, #[source] std::io::Error),
    #[error("--netns {0}: {1}")]
    Netns(PathBuf, #[source] std::io::Error),
    #[error("cannot create a new PID namespace: {0}")]
    PidNs(#[source] std::io::Error),
    #[error("cannot fork: {0}")]
    Fork(#[source] std::io::Error),
    #[error("cannot daemonize: {0}")]
    Daemonize(#[source] std::io::Error),
    #[error("cannot drop privileges: {0} failed: {1}")]
    Privileges(&'static str, #[source] std::io::Error),
    #[error("cannot exec {0}: {1}")]
    Exec(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Jail(#[from] jail::JailError),
    #[error("--exec-file {0}")]
    Libs(#[from] libs::LibsError),
}

/// Jails and starts a microvm.
#[derive(Parser, Debug)]
#[command(name = "microvm-jailer", version, about)]
struct Cli {
    /// The microVM's id: names its jail directory and cgroup (1 to 64 letters, digits and '-').
    #[arg(long)]
    id: String,
    /// The microvm binary; copied into the jail and executed there.
    #[arg(long, value_name = "PATH")]
    exec_file: PathBuf,
    /// The user id microvm runs as.
    #[arg(long)]
    uid: u32,
    /// The group id microvm runs as.
    #[arg(long)]
    gid: u32,
    /// Where jails are made: <DIR>/<exec file name>/<id>/root.
    #[arg(long, value_name = "DIR", default_value = "/srv/jailer")]
    chroot_base_dir: PathBuf,
    /// Join this network namespace (e.g. /var/run/netns/NAME) before starting.
    #[arg(long, value_name = "PATH")]
    netns: Option<PathBuf>,
    /// Start microvm as PID 1 of a new PID namespace (the jailer waits for it, or exits at once with
    /// --daemonize, leaving its pid in <jail>/<exec file name>.pid).
    #[arg(long)]
    new_pid_ns: bool,
    /// Set a cgroup file, e.g. memory.limit_in_bytes=268435456 (v1) or memory.max=268435456 (v2);
    /// repeatable. The controller is the part before the first dot.
    #[arg(long = "cgroup", value_name = "FILE=VALUE", value_parser = cgroup::Setting::parse)]
    cgroups: Vec<cgroup::Setting>,
    /// The cgroup hierarchy to use: 1 (one per controller) or 2 (unified).
    #[arg(long, value_name = "1|2", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    cgroup_version: u8,
    /// fsize=N (largest file in bytes) or no-file=N (open files); repeatable, or comma-separated.
    #[arg(long = "resource-limit", value_name = "NAME=N")]
    resource_limits: Vec<String>,
    /// Detach: a new session, standard input and output on /dev/null.
    #[arg(long)]
    daemonize: bool,
    /// A file microvm needs (kernel, initrd, drive image): copied into the jail's root under its own name,
    /// owned by the uid/gid. Repeatable.
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// The arguments of microvm, after `--`; paths are seen from inside the jail (`/vmlinux`).
    #[arg(last = true, value_name = "MICROVM ARGS")]
    args: Vec<OsString>,
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The resource limits asked for, as (resource, name, value).
fn parse_limits(specs: &[String]) -> Result<Vec<(Resource, &'static str, u64)>, JailerError> {
    let mut out = Vec::new();
    for spec in specs {
        for item in spec.split(',') {
            let bad = || JailerError::BadLimit(item.to_owned());
            let (name, value) = item.split_once('=').ok_or_else(bad)?;
            let value: u64 = value.parse().map_err(|_| bad())?;
            match name {
                "fsize" => out.push((libc::RLIMIT_FSIZE, "fsize", value)),
                "no-file" => out.push((libc::RLIMIT_NOFILE, "no-file", value)),
                _ => return Err(bad()),
            }
        }
    }
    Ok(out)
}

fn last_os_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Closes every descriptor above 2.
fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; nothing in this process holds one above 2 yet (it runs
    // before anything is opened).
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if r == 0 {
        return;
    }
    // Older kernels: one by one, from the list in /proc (collected first: reading it opens a descriptor).
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd > 2)
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        // SAFETY: as above; a descriptor already gone only makes close fail.
        unsafe { libc::close(fd) };
    }
}

fn set_limits(limits: &[(Resource, &'static str, u64)]) -> Result<(), JailerError> {
    for &(resource, name, value) in limits {
        let rl = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: `rl` is a valid rlimit for the duration of the call.
        if unsafe { libc::setrlimit(resource, &rl) } != 0 {
            return Err(JailerError::SetLimit(name, last_os_error()));
        }
    }
    Ok(())
}

fn join_netns(path: &PathBuf) -> Result<(), JailerError> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).map_err(|e| JailerError::Netns(path.clone(), e))?;
    // SAFETY: setns on a descriptor we own; CLONE_NEWNET makes the kernel check it is a network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(JailerError::Netns(path.clone(), last_os_error()));
    }
    Ok(())
}

/// A new session, standard I/O on /dev/null (opened before the jail hides the host's /dev).
fn daemonize(dev_null: &std::fs::File) -> Result<(), JailerError> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsid only changes this process's session; it fails for a group leader, reported.
    if unsafe { libc::setsid() } < 0 {
        return Err(JailerError::Daemonize(last_os_error()));
    }
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors from one we own.
        if unsafe { libc::dup2(dev_null.as_raw_fd(), fd) } < 0 {
            return Err(JailerError::Daemonize(last_os_error()));
        }
    }
    Ok(())
}

/// Forks into a new PID namespace. Returns in the child (PID 1 there); the parent writes the child's pid
/// to `pid_file`, then exits at once (`detach`) or waits and exits with the child's status.
fn enter_pid_ns(pid_file: &std::path::Path, detach: bool) -> Result<(), JailerError> {
    // SAFETY: unshare only changes the namespace this process's future children are born in.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(JailerError::PidNs(last_os_error()));
    }
    // SAFETY: the jailer is single-threaded, so the child may go on running Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(JailerError::Fork(last_os_error()));
    }
    if pid == 0 {
        return Ok(());
    }
    let _ = std::fs::write(pid_file, format!("{pid}\n"));
    if detach {
        std::process::exit(0);
    }
    // Pass SIGINT and SIGTERM on, so the VM stops as it would without the jailer.
    jail::forward_stop_signals(pid);
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && last_os_error().kind() != std::io::ErrorKind::Interrupted {
            std::process::exit(1);
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<(), JailerError> {
    if !valid_id(&cli.id) {
        return Err(JailerError::BadId(cli.id));
    }
    let limits = parse_limits(&cli.resource_limits)?;
    std::fs::metadata(&cli.exec_file)
        .map_err(|e| JailerError::ExecFile(cli.exec_file.clone(), e))?;
    let exec_name = cli
        .exec_file
        .file_name()
        .map(PathBuf::from)
        .ok_or_else(|| {
            JailerError::ExecFile(
                cli.exec_file.clone(),
                std::io::Error::other("not a file name"),
            )
        })?;
    let owner = jail::Owner {
        uid: cli.uid,
        gid: cli.gid,
    };
    let jail_dir = cli.chroot_base_dir.join(&exec_name).join(&cli.id);
    jail::prepare();
    let root = jail::create_root(&jail_dir)?;
    let libraries = libs::needed_files(&cli.exec_file)?;
    jail::populate(
        &root,
        &cli.exec_file,
        &exec_name,
        &libraries,
        &cli.files,
        owner,
    )?;
    let cgroup_name = PathBuf::from(&exec_name).join(&cli.id);
    cgroup::join(cli.cgroup_version, &cgroup_name, &cli.cgroups)?;
    set_limits(&limits)?;
    if let Some(netns) = &cli.netns {
        join_netns(netns)?;
    }
    let dev_null = if cli.daemonize {
        Some(
            std::fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(JailerError::Daemonize)?,
        )
    } else {
        None
    };
    if cli.new_pid_ns {
        let mut pid_file = exec_name.clone().into_os_string();
        pid_file.push(".pid");
        enter_pid_ns(&jail_dir.join(pid_file), cli.daemonize)?;
    }
    if let Some(dev_null) = &dev_null {
        daemonize(dev_null)?;
    }
    drop(dev_null);
    jail::pivot_into(&root)?;
    jail::drop_privileges(owner)?;
    let exe = PathBuf::from("/").join(&exec_name);
    Err(JailerError::Exec(exe.clone(), jail::exec(&exe, &cli.args)))
}

fn main() -> ExitCode {
    close_inherited_fds();
    let names: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for k in names {
        // Single-threaded: nothing reads the environment concurrently.
        std::env::remove_var(k);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let msg = e.to_string();
            let problem: Vec<&str> = msg
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!(
                "microvm-jailer: {}",
                problem.join(" ").trim_start_matches("error: ")
            );
            return ExitCode::from(1);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("microvm-jailer: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_limits() {
        assert!(valid_id("vm-1"));
        assert!(!valid_id(""));
        assert!(!valid_id("../x"));
        assert!(!valid_id(&"a".repeat(65)));
        let l = parse_limits(&["fsize=10,no-file=20".into()]).unwrap();
        assert_eq!(
            l,
            [
                (libc::RLIMIT_FSIZE, "fsize", 10),
                (libc::RLIMIT_NOFILE, "no-file", 20)
            ]
        );
        assert!(parse_limits(&["fsize=x".into()]).is_err());
        assert!(parse_limits(&["nproc=1".into()]).is_err());
    }
}
