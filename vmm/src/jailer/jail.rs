//! The jail itself: its root directory and what goes in it, the mount namespace and `pivot_root`, dropping
//! to the uid/gid without capabilities, and the final exec.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the jail could not be made or entered.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("jail directory {0} exists already")]
    Exists(PathBuf),
    #[error("cannot create {0}: {1}")]
    Create(PathBuf, #[source] std::io::Error),
    #[error("--file {0}: {1}")]
    File(PathBuf, #[source] std::io::Error),
    #[error("--file {0}: a file of that name is in the jail already")]
    Duplicate(PathBuf),
    #[error("cannot create the device node {0}: {1}")]
    Mknod(PathBuf, #[source] std::io::Error),
    #[error("cannot enter the jail: {0} failed: {1}")]
    Mount(&'static str, #[source] std::io::Error),
}

/// The uid and gid the VMM runs as.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

fn chown(path: &Path, owner: Owner) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
}

/// Creates `<jail_dir>/root`, refusing one that exists; returns it.
pub fn create_root(jail_dir: &Path) -> Result<PathBuf, JailError> {
    std::fs::create_dir_all(jail_dir).map_err(|e| JailError::Create(jail_dir.to_owned(), e))?;
    let root = jail_dir.join("root");
    match std::fs::create_dir(&root) {
        Ok(()) => Ok(root),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(JailError::Exists(root)),
        Err(e) => Err(JailError::Create(root, e)),
    }
}

/// Fills the jail's root: the exec file (owned by root, mode 0755) and the `libraries` it needs (at their
/// host paths, owned by root), each of `files` under its own name
/// (owned by `owner`), and `/dev/kvm`, `/dev/net/tun` (character devices with the host's numbers, mode
/// 0660, owned by `owner`). The root itself belongs to `owner` (the API socket and snapshot files are
/// created there).
pub fn populate(
    root: &Path,
    exec_file: &Path,
    exec_name: &Path,
    libraries: &[PathBuf],
    files: &[PathBuf],
    owner: Owner,
) -> Result<(), JailError> {
    let create = |p: &Path, e| JailError::Create(p.to_owned(), e);
    let exe = root.join(exec_name);
    std::fs::copy(exec_file, &exe).map_err(|e| create(&exe, e))?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| create(&exe, e))?;
    for lib in libraries {
        let dest = root.join(lib.strip_prefix("/").unwrap_or(lib));
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| create(dir, e))?;
        }
        std::fs::copy(lib, &dest).map_err(|e| create(&dest, e))?;
    }
    for file in files {
        let name = file.file_name().ok_or_else(|| {
            JailError::File(file.clone(), std::io::Error::other("not a file name"))
        })?;
        let dest = root.join(name);
        if dest.exists() {
            return Err(JailError::Duplicate(file.clone()));
        }
        std::fs::copy(file, &dest).map_err(|e| JailError::File(file.clone(), e))?;
        chown(&dest, owner).map_err(|e| JailError::File(file.clone(), e))?;
    }
    for (host, dir) in [("/dev/kvm", "dev"), ("/dev/net/tun", "dev/net")] {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).map_err(|e| create(&dir, e))?;
        let node = root.join(&host[1..]);
        let rdev = std::fs::metadata(host)
            .map_err(|e| JailError::Mknod(node.clone(), e))?
            .rdev();
        let c = cstr(&node);
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o660, rdev) } != 0 {
            return Err(JailError::Mknod(node, std::io::Error::last_os_error()));
        }
        chown(&node, owner).map_err(|e| JailError::Mknod(node.clone(), e))?;
    }
    chown(root, owner).map_err(|e| create(root, e))?;
    Ok(())
}

fn check(what: &'static str, r: libc::c_int) -> Result<(), JailError> {
    if r != 0 {
        return Err(JailError::Mount(what, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A new mount namespace whose root is `root`: nothing of the host's file system stays reachable.
pub fn pivot_into(root: &Path) -> Result<(), JailError> {
    let root_c = cstr(root);
    // SAFETY: unshare only gives this process a private copy of its mount table.
    check("unshare(CLONE_NEWNS)", unsafe {
        libc::unshare(libc::CLONE_NEWNS)
    })?;
    // SAFETY: the pointers are NUL-terminated strings (or null where mount accepts it) valid for each
    // call; these change only this process's own mount namespace.
    unsafe {
        // No mount event travels back to the host's namespace.
        check(
            "making / a slave mount",
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_SLAVE | libc::MS_REC,
                std::ptr::null(),
            ),
        )?;
        // pivot_root needs the new root to be a mount point.
        check(
            "bind-mounting the jail root",
            libc::mount(
                root_c.as_ptr(),
                root_c.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ),
        )?;
        check("chdir to the jail root", libc::chdir(root_c.as_ptr()))?;
        // The old root is stacked under the new one at "."; detaching it leaves only the jail.
        check(
            "pivot_root",
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
        )?;
        check(
            "unmounting the old root",
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
        )?;
        check("chdir to /", libc::chdir(c"/".as_ptr()))?;
    }
    Ok(())
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// Drops every capability from the bounding set, then becomes `owner` (no supplementary groups), which
/// empties the permitted and effective sets; the inheritable and ambient sets are emptied too.
pub fn drop_privileges(owner: Owner) -> Result<(), crate::JailerError> {
    use crate::JailerError::Privileges;
    let err = |what| Privileges(what, std::io::Error::last_os_error());
    // /proc is gone after pivot_root: cap_last_cap was read before.
    let last = LAST_CAP.with(|l| *l);
    for cap in 0..=last {
        // SAFETY: PR_CAPBSET_DROP takes a capability number; EINVAL for one the kernel lacks is ignored.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(err("dropping the bounding set"));
        }
    }
    // SAFETY: these calls change only this process's credentials.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(err("setgroups"));
        }
        if libc::setresgid(owner.gid, owner.gid, owner.gid) != 0 {
            return Err(err("setresgid"));
        }
        if libc::setresuid(owner.uid, owner.uid, owner.uid) != 0 {
            return Err(err("setresuid"));
        }
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) != 0
        {
            return Err(err("clearing the ambient set"));
        }
    }
    // capset(2) with version 3: two 32-bit words per set, all zero.
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data are valid, correctly laid out structures for version 3 of capset.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if r != 0 {
        return Err(err("capset"));
    }
    Ok(())
}

thread_local! {
    /// [`last_cap`], read at start while /proc is still there.
    static LAST_CAP: u32 = last_cap();
}

/// Reads what [`drop_privileges`] needs from /proc while it is still visible.
pub fn prepare() {
    LAST_CAP.with(|_| ());
}

/// Execs `exe` with `args` and an empty environment; returns only on failure.
pub fn exec(exe: &Path, args: &[OsString]) -> std::io::Error {
    let exe_c = cstr(exe);
    let name = exe
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let mut argv_c = vec![CString::new(name).unwrap_or_default()];
    for a in args {
        match CString::new(a.as_bytes()) {
            Ok(c) => argv_c.push(c),
            Err(_) => return std::io::Error::other("an argument holds a NUL byte"),
        }
    }
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: `exe_c`, `argv` and `envp` are NUL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(exe_c.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    std::io::Error::last_os_error()
}

/// The child a [`forward_stop_signals`] handler sends to.
static CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: kill is async-signal-safe.
    unsafe { libc::kill(pid, sig) };
}

/// Passes SIGINT and SIGTERM on to `child`.
pub fn forward_stop_signals(child: libc::pid_t) {
    CHILD.store(child, std::sync::atomic::Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `forward` only makes an async-signal-safe call.
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
}
