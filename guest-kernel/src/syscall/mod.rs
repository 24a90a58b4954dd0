//! System calls: Linux x86-64 numbers dispatched to `sys_<name>` handlers returning
//! `Result<u64, Errno>`; errors go back to user space as `-errno` in rax.
//!
//! Both entry paths (`syscall` through LSTAR, and this host's #PF at LSTAR) arrive in [`dispatch`] with the
//! user registers in a [`TrapFrame`]: number in rax, arguments in rdi, rsi, rdx, r10, r8, r9.
#![deny(unsafe_code)]

mod args;
pub mod file;
mod fsops;
mod memory;
mod misc;
mod mount;
pub use misc::{UNAME_RELEASE, UNAME_VERSION};
mod epoll;
mod net;
mod path;
mod poll;
mod process;
mod sched;
pub mod thread;
mod vsock;

pub use file::copy_to_user;

use crate::arch::trap::TrapFrame;
use crate::kprintln;
use kcore::errno::Errno;
use kcore::fmt::Dec;

/// The outcome of a system call.
pub type SysResult = Result<u64, Errno>;

/// Runs the system call in `frame` and stores its result in rax; while microvm traces system calls,
/// through the trace ring (`drivers/trace.rs`: one predictable branch when tracing is off).
pub fn dispatch(frame: &mut TrapFrame) {
    if crate::drivers::trace::on() {
        crate::drivers::trace::traced(frame, run);
    } else {
        run(frame);
    }
}

/// Runs the system call in `frame` and stores its result in rax.
fn run(frame: &mut TrapFrame) {
    let a = [
        frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9,
    ];
    let nr = frame.rax;
    // Kept for a restart (Linux's orig_ax), and marks the frame as a system call's for signal delivery.
    frame.vector = crate::arch::trap::SYSCALL_VECTOR;
    frame.error = nr;
    let r = match nr {
        41..=55 | 288 if vsock::owns(nr, &a) => vsock::dispatch(nr, &a),
        0 => file::sys_read(int(a[0]), a[1], a[2]),
        1 => file::sys_write(int(a[0]), a[1], a[2]),
        2 => path::sys_open(a[0], a[1] as u32, a[2] as u32),
        3 => file::sys_close(int(a[0])),
        4 => path::sys_stat(a[0], a[1], false),
        5 => file::sys_fstat(int(a[0]), a[1]),
        6 => path::sys_stat(a[0], a[1], true),
        7 => poll::sys_poll(a[0], a[1], int(a[2])),
        8 => file::sys_lseek(int(a[0]), int(a[1]), a[2] as u32),
        9 => memory::sys_mmap(a[0], a[1], a[2] as u32, a[3] as u32, int(a[4]), a[5]),
        10 => memory::sys_mprotect(a[0], a[1], a[2] as u32),
        11 => memory::sys_munmap(a[0], a[1]),
        12 => memory::sys_brk(a[0]),
        17 => file::sys_pread64(int(a[0]), a[1], a[2], int(a[3])),
        18 => file::sys_pwrite64(int(a[0]), a[1], a[2], int(a[3])),
        25 => memory::sys_mremap(a[0], a[1], a[2], a[3] as u32, a[4]),
        26 => memory::sys_msync(a[0], a[1], a[2] as u32),
        27 => memory::sys_mincore(a[0], a[1], a[2]),
        28 => memory::sys_madvise(a[0], a[1], a[2] as u32),
        13 => process::sys_rt_sigaction(a[0] as u32, a[1], a[2], a[3]),
        14 => process::sys_rt_sigprocmask(a[0] as u32, a[1], a[2], a[3]),
        15 => process::sys_rt_sigreturn(frame),
        127 => process::sys_rt_sigpending(a[0], a[1]),
        128 => process::sys_rt_sigtimedwait(a[0], a[1], a[2], a[3]),
        130 => process::sys_rt_sigsuspend(a[0], a[1]),
        16 => file::sys_ioctl(int(a[0]), a[1] as u32, a[2]),
        19 => file::sys_readv(int(a[0]), a[1], a[2]),
        20 => file::sys_writev(int(a[0]), a[1], a[2]),
        21 => path::sys_access(a[0], a[1] as u32),
        22 => file::sys_pipe2(a[0], 0),
        24 => process::sys_sched_yield(),
        32 => file::sys_dup(int(a[0])),
        33 => file::sys_dup3(int(a[0]), int(a[1]), None),
        23 => poll::sys_select(a[0], a[1], a[2], a[3], a[4]),
        270 => poll::sys_pselect6(a[0], a[1], a[2], a[3], a[4], a[5]),
        271 => poll::sys_ppoll(a[0], a[1], a[2], a[3], a[4]),
        41 => net::sys_socket(a[0] as u32, a[1] as u32, a[2] as u32),
        42 => net::sys_connect(int(a[0]), a[1], a[2] as u32),
        43 => net::sys_accept4(int(a[0]), a[1], a[2], 0),
        44 => net::sys_sendto(int(a[0]), a[1], a[2], a[3] as u32, a[4], a[5] as u32),
        45 => net::sys_recvfrom(int(a[0]), a[1], a[2], a[3] as u32, a[4], a[5]),
        46 => net::sys_sendmsg(int(a[0]), a[1], a[2] as u32),
        47 => net::sys_recvmsg(int(a[0]), a[1], a[2] as u32),
        48 => net::sys_shutdown(int(a[0]), a[1] as u32),
        49 => net::sys_bind(int(a[0]), a[1], a[2] as u32),
        50 => net::sys_listen(int(a[0]), a[1] as i32),
        51 => net::sys_getsockname(int(a[0]), a[1], a[2]),
        52 => net::sys_getpeername(int(a[0]), a[1], a[2]),
        54 => net::sys_setsockopt(int(a[0]), a[1] as u32, a[2] as u32, a[3], a[4] as u32),
        55 => net::sys_getsockopt(int(a[0]), a[1] as u32, a[2] as u32, a[3], a[4]),
        288 => net::sys_accept4(int(a[0]), a[1], a[2], a[3] as u32),
        74 => file::sys_fsync(int(a[0]), false),
        75 => file::sys_fsync(int(a[0]), true),
        77 => file::sys_ftruncate(int(a[0]), a[1] as i64),
        76 => fsops::sys_truncate(a[0], a[1] as i64),
        82 => fsops::sys_renameat2(path::AT_FDCWD, a[0], path::AT_FDCWD, a[1], 0),
        83 => fsops::sys_mkdirat(path::AT_FDCWD, a[0], a[1] as u32),
        84 => fsops::sys_unlinkat(path::AT_FDCWD, a[0], 0x200),
        86 => fsops::sys_linkat(path::AT_FDCWD, a[0], path::AT_FDCWD, a[1], 0),
        87 => fsops::sys_unlinkat(path::AT_FDCWD, a[0], 0),
        88 => fsops::sys_symlinkat(a[0], path::AT_FDCWD, a[1]),
        90 => fsops::sys_fchmodat(path::AT_FDCWD, a[0], a[1] as u32),
        91 => fsops::sys_fchmod(int(a[0]), a[1] as u32),
        92 => fsops::sys_fchownat(path::AT_FDCWD, a[0], a[1] as u32, a[2] as u32, 0),
        93 => fsops::sys_fchown(int(a[0]), a[1] as u32, a[2] as u32),
        94 => fsops::sys_fchownat(path::AT_FDCWD, a[0], a[1] as u32, a[2] as u32, 0x100),
        95 => fsops::sys_umask(a[0] as u32),
        137 => fsops::sys_statfs(a[0], a[1]),
        138 => fsops::sys_fstatfs(int(a[0]), a[1]),
        162 => fsops::sys_sync(),
        258 => fsops::sys_mkdirat(int(a[0]), a[1], a[2] as u32),
        260 => fsops::sys_fchownat(int(a[0]), a[1], a[2] as u32, a[3] as u32, a[4] as u32),
        263 => fsops::sys_unlinkat(int(a[0]), a[1], a[2] as u32),
        264 => fsops::sys_renameat2(int(a[0]), a[1], int(a[2]), a[3], 0),
        265 => fsops::sys_linkat(int(a[0]), a[1], int(a[2]), a[3], a[4] as u32),
        266 => fsops::sys_symlinkat(a[0], int(a[1]), a[2]),
        268 => fsops::sys_fchmodat(int(a[0]), a[1], a[2] as u32),
        280 => fsops::sys_utimensat(int(a[0]), a[1], a[2], a[3] as u32),
        306 => fsops::sys_syncfs(int(a[0])),
        316 => fsops::sys_renameat2(int(a[0]), a[1], int(a[2]), a[3], a[4] as u32),
        72 => file::sys_fcntl(int(a[0]), a[1] as u32, a[2]),
        73 => file::sys_flock(int(a[0]), a[1] as u32),
        80 => path::sys_chdir(a[0]),
        81 => path::sys_fchdir(int(a[0])),
        292 => file::sys_dup3(int(a[0]), int(a[1]), Some(a[2] as u32)),
        293 => file::sys_pipe2(a[0], a[1] as u32),
        34 => process::sys_pause(),
        35 => process::sys_nanosleep(a[0], a[1]),
        56 => thread::sys_clone(frame, a[0], a[1], a[2], a[3], a[4]),
        57 => process::sys_fork(frame),
        58 => process::sys_vfork(frame),
        59 => process::sys_execve(frame, a[0], a[1], a[2]),
        61 => process::sys_wait4(a[0] as i32, a[1], a[2] as u32, a[3]),
        62 => process::sys_kill(a[0] as i32, a[1] as u32),
        109 => process::sys_setpgid(a[0] as i32, a[1] as i32),
        111 => process::sys_getpgid(0),
        112 => process::sys_setsid(),
        121 => process::sys_getpgid(a[0] as i32),
        124 => process::sys_getsid(a[0] as i32),
        157 => process::sys_prctl(a[0] as u32, a[1]),
        230 => process::sys_clock_nanosleep(a[0] as u32, a[1] as u32, a[2], a[3]),
        200 => process::sys_tkill(a[0] as i32, a[1] as u32),
        234 => process::sys_tgkill(a[0] as i32, a[1] as i32, a[2] as u32),
        39 => misc::sys_getpid(),
        60 => process::sys_exit(a[0] as i32),
        63 => misc::sys_uname(a[0]),
        79 => path::sys_getcwd(a[0], a[1]),
        89 => path::sys_readlink(a[0], a[1], a[2]),
        96 => misc::sys_gettimeofday(a[0]),
        102 | 104 | 107 | 108 => Ok(0), // getuid, getgid, geteuid, getegid: root
        110 => misc::sys_getppid(),
        131 => misc::sys_sigaltstack(a[0], a[1], frame.rsp),
        158 => misc::sys_arch_prctl(a[0] as u32, a[1]),
        165 => mount::sys_mount(a[0], a[1], a[2], a[3], a[4]),
        166 => mount::sys_umount2(a[0], a[1] as u32),
        169 => misc::sys_reboot(a[0] as u32, a[1] as u32, a[2] as u32),
        186 => thread::sys_gettid(),
        201 => misc::sys_time(a[0]),
        204 => misc::sys_sched_getaffinity(a[0], a[1], a[2]),
        217 => file::sys_getdents64(int(a[0]), a[1], a[2]),
        218 => thread::sys_set_tid_address(a[0]),
        219 => process::sys_restart_syscall(),
        228 => misc::sys_clock_gettime(a[0] as u32, a[1]),
        227 => misc::sys_clock_settime(a[0] as u32, a[1]),
        164 => misc::sys_settimeofday(a[0], a[1]),
        99 => misc::sys_sysinfo(a[0]),
        40 => file::sys_sendfile(int(a[0]), int(a[1]), a[2], a[3]),
        213 => epoll::sys_epoll_create(a[0] as i32),
        291 => epoll::sys_epoll_create1(a[0] as u32),
        233 => epoll::sys_epoll_ctl(int(a[0]), a[1] as u32, int(a[2]), a[3]),
        232 => epoll::sys_epoll_wait(int(a[0]), a[1], a[2] as i32 as i64, a[3] as i32 as i64),
        281 => epoll::sys_epoll_pwait(
            int(a[0]),
            a[1],
            a[2] as i32 as i64,
            a[3] as i32 as i64,
            a[4],
            a[5],
        ),
        231 => thread::sys_exit_group(a[0] as i32),
        202 => thread::sys_futex(a[0], a[1] as u32, a[2] as u32, a[3], a[4], a[5] as u32),
        274 => thread::sys_get_robust_list(a[0] as i32, a[1], a[2]),
        435 => thread::sys_clone3(frame, a[0], a[1]),
        257 => path::sys_openat(int(a[0]), a[1], a[2] as u32, a[3] as u32),
        262 => path::sys_newfstatat(int(a[0]), a[1], a[2], a[3] as u32),
        267 => path::sys_readlinkat(int(a[0]), a[1], a[2], a[3]),
        269 => path::sys_faccessat(int(a[0]), a[1], a[2] as u32, 0),
        439 => path::sys_faccessat(int(a[0]), a[1], a[2] as u32, a[3] as u32),
        332 => path::sys_statx(int(a[0]), a[1], a[2] as u32, a[3] as u32, a[4]),
        273 => thread::sys_set_robust_list(a[0], a[1]),
        302 => misc::sys_prlimit64(a[0], a[1] as u32, a[2], a[3]),
        318 => misc::sys_getrandom(a[0], a[1], a[2] as u32),
        98 => sched::sys_getrusage(a[0] as i32, a[1]),
        100 => sched::sys_times(a[0]),
        140 => sched::sys_getpriority(a[0] as u32, a[1] as u32),
        229 => sched::sys_clock_getres(a[0] as i32, a[1]),
        141 => sched::sys_setpriority(a[0] as u32, a[1] as u32, a[2] as i32),
        142 => sched::sys_sched_setparam(a[0] as i32, a[1]),
        143 => sched::sys_sched_getparam(a[0] as i32, a[1]),
        144 => sched::sys_sched_setscheduler(a[0] as i32, a[1] as i32, a[2]),
        145 => sched::sys_sched_getscheduler(a[0] as i32),
        314 => sched::sys_sched_setattr(a[0] as i32, a[1], a[2] as u32),
        315 => sched::sys_sched_getattr(a[0] as i32, a[1], a[2] as u32, a[3] as u32),
        146 => sched::sys_sched_get_priority(a[0] as i32, true),
        147 => sched::sys_sched_get_priority(a[0] as i32, false),
        _ => {
            log_unknown(nr);
            Err(Errno::ENOSYS)
        }
    };
    frame.rax = match r {
        Ok(v) => v,
        Err(e) => e.as_return(),
    };
    if TRACE.load(core::sync::atomic::Ordering::Relaxed) {
        kprintln!(
            "strace: pid {} syscall {} ({}, {}, {}) = {}",
            Dec(crate::proc::current_pid().0 as u64),
            Dec(nr),
            kcore::fmt::Hex(a[0]),
            kcore::fmt::Hex(a[1]),
            kcore::fmt::Hex(a[2]),
            kcore::fmt::Hex(frame.rax)
        );
    }
}

/// `strace` on the kernel command line: log every system call (pid, number, first arguments, result).
pub static TRACE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// An `int` argument (file descriptors, poll's timeout): Linux uses the low 32 bits of the register
/// only, and callers leave garbage above them (glibc's close passes whatever the upper half held).
fn int(reg: u64) -> i64 {
    reg as i32 as i64
}

fn log_unknown(nr: u64) {
    // rseq is probed by glibc, which falls back quietly.
    if nr != 334 {
        kprintln!(
            "syscall: {} not implemented (pid {})",
            Dec(nr),
            Dec(crate::proc::current_pid().0 as u64)
        );
    }
}
