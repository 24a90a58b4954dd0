//! memtest: requests sized by a user that the kernel must bound, run the same on the host and in the
//! guest (tests/tests/guest_memory.rs compares the `memtest:` lines).
//!
//! - `memtest pipe [MIB]` (default 64): a child writes MIB MiB into a pipe with one write(2); the parent
//!   reads it all back and checks every byte; then a non-blocking pipe takes 64 KiB of a 1 MiB write and
//!   refuses more with EAGAIN until it is read.
//! - `memtest args [N]`: (N times) execve with 8 MiB of arguments (2048 pointers to one 4095-byte string: E2BIG),
//!   1 MiB (runs), exactly Linux's limit of a quarter of the 8 MiB stack limit (runs) and one byte more
//!   (E2BIG), and single strings of MAX_ARG_STRLEN - 1 bytes (runs) and MAX_ARG_STRLEN (E2BIG).
//! - `memtest overcommit`: mmap and brk requests larger than RAM fail with ENOMEM at once.
//! - `memtest hog`: maps and touches 4 MiB chunks until the kernel's OOM killer ends it (prints how
//!   far it got every 16 MiB). `memtest hog read`: the same, but the pages are brought in by the
//!   kernel, as the buffer of a read() from an empty non-blocking pipe (the kernel checks the whole
//!   buffer first): the OOM killer must end it there too, not EFAULT.
//! - `memtest kheap`: pipes with data until the kernel heap (or the descriptor table) is full, the
//!   calls that allocate kernel memory while it is, and a pipe after everything was closed.
//! - `memtest kobjects files|maps [LIMIT]`: small kernel objects a user can make as many of as it
//!   likes, made until a call fails (or LIMIT, for the host): `files`, children forked until fork
//!   fails, then each opening /dev/null up to the descriptor limit in turn until an open fails
//!   otherwise; `maps`, one-page mappings of
//!   alternating protection (each its own area), until mmap fails. Prints how many and the error,
//!   frees them all, and makes one again (`maps` then also forks and execs).
//! - `memtest badptr`: system calls given NULL, kernel-half and unmapped pointers: each fails with EFAULT
//!   (the kernel must check every user pointer before it touches it, and never fault itself).
//! - `memtest argcount ...`: what the exec'd child runs: prints its argc and argument bytes.

use std::ffi::CString;
use std::io::Write;

fn say(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "memtest: {s}");
    let _ = out.flush();
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn errno_name(e: i32) -> String {
    match e {
        libc::E2BIG => "E2BIG".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EMFILE => "EMFILE".into(),
        libc::ENFILE => "ENFILE".into(),
        libc::ENOLCK => "ENOLCK".into(),
        libc::ENOSPC => "ENOSPC".into(),
        libc::EAFNOSUPPORT => "EAFNOSUPPORT".into(),
        e => format!("errno {e}"),
    }
}

fn pattern(i: usize) -> u8 {
    (i as u8).wrapping_mul(31) ^ (i >> 12) as u8
}

fn pipe_test(mib: usize) {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) with a two-int array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let len = mib << 20;
    // SAFETY: fork(2); the child only writes and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: closing our copy of the read end.
        unsafe { libc::close(fds[0]) };
        let data: Vec<u8> = (0..len).map(pattern).collect();
        // SAFETY: writing `len` bytes of `data` to the pipe.
        let n = unsafe { libc::write(fds[1], data.as_ptr().cast(), len) };
        say(&format!("pipe: one write of {len} bytes returned {n}"));
        // SAFETY: leaving the child at once.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };
    let mut buf = vec![0u8; 1 << 20];
    let (mut total, mut bad) = (0usize, 0usize);
    loop {
        // SAFETY: reading into `buf`.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        for (i, &b) in buf[..n as usize].iter().enumerate() {
            if b != pattern(total + i) {
                bad += 1;
            }
        }
        total += n as usize;
    }
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    say(&format!(
        "pipe: read {total} bytes, {bad} wrong, writer {}",
        rootfs::describe_status(status)
    ));
    // SAFETY: closing the read end.
    unsafe { libc::close(fds[0]) };

    // Non-blocking: a write takes what fits (the 64 KiB capacity), then EAGAIN.
    // SAFETY: pipe2(2) with a two-int array.
    let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) };
    assert_eq!(made, 0);
    let big = vec![7u8; 1 << 20];
    let w = |n: usize| {
        // SAFETY: writing at most `big.len()` bytes of `big`.
        let r = unsafe { libc::write(fds[1], big.as_ptr().cast(), n) };
        if r < 0 {
            errno_name(errno())
        } else {
            r.to_string()
        }
    };
    let first = w(1 << 20);
    let second = w(1);
    let mut drained = 0;
    loop {
        // SAFETY: reading into `buf`.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        drained += n;
    }
    let third = w(1 << 20);
    say(&format!(
        "pipe: non-blocking writes of 1 MiB and 1 byte: {first}, {second}; read {drained}; 1 MiB again: {third}"
    ));
}

/// Runs `path` with `args` (argv[0] included) and an empty environment in a child; what happened.
fn exec_result(path: &CString, args: &[CString]) -> String {
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let mut pipe = [0; 2];
    // SAFETY: pipe2(2) with a two-int array.
    let made = unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(made, 0);
    // SAFETY: fork(2); the child only calls execve and writes its errno to the pipe.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: execve with NULL-terminated arrays that outlive the call.
        unsafe { libc::execve(path.as_ptr(), ptrs.as_ptr(), envp.as_ptr()) };
        let e = errno();
        // SAFETY: writing our errno to the pipe, then leaving.
        unsafe {
            libc::write(pipe[1], (&e as *const i32).cast(), 4);
            libc::_exit(127);
        }
    }
    // SAFETY: closing our write end.
    unsafe { libc::close(pipe[1]) };
    let mut e = 0i32;
    // SAFETY: reading at most 4 bytes into `e`.
    let n = unsafe { libc::read(pipe[0], (&mut e as *mut i32).cast(), 4) };
    // SAFETY: closing the read end.
    unsafe { libc::close(pipe[0]) };
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if n == 4 {
        errno_name(e)
    } else {
        format!("ran, {}", rootfs::describe_status(status))
    }
}

fn args_test(me: &str) {
    // Linux's limit is a quarter of the stack limit: make it the usual 8 MiB on the host too.
    let lim = libc::rlimit {
        rlim_cur: 8 << 20,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct (a failure leaves the host's own limit).
    unsafe { libc::setrlimit(libc::RLIMIT_STACK, &lim) };
    let path = CString::new(me).unwrap();
    let head = || vec![path.clone(), CString::new("argcount").unwrap()];
    let s4095 = CString::new(vec![b'a'; 4095]).unwrap();

    let mut eight = head();
    eight.extend(std::iter::repeat_n(s4095.clone(), 2048));
    say(&format!(
        "args: 2048 x 4095 bytes (8 MiB): {}",
        exec_result(&path, &eight)
    ));
    let mut one = head();
    one.extend(std::iter::repeat_n(s4095.clone(), 256));
    say(&format!(
        "args: 256 x 4095 bytes (1 MiB): {}",
        exec_result(&path, &one)
    ));

    // Exactly the limit: filename, strings with their NULs and the pointers make 2 MiB.
    let limit: usize = 2 << 20;
    let fixed = (me.len() + 1) + (me.len() + 1) + ("argcount".len() + 1);
    let big = 510;
    let ptrs = (2 + big + 1) * 8;
    let rest = limit - fixed - big * 4096 - ptrs - 1;
    let mut exact = head();
    exact.extend(std::iter::repeat_n(s4095.clone(), big));
    exact.push(CString::new(vec![b'b'; rest]).unwrap());
    say(&format!(
        "args: exactly 2 MiB with pointers: {}",
        exec_result(&path, &exact)
    ));
    let last = exact.len() - 1;
    exact[last] = CString::new(vec![b'b'; rest + 1]).unwrap();
    say(&format!(
        "args: one byte more: {}",
        exec_result(&path, &exact)
    ));

    for len in [32 * 4096 - 1, 32 * 4096] {
        let mut a = head();
        a.push(CString::new(vec![b'c'; len]).unwrap());
        say(&format!(
            "args: one string of {len} bytes: {}",
            exec_result(&path, &a)
        ));
    }
}

fn overcommit_test() {
    let huge: usize = 1 << 40;
    // SAFETY: an anonymous private mapping; unmapped below if it was made.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            huge,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    let m = if p == libc::MAP_FAILED {
        errno_name(errno())
    } else {
        // SAFETY: unmapping what was just mapped.
        unsafe { libc::munmap(p, huge) };
        "mapped".into()
    };
    // SAFETY: sbrk moves the break; a failure returns (void *)-1.
    let b = unsafe { libc::sbrk(huge as libc::intptr_t) };
    let s = if b as isize == -1 {
        errno_name(errno())
    } else {
        // SAFETY: moving the break back.
        unsafe { libc::sbrk(-(huge as libc::intptr_t)) };
        "grown".into()
    };
    say(&format!(
        "overcommit: mmap of 1 TiB: {m}; sbrk of 1 TiB: {s}"
    ));
}

fn hog(by_read: bool) -> ! {
    let chunk = 4 << 20;
    let mut mib = 0;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if by_read && unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) } != 0 {
        say("hog: pipe failed");
        std::process::exit(1);
    }
    loop {
        // SAFETY: an anonymous private mapping, kept until the process dies.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                chunk,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            say(&format!(
                "hog: mmap failed after {mib} MiB: {}",
                errno_name(errno())
            ));
            std::process::exit(1);
        }
        if by_read {
            // SAFETY: a read into the mapping just made (the pipe is empty: EAGAIN after the
            // kernel has brought in every page of the buffer).
            let r = unsafe { libc::read(fds[0], p, chunk) };
            if r < 0 && errno() != libc::EAGAIN {
                say(&format!(
                    "hog: read failed after {mib} MiB: {}",
                    errno_name(errno())
                ));
                std::process::exit(1);
            }
        } else {
            for off in (0..chunk).step_by(4096) {
                // SAFETY: inside the mapping just made.
                unsafe { (p as *mut u8).add(off).write_volatile(1) };
            }
        }
        mib += 4;
        if mib % 16 == 0 {
            say(&format!("hog: {mib} MiB"));
        }
    }
}

/// Fills the kernel heap from user space: pipes (each one's 64 KiB ring is allocated at its first
/// write) until a write fails with ENOMEM or the descriptors run out (EMFILE), then, with the heap
/// full, the calls that allocate kernel memory (pipe, epoll_create1, socket, open, fork, a large
/// poll): each must succeed or fail with an error (ENOMEM, EAGAIN, EMFILE), never bring the kernel
/// down; after everything is closed a pipe works again.
fn kheap_test() {
    let mut ends = Vec::new();
    let mut written = 0;
    let first_err = loop {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) } != 0 {
            break format!("pipe: {}", errno_name(errno()));
        }
        ends.push(fds);
        // SAFETY: a one-byte write from a static buffer.
        if unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) } != 1 {
            break format!("write: {}", errno_name(errno()));
        }
        written += 1;
    };
    say(&format!(
        "kheap: {written} pipes with a ring, then {first_err}"
    ));
    // With the heap (or the descriptor table) full: every call answers.
    let answer = |r: i64| {
        if r >= 0 {
            "ok".to_string()
        } else {
            errno_name(errno())
        }
    };
    // SAFETY: plain system calls with valid arguments; descriptors made here are closed below.
    let (ep, sock, file) = unsafe {
        (
            i64::from(libc::epoll_create1(0)),
            i64::from(libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0)),
            i64::from(libc::open(c"/etc/passwd".as_ptr(), libc::O_RDONLY)),
        )
    };
    let child = spawn_exiting_child();
    if child > 0 {
        // SAFETY: reaping the child just made.
        unsafe { libc::waitpid(child as i32, std::ptr::null_mut(), 0) };
    }
    let mut pfds: Vec<libc::pollfd> = ends
        .iter()
        .map(|e| libc::pollfd {
            fd: e[0],
            events: libc::POLLIN,
            revents: 0,
        })
        .take(1000)
        .collect();
    // SAFETY: `pfds` is a valid array of its length.
    let polled = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 0) };
    say(&format!(
        "kheap: while full: epoll_create1 {}, socket {}, open {}, fork {}, poll {}",
        answer(ep),
        answer(sock),
        answer(file),
        answer(child),
        answer(i64::from(polled))
    ));
    for fd in [ep, sock, file] {
        if fd >= 0 {
            // SAFETY: closing a descriptor opened above.
            unsafe { libc::close(fd as i32) };
        }
    }
    for e in ends.drain(..) {
        // SAFETY: closing the pipes made above.
        unsafe {
            libc::close(e[0]);
            libc::close(e[1]);
        }
    }
    let mut fds = [0i32; 2];
    let mut buf = [0u8; 5];
    // SAFETY: a pipe, a write and a read of five bytes on it, then both ends closed.
    let ok = unsafe {
        libc::pipe(fds.as_mut_ptr()) == 0
            && libc::write(fds[1], b"hello".as_ptr().cast(), 5) == 5
            && libc::read(fds[0], buf.as_mut_ptr().cast(), 5) == 5
            && libc::close(fds[0]) == 0
            && libc::close(fds[1]) == 0
    };
    say(&format!(
        "kheap: after closing them a pipe works: {}",
        if ok && &buf == b"hello" { "yes" } else { "no" }
    ));
}

/// `kobjects files`: children made first (until fork fails, or `limit` of them), then, one after the
/// other, each opens /dev/null up to the descriptor limit and reports its count and error through a
/// pipe, until an open fails with something other than EMFILE. Forking first leaves the heap to the
/// files: a fork needs a kernel stack, which the kernel refuses before the heap runs out, so files
/// opened between forks would only ever meet that limit. Then the children all go, and an open and
/// a fork work again.
fn kobjects_files(limit: u64) {
    let (mut hold, mut go, mut rep) = ([0i32; 2], [0i32; 2], [0i32; 2]);
    // SAFETY: three pipes: `hold` keeps the children waiting, `go` lets one open its files, `rep`
    // brings back their reports.
    assert!(unsafe {
        libc::pipe(hold.as_mut_ptr()) == 0
            && libc::pipe(go.as_mut_ptr()) == 0
            && libc::pipe(rep.as_mut_ptr()) == 0
    });
    // A pipe takes its ring at the first write: give `go` and `rep` theirs now, while the heap has
    // room (after the forks it has none to spare).
    let mut c = 0u8;
    // SAFETY: one byte through each pipe.
    unsafe {
        for p in [go, rep] {
            libc::write(p[1], b"p".as_ptr().cast(), 1);
            libc::read(p[0], (&raw mut c).cast(), 1);
        }
    }
    let mut children = 0u64;
    let forked = loop {
        if children == limit {
            break "limit".to_string();
        }
        // SAFETY: fork; the child waits for its turn, opens files, reports, waits on `hold` and
        // _exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            break format!("fork: {}", errno_name(errno()));
        }
        if pid == 0 {
            let mut c = 0u8;
            // SAFETY: one byte from `go` is this child's turn; end of file means it has none.
            unsafe {
                libc::close(hold[1]);
                libc::close(go[1]);
                if libc::read(go[0], (&raw mut c).cast(), 1) != 1 {
                    libc::_exit(0);
                }
            };
            let mut n = 0i32;
            let err = loop {
                // SAFETY: opening a file by a NUL-terminated path.
                if unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) } < 0 {
                    break errno();
                }
                n += 1;
            };
            let msg = [n, err];
            // SAFETY: an 8-byte write from `msg`, then a read that waits until `hold` closes.
            unsafe {
                libc::write(rep[1], msg.as_ptr().cast(), 8);
                libc::read(hold[0], (&raw mut c).cast(), 1);
                libc::_exit(0);
            }
        }
        children += 1;
    };
    let (mut files, mut turns) = (0u64, 0u64);
    let mut stop = "every child opened its files".to_string();
    while turns < children {
        let mut msg = [0i32; 2];
        // SAFETY: one byte to `go` (one child's turn), then reading its 8-byte report.
        let got = unsafe {
            libc::write(go[1], b"g".as_ptr().cast(), 1);
            libc::read(rep[0], msg.as_mut_ptr().cast(), 8)
        };
        turns += 1;
        if got != 8 {
            stop = "no report".to_string();
            break;
        }
        files += msg[0] as u64;
        if msg[1] != libc::EMFILE {
            stop = format!("open: {}", errno_name(msg[1]));
            break;
        }
    }
    say(&format!(
        "kobjects files: {children} children ({forked}); {files} files, then {stop}"
    ));
    // SAFETY: closing the write ends lets the children go (those still waiting for their turn read
    // end of file); they are reaped below.
    unsafe {
        libc::close(hold[1]);
        libc::close(go[1]);
    }
    let mut reaped = 0;
    // SAFETY: reaping our children.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {
        reaped += 1;
    }
    // SAFETY: an open and a close of a descriptor made here.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    let child = spawn_exiting_child();
    // SAFETY: closing what was opened above and reaping the child.
    unsafe {
        libc::close(fd);
        libc::waitpid(child as i32, std::ptr::null_mut(), 0);
    }
    say(&format!(
        "kobjects files: {} reaped; afterwards open and fork work: {}",
        if reaped == children { "all" } else { "not all" },
        if fd >= 0 && child > 0 { "yes" } else { "no" }
    ));
}

/// The memory areas the process has now: the lines of /proc/self/maps, less `[vsyscall]` (on Linux
/// a fixed page outside the process's area list, which max_map_count does not count).
fn areas_now() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| {
        m.lines().filter(|l| !l.ends_with("[vsyscall]")).count()
    })
}

/// `kobjects maps`: one-page anonymous mappings, read-only and read-write by turns so that no two
/// merge, until mmap fails (Linux: ENOMEM at max_map_count, 65530) or `limit` of them; then they are
/// unmapped and one more can be made. The areas the process had before (its program, stack, heap, and
/// on Linux the vDSO; fewer in the guest) are counted first, and the list of mappings is allocated
/// before, so that the count made plus those is the whole area count when mmap failed: the number to
/// compare with the host.
fn kobjects_maps(limit: u64) {
    let mut maps = Vec::with_capacity(70_000);
    let before = areas_now();
    say(&format!("kobjects maps: {before} areas before"));
    let stop = loop {
        if maps.len() as u64 == limit {
            break "limit".to_string();
        }
        let prot = if maps.len() % 2 == 0 {
            libc::PROT_READ
        } else {
            libc::PROT_READ | libc::PROT_WRITE
        };
        // SAFETY: a fresh anonymous mapping; nothing else is at its address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            break format!("mmap: {}", errno_name(errno()));
        }
        maps.push(p);
    };
    let made = maps.len();
    say(&format!(
        "kobjects maps: {made} mappings, then {stop}; {} areas in all",
        before + made
    ));
    for p in maps.drain(..) {
        // SAFETY: unmapping a page mapped above.
        unsafe { libc::munmap(p, 4096) };
    }
    // SAFETY: as above; unmapped at once.
    let ok = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        p != libc::MAP_FAILED && libc::munmap(p, 4096) == 0
    };
    say(&format!(
        "kobjects maps: afterwards a mapping works: {}",
        if ok { "yes" } else { "no" }
    ));
    // And a child can be forked and run a program (this one, printing its arguments).
    let me = std::env::current_exe().unwrap_or_else(|_| "/bin/memtest".into());
    let me = CString::new(me.into_os_string().into_encoded_bytes()).unwrap();
    let ran = exec_result(&me, &[me.clone(), CString::new("argcount").unwrap()]);
    say(&format!("kobjects maps: afterwards fork and exec: {ran}"));
}

/// Calls that take user pointers, given bad ones: NULL, an address in the kernel's half, and an unmapped
/// page of the user half. Raw syscalls, so that no libc wrapper checks or substitutes anything.
fn badptr_test() {
    const KERNEL: i64 = 0xffff_ffff_8010_0000u64 as i64;
    const UNMAPPED: i64 = 0x7fff_0000_0000;
    let mut buf = [0u8; 256];
    let ok = buf.as_mut_ptr() as i64;
    let root = c"/".as_ptr() as i64;
    for (name, bad) in [
        ("a NULL", 0i64),
        ("a kernel", KERNEL),
        ("an unmapped", UNMAPPED),
    ] {
        let calls: [(&str, libc::c_long, [i64; 4]); 14] = [
            ("open(path)", libc::SYS_open, [bad, 0, 0, 0]),
            ("stat(path)", libc::SYS_stat, [bad, ok, 0, 0]),
            ("stat(buf)", libc::SYS_stat, [root, bad, 0, 0]),
            ("chdir(path)", libc::SYS_chdir, [bad, 0, 0, 0]),
            ("execve(path)", libc::SYS_execve, [bad, 0, 0, 0]),
            ("write(buf)", libc::SYS_write, [1, bad, 16, 0]),
            ("uname(buf)", libc::SYS_uname, [bad, 0, 0, 0]),
            ("getcwd(buf)", libc::SYS_getcwd, [bad, 64, 0, 0]),
            ("pipe(fds)", libc::SYS_pipe, [bad, 0, 0, 0]),
            (
                "clock_gettime(ts)",
                libc::SYS_clock_gettime,
                [libc::CLOCK_MONOTONIC as i64, bad, 0, 0],
            ),
            ("nanosleep(req)", libc::SYS_nanosleep, [bad, 0, 0, 0]),
            (
                "rt_sigaction(act)",
                libc::SYS_rt_sigaction,
                [libc::SIGUSR1 as i64, bad, 0, 8],
            ),
            (
                "rt_sigprocmask(set)",
                libc::SYS_rt_sigprocmask,
                [libc::SIG_BLOCK as i64, bad, 0, 8],
            ),
            (
                "wait4(status)",
                libc::SYS_wait4,
                [spawn_exiting_child(), bad, 0, 0],
            ),
        ];
        for (call, nr, a) in calls {
            // SAFETY: a raw system call; the kernel validates the bad pointers (that is the test), and the
            // good ones point at live locals of the right size.
            let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3]) };
            let what = if r < 0 {
                errno_name(errno())
            } else {
                "succeeded".to_string()
            };
            say(&format!("badptr: {call} with {name} pointer: {what}"));
        }
    }
}

/// Forks a child that exits at once (for wait4); returns its pid.
fn spawn_exiting_child() -> i64 {
    // SAFETY: fork has no memory-safety preconditions; the child only calls _exit.
    match unsafe { libc::fork() } {
        // SAFETY: _exit ends the child at once, touching nothing the parent shares.
        0 => unsafe { libc::_exit(3) },
        pid => i64::from(pid),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("pipe") => pipe_test(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64)),
        Some("args") => {
            for _ in 0..args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1) {
                args_test(&args[0]);
            }
        }
        Some("overcommit") => overcommit_test(),
        Some("hog") => hog(args.get(2).map(String::as_str) == Some("read")),
        Some("badptr") => badptr_test(),
        Some("kheap") => kheap_test(),
        Some("kobjects") => {
            let limit = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
            match args.get(2).map(String::as_str) {
                Some("files") => kobjects_files(limit),
                Some("maps") => kobjects_maps(limit),
                _ => {
                    eprintln!("usage: memtest kobjects files|maps [LIMIT]");
                    std::process::exit(2);
                }
            }
        }
        Some("argcount") => {
            // Every argument after this word is one byte repeated: check each arrived whole.
            let whole = args[2..]
                .iter()
                .all(|a| a.bytes().all(|b| Some(b) == a.bytes().next()));
            say(&format!(
                "argcount: argc {}, contents intact: {whole}",
                args.len()
            ));
        }
        _ => {
            eprintln!(
                "usage: memtest pipe [MIB] | args | overcommit | hog [read] | badptr | kheap | kobjects KIND"
            );
            std::process::exit(2);
        }
    }
}
