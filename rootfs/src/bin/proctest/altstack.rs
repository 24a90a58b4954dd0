//! proctest's alternate signal stack cases (sigaltstack(2)): setting, querying and its errors, a
//! handler with SA_ONSTACK running on it (SS_ONSTACK reported there, EPERM for a change), one without
//! it not, SS_AUTODISARM, fork inheriting it, execve clearing it, and a stack overflow caught by a
//! SIGSEGV handler on it.

use super::{errno, exit, fork, wait};
use std::sync::atomic::{AtomicU64, Ordering};

const SIZE: usize = 64 * 1024;
/// linux/signal.h (not in the libc crate).
const SS_AUTODISARM: i32 = 1 << 31;

/// sigaltstack(new, old): (result, errno, old ss_sp, old ss_flags, old ss_size).
fn altstack(new: Option<(u64, i32, usize)>) -> (i32, i32, u64, i32, usize) {
    // SAFETY: valid stack_t pointers (the new one only read).
    unsafe {
        let mut old: libc::stack_t = std::mem::zeroed();
        let ss = new.map(|(sp, flags, size)| libc::stack_t {
            ss_sp: sp as *mut libc::c_void,
            ss_flags: flags,
            ss_size: size,
        });
        let r = libc::sigaltstack(
            ss.as_ref().map_or(std::ptr::null(), |s| s as *const _),
            &mut old,
        );
        let e = if r < 0 { errno() } else { 0 };
        (r, e, old.ss_sp as u64, old.ss_flags, old.ss_size)
    }
}

/// What the last handler saw: whether a local lay on our alternate stack, the ss_flags sigaltstack
/// reported there, and the errno of an attempt to change the stack there (0: it worked).
static ON_ALT: AtomicU64 = AtomicU64::new(0);
static FLAGS_IN: AtomicU64 = AtomicU64::new(0);
static CHANGE_IN: AtomicU64 = AtomicU64::new(0);
static ALT_BASE: AtomicU64 = AtomicU64::new(0);

fn on_alt(addr: u64) -> bool {
    let base = ALT_BASE.load(Ordering::SeqCst);
    addr >= base && addr < base + SIZE as u64
}

extern "C" fn observe(_sig: libc::c_int) {
    let local = 0u8;
    let addr = std::hint::black_box(&local) as *const u8 as u64;
    ON_ALT.store(on_alt(addr) as u64, Ordering::SeqCst);
    let (_, _, _, flags, _) = altstack(None);
    FLAGS_IN.store(flags as u32 as u64, Ordering::SeqCst);
    let (_, e, _, _, _) = altstack(Some((ALT_BASE.load(Ordering::SeqCst), 0, SIZE)));
    CHANGE_IN.store(e as u64, Ordering::SeqCst);
}

extern "C" fn overflowed(_sig: libc::c_int) {
    let local = 0u8;
    let addr = std::hint::black_box(&local) as *const u8 as u64;
    exit(if on_alt(addr) { 42 } else { 43 });
}

fn handle(sig: i32, handler: extern "C" fn(libc::c_int), onstack: bool) {
    // SAFETY: a zeroed sigaction with a plain handler is valid.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as libc::sighandler_t;
        sa.sa_flags = if onstack { libc::SA_ONSTACK } else { 0 };
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Raises `sig` and reports what its handler saw.
fn raise_and_observe(sig: i32) -> String {
    ON_ALT.store(9, Ordering::SeqCst);
    // SAFETY: signalling ourselves.
    unsafe { libc::raise(sig) };
    format!(
        "local on the alternate stack {}, ss_flags there {:#x}, changing it there errno {}",
        ON_ALT.load(Ordering::SeqCst) == 1,
        FLAGS_IN.load(Ordering::SeqCst),
        CHANGE_IN.load(Ordering::SeqCst)
    )
}

/// Recurses until the stack overflows (4 KiB a frame; `limit` is never reached).
#[inline(never)]
fn recurse(n: u64, limit: u64) -> u64 {
    let a = [n as u8; 4096];
    std::hint::black_box(&a);
    if n == limit {
        return 0;
    }
    recurse(n + 1, limit).wrapping_add(a[(n % 4096) as usize] as u64)
}

/// `proctest altstack-after-exec ADDR`: whether the alternate stack is still the one at ADDR.
pub fn after_exec(addr: &str) {
    let (_, _, sp, _, _) = altstack(None);
    println!(
        "proctest: sigaltstack: after execve the stack set before is gone: {}",
        sp.to_string() != addr
    );
}

pub fn altstack_cases(out: &dyn Fn(String), me: &str) {
    let c = fork();
    if c == 0 {
        let stack = vec![1u8; SIZE];
        let base = stack.as_ptr() as u64;
        ALT_BASE.store(base, Ordering::SeqCst);
        let set = altstack(Some((base, 0, SIZE)));
        let (_, _, sp, flags, size) = altstack(None);
        out(format!(
            "sigaltstack: set {:?}, reads back ours {}, flags {flags}",
            (set.0, set.1),
            sp == base && size == SIZE
        ));
        let e = |r: (i32, i32, u64, i32, usize)| (r.0, r.1);
        out(format!(
            "sigaltstack: size 2047 {:?}, flags 4 {:?}, SS_ONSTACK as flags {:?}, SS_DISABLE {:?}",
            e(altstack(Some((base, 0, 2047)))),
            e(altstack(Some((base, 4, SIZE)))),
            e(altstack(Some((base, libc::SS_ONSTACK, SIZE)))),
            e(altstack(Some((0, libc::SS_DISABLE, 0))))
        ));
        let (_, _, sp, flags, size) = altstack(None);
        out(format!(
            "sigaltstack: disabled: sp {sp}, flags {flags}, size {size}"
        ));
        altstack(Some((base, 0, SIZE)));
        handle(libc::SIGUSR1, observe, true);
        handle(libc::SIGUSR2, observe, false);
        out(format!(
            "sigaltstack: SA_ONSTACK handler: {}",
            raise_and_observe(libc::SIGUSR1)
        ));
        out(format!(
            "sigaltstack: handler without SA_ONSTACK: {}",
            raise_and_observe(libc::SIGUSR2)
        ));
        altstack(Some((base, SS_AUTODISARM, SIZE)));
        let r = raise_and_observe(libc::SIGUSR1);
        let (_, _, sp, flags, _) = altstack(None);
        out(format!(
            "sigaltstack: SS_AUTODISARM: {r}; afterwards ours {}, flags {:#x}",
            sp == base,
            flags as u32
        ));
        altstack(Some((base, 0, SIZE)));
        let g = fork();
        if g == 0 {
            let (_, _, sp, _, size) = altstack(None);
            exit((sp == base && size == SIZE) as i32);
        }
        let (_, s) = wait(g, 0);
        out(format!(
            "sigaltstack: a forked child has it: {}",
            libc::WEXITSTATUS(s) == 1
        ));

        // A stack overflow: the SIGSEGV handler runs on the alternate stack.
        let g = fork();
        if g == 0 {
            let lim = libc::rlimit {
                rlim_cur: 8 << 20,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: a valid rlimit.
            unsafe { libc::setrlimit(libc::RLIMIT_STACK, &lim) };
            handle(libc::SIGSEGV, overflowed, true);
            std::hint::black_box(recurse(0, std::hint::black_box(u64::MAX)));
            exit(1);
        }
        let (_, s) = wait(g, 0);
        out(format!(
            "sigaltstack: stack overflow: SIGSEGV handler on the alternate stack: {}",
            rootfs::describe_status(s)
        ));
        std::io::Write::flush(&mut std::io::stdout()).unwrap();

        let me = std::ffi::CString::new(me).unwrap();
        let arg = std::ffi::CString::new(base.to_string()).unwrap();
        let argv = [
            me.as_ptr(),
            c"altstack-after-exec".as_ptr(),
            arg.as_ptr(),
            std::ptr::null(),
        ];
        let envp = [std::ptr::null()];
        // SAFETY: NUL-terminated arrays of C strings.
        unsafe { libc::execve(me.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        exit(127);
    }
    wait(c, 0);
}
