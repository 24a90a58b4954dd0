//! Loading a static ELF executable from the root filesystem into a fresh address space and building its
//! initial stack (argc, argv, envp, auxv), ready to enter ring 3.
#![deny(unsafe_code)]

use super::signal::SigState;
use super::{Pid, Process, State, KERNEL_STACK_SIZE, STACK_LIMIT};
use crate::arch::layout::{USER_CS, USER_DS, USER_END, USER_STACK_TOP};
use crate::arch::switch::{prepare_new_task, TaskContext};
use crate::arch::trap::TrapFrame;
use crate::fs::{self, fd::FdTable, FileRef};
use crate::mm::paging::{user_flags, AddressSpace, MapError};
use crate::mm::uaccess::UserStr;
use crate::mm::{page_down, page_up, user, PAGE_SIZE};
use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use kcore::elf::{self, ElfImage, PF_W, PF_X};
use kcore::errno::Errno;
use kcore::ext2::{BlockDevice, Inode};
use kcore::stack::{self, AuxInfo, StackStr};
use kcore::vma::{Backing, Vma, VmaList, PROT_EXEC, PROT_READ, PROT_WRITE};

/// Pages of one physically contiguous run of a segment: one device request's worth.
const RUN_PAGES: u64 = (crate::drivers::virtio::MAX_REQUEST as u64) / PAGE_SIZE;

/// Bytes of the arguments kept in the process table (ps, the introspection channel).
pub const CMDLINE_MAX: usize = 4096;

/// Pages of the stack mapped at exec (the rest is faulted in on demand).
const STACK_INITIAL_PAGES: u64 = 4;

/// Room the stack's area has below its initial pages (Linux's stack_expand in setup_arg_pages).
const STACK_EXPAND: u64 = 128 * 1024;

fn map_err(e: MapError) -> Errno {
    match e {
        MapError::OutOfMemory => Errno::ENOMEM,
        MapError::AlreadyMapped => Errno::EINVAL,
    }
}

/// Reads file bytes `[file_start, file_end)` of `inode` (on the filesystem with device number `dev`)
/// into `dst` (a run of fresh frames): on ext2 with as few device requests as the disk layout allows,
/// elsewhere (tmpfs) by copying.
pub fn read_into(
    dev: u32,
    inode: &Inode,
    file_start: u64,
    file_end: u64,
    dst: &mut [u8],
) -> Result<(), Errno> {
    if file_end <= file_start {
        return Ok(());
    }
    let mnt = fs::mount::by_dev(dev as u64).ok_or(Errno::EIO)?;
    // Dirty page-cache pages of the range go to the disk first: the extents are read from there.
    fs::writeback::write_back_range(
        &mnt,
        inode.ino,
        file_start / PAGE_SIZE,
        (file_end - 1) / PAGE_SIZE,
    )?;
    let want = (file_end - file_start) as usize;
    let extents = mnt.with(|fs| match fs.ext2() {
        Some(e) => e
            .extents(inode, file_start, file_end - file_start)
            .map(Some),
        None => {
            let n = fs.read_at(inode, file_start, &mut dst[..want])?;
            dst[n..want].fill(0);
            Ok(None)
        }
    })?;
    let Some(extents) = extents else {
        return Ok(());
    };
    for e in extents {
        let Some(disk) = e.disk_offset else {
            // A hole reads as zeros; the frames may hold old contents.
            let at = (e.file_offset - file_start) as usize;
            let n = (e.len as usize).min(dst.len().saturating_sub(at));
            dst[at..at + n].fill(0);
            continue;
        };
        let at = (e.file_offset - file_start) as usize;
        // Whole sectors: round up, then clear what lies past the end of the file data.
        let len = ((e.len as usize + 511) & !511).min(dst.len() - at);
        mnt.with(|fs| match fs.ext2() {
            Some(e) => e.device().read(disk, &mut dst[at..at + len]),
            None => Err(kcore::ext2::Ext2Error::Io),
        })?;
        let data_end = at + e.len as usize;
        if data_end < at + len {
            dst[data_end..at + len].fill(0);
        }
    }
    Ok(())
}

fn load_segments(
    aspace: &mut AddressSpace,
    img: &ElfImage,
    mnt: &fs::Mount,
    inode: &Inode,
    path: &[u8],
) -> Result<VmaList, Errno> {
    let mut vmas = VmaList::new();
    let path: Rc<[u8]> = Rc::from(path);
    let file = Rc::new(inode.clone());
    for s in &img.segments {
        let start = page_down(s.vaddr + img.bias);
        let end = page_up(s.vaddr + img.bias + s.memsz);
        let flags = user_flags(s.flags & PF_W != 0, s.flags & PF_X != 0);
        let mut va = start;
        let mut file_start = page_down(s.offset);
        let file_end = s.offset + s.filesz;
        if aspace.translate(va).is_some() {
            // The first page is shared with the previous segment: copy this segment's bytes into it.
            let page = user::page_bytes(aspace, va).ok_or(Errno::EFAULT)?;
            let from = (s.vaddr + img.bias).max(va);
            let to = (va + PAGE_SIZE).min(s.vaddr + img.bias + s.filesz);
            if to > from {
                let off = s.offset + (from - (s.vaddr + img.bias));
                let within = (from - va) as usize;
                mnt.with(|fs| {
                    fs.read_at(inode, off, &mut page[within..within + (to - from) as usize])
                })?;
            }
            va += PAGE_SIZE;
            file_start += PAGE_SIZE;
        }
        // Runs of at most one device request each: small runs are easy to find free after memory
        // has been in use for a while (the buddy allocator merges freed frames back into them).
        while va < end {
            let pages = ((end - va) / PAGE_SIZE).min(RUN_PAGES);
            let run_end = file_start + pages * PAGE_SIZE;
            let data_end = file_end.min(inode.size).max(file_start).min(run_end);
            let run = user::map_fresh_run(aspace, va, pages, flags, data_end - file_start)
                .map_err(map_err)?;
            read_into(mnt.dev, inode, file_start, data_end, run)?;
            va += pages * PAGE_SIZE;
            file_start = run_end;
        }
        // As Linux maps a segment: the pages holding file bytes from the file, the rest (bss)
        // anonymous. The loader has filled them all already.
        let prot = PROT_READ
            | if s.flags & PF_W != 0 { PROT_WRITE } else { 0 }
            | if s.flags & PF_X != 0 { PROT_EXEC } else { 0 };
        let file_end_va = page_up(s.vaddr + img.bias + s.filesz).min(end);
        for (a, b, from_file) in [(start, file_end_va, true), (file_end_va, end, false)] {
            // A page shared with the previous segment keeps that segment's area.
            let a = a.max(vmas.iter().last().map_or(0, |v| v.end));
            if a < b {
                let backing = if from_file {
                    Backing::File {
                        dev: mnt.dev,
                        inode: file.clone(),
                        offset: page_down(s.offset) + (a - start),
                        path: path.clone(),
                        may_write: false,
                        hold: Default::default(),
                    }
                } else {
                    Backing::Anonymous
                };
                vmas.insert(Vma {
                    start: a,
                    end: b,
                    prot,
                    shared: false,
                    backing,
                });
            }
        }
    }
    Ok(vmas)
}

/// A program loaded into a fresh address space, ready to run.
pub struct Loaded {
    pub aspace: AddressSpace,
    pub vmas: VmaList,
    pub brk_start: u64,
    pub name: Vec<u8>,
    pub exec: Rc<super::ExecInfo>,
    pub frame: TrapFrame,
}

/// Added to every program's environment (unless it sets GLIBC_TUNABLES itself): this host shows user
/// mode AVX/AVX-512 state (XCR0 = 0xe7 whatever the kernel sets) that the kernel cannot save (XSAVE and
/// XGETBV are not emulated in kernel mode; only FXSAVE is), so glibc is told not to use AVX and user
/// state stays within what FXSAVE covers. Without this, glibc's AVX memcpy lost its upper register
/// halves on context switches.
pub const NO_AVX_TUNABLE: &[u8] = b"GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD,-AVX_Fast_Unaligned_Load,-FMA,-FMA4";

/// An execve string: one of the kernel's (init's arguments, the tunable) or one in the calling
/// process's memory, copied from there by the loader.
#[derive(Clone, Copy, Debug)]
pub enum ArgStr<'a> {
    Kernel(&'a [u8]),
    User(UserStr),
}

impl ArgStr<'_> {
    /// Whether it starts with `prefix` (false when it cannot be read).
    fn starts_with(&self, prefix: &[u8]) -> bool {
        let mut head = [0u8; 16];
        let Some(head) = head.get_mut(..prefix.len()) else {
            return false;
        };
        self.len() >= prefix.len() && self.copy_to(head) && head == prefix
    }
}

impl StackStr for ArgStr<'_> {
    fn len(&self) -> usize {
        match self {
            ArgStr::Kernel(s) => s.len(),
            ArgStr::User(s) => s.len(),
        }
    }
    fn copy_to(&self, dst: &mut [u8]) -> bool {
        match self {
            ArgStr::Kernel(s) => StackStr::copy_to(s, dst),
            ArgStr::User(s) => s.copy_to(dst).is_ok(),
        }
    }
}

/// Whether [`NO_AVX_TUNABLE`] must be added to `envp` (it sets no GLIBC_TUNABLES of its own).
pub fn needs_tunable(envp: &[ArgStr]) -> bool {
    !envp.iter().any(|e| e.starts_with(b"GLIBC_TUNABLES="))
}

/// Loads `path` with `argv`/`envp` (with [`NO_AVX_TUNABLE`] added by the caller if needed) into a new
/// address space.
pub fn load(path: &fs::Path, argv: &[ArgStr], envp: &[ArgStr]) -> Result<Loaded, Errno> {
    let (mnt, inode) = fs::mount::resolve(path, true)?;
    // The path as text (for a path in a directory: the directory's path, then the relative part).
    let shown = path.text();
    if inode.is_dir() {
        return Err(Errno::EACCES);
    }
    if !inode.is_reg() || inode.mode & 0o111 == 0 {
        return Err(Errno::EACCES);
    }
    // The loader reads the file from the disk: what the page cache holds dirty goes there first.
    fs::writeback::write_back_inode(&mnt, inode.ino)?;
    let mut head = vec![0u8; 4096.min(inode.size as usize).max(64)];
    mnt.with(|fs| fs.read_at(&inode, 0, &mut head))?;
    let need = elf::headers_len(&head).map_err(|_| Errno::ENOEXEC)?;
    if need > head.len() {
        head.resize(need, 0);
        mnt.with(|fs| fs.read_at(&inode, 0, &mut head))?;
    }
    let img = elf::parse(&head, USER_STACK_TOP - STACK_LIMIT).map_err(|_| Errno::ENOEXEC)?;

    let mut aspace = AddressSpace::new().ok_or(Errno::ENOMEM)?;
    let mut vmas = match load_segments(&mut aspace, &img, &mnt, &inode, shown) {
        Ok(v) => v,
        Err(e) => {
            aspace.destroy();
            return Err(e);
        }
    };

    // The stack: a few pages now (the initial stack, strings included, is written into them), the
    // rest on demand.
    let stack_flags = user_flags(true, false);
    let pages =
        (stack::size_needed(argv, envp, shown).div_ceil(PAGE_SIZE) + 1).max(STACK_INITIAL_PAGES);
    let initial = pages * PAGE_SIZE;
    let run =
        match user::map_fresh_run(&mut aspace, USER_STACK_TOP - initial, pages, stack_flags, 0) {
            Ok(r) => r,
            Err(e) => {
                aspace.destroy();
                return Err(map_err(e));
            }
        };
    let mut random = [0u8; 16];
    crate::arch::random_bytes(&mut random);
    let aux = AuxInfo {
        phdr: img.phdr_addr,
        phnum: img.phnum,
        entry: img.entry,
        hwcap: crate::arch::hwcap(),
        clktck: 100,
        uid: 0,
        gid: 0,
        random,
    };
    let rsp = match stack::build(run, USER_STACK_TOP, argv, envp, shown, &aux) {
        Ok(r) => r,
        Err(e) => {
            aspace.destroy();
            return Err(match e {
                stack::BuildError::TooSmall => Errno::E2BIG,
                stack::BuildError::Unreadable => Errno::EFAULT,
            });
        }
    };
    // The stack's area: the pages written now and 128 KiB more (Linux's setup_arg_pages); it
    // grows down on demand up to STACK_LIMIT (`resolve_fault`), so VmSize and VSZ count what a
    // program uses, as on Linux.
    vmas.insert(Vma::anonymous(
        USER_STACK_TOP - initial - STACK_EXPAND,
        USER_STACK_TOP,
        PROT_READ | PROT_WRITE,
    ));
    // The brk heap's area appears with the first brk that grows it.
    let brk_start = img.end();
    let name = shown
        .rsplit(|&c| c == b'/')
        .next()
        .unwrap_or(shown)
        .to_vec();
    // The process table keeps the first page of the arguments (they can be 2 MiB) for ps and the
    // introspection channel; /proc/PID/cmdline and environ read all of them from the process's memory.
    let joined = |list: &[ArgStr]| {
        let mut out = Vec::new();
        for a in list {
            let room = CMDLINE_MAX.saturating_sub(out.len());
            if room == 0 {
                break;
            }
            let at = out.len();
            out.resize(at + a.len().min(room), 0);
            if !a.copy_to(&mut out[at..]) {
                out.truncate(at);
            }
            if out.len() < CMDLINE_MAX {
                out.push(0);
            }
        }
        out
    };
    let (args, env) = stack::string_areas(USER_STACK_TOP, argv, envp, shown);
    let exec = Rc::new(super::ExecInfo {
        cmdline: joined(argv),
        exe: shown.to_vec(),
        args,
        env,
    });
    let frame = TrapFrame {
        rip: img.entry,
        cs: USER_CS as u64,
        rflags: 0x202,
        rsp,
        ss: USER_DS as u64,
        ..TrapFrame::default()
    };
    let _ = USER_END;
    Ok(Loaded {
        aspace,
        vmas,
        brk_start,
        name,
        exec,
        frame,
    })
}

/// Creates process `pid` (init) running `path` with `argv`/`envp`, ready to be scheduled.
/// `console` is the open file init gets on descriptors 0, 1 and 2.
pub fn spawn(
    pid: Pid,
    path: &[u8],
    argv: &[&[u8]],
    envp: &[&[u8]],
    console: FileRef,
) -> Result<Process, Errno> {
    let argv: Vec<ArgStr> = argv.iter().map(|s| ArgStr::Kernel(s)).collect();
    let mut env: Vec<ArgStr> = envp.iter().map(|s| ArgStr::Kernel(s)).collect();
    if needs_tunable(&env) {
        env.push(ArgStr::Kernel(NO_AVX_TUNABLE));
    }
    let l = load(&fs::Path::absolute(path), &argv, &env)?;
    let mut fds = FdTable::default();
    for _ in 0..3 {
        fds.insert(console.clone(), false)?;
    }
    let mut ctx = Box::new(TaskContext::new());
    let mut kstack = Box::new_uninit_slice(KERNEL_STACK_SIZE);
    prepare_new_task(&mut ctx, &mut kstack, &l.frame);
    Ok(Process {
        pid,
        tgid: pid,
        clear_child_tid: 0,
        robust_list: 0,
        group_exit: None,
        ppid: Pid(0),
        pgid: pid,
        sid: pid,
        ctty: false,
        state: State::Ready,
        name: l.name,
        exec: l.exec,
        mm: super::Mm::new_ref(l.aspace, l.vmas, l.brk_start),
        fds,
        cwd: Default::default(),
        fs_base: 0,
        exit_status: None,
        stop_report: None,
        subreaper: false,
        children_csw: [0; 2],
        vfork_parent: None,
        signals: SigState::default(),
        wake_at: 0,
        restart_sleep: None,
        start_jiffies: crate::time::jiffies(),
        ctx,
        kstack,
    })
}

/// Longest wait for the other threads of an exec-ing thread's group to go, in 10 ms steps.
const DE_THREAD_STEPS: u32 = 1000;

/// Linux's de_thread, at execve's point of no return: every other thread of the group gets SIGKILL
/// (marked as dying with the group, so none of them ends the group itself) and the caller waits until
/// they are gone; a caller that is not the leader then takes the leader's pid. Err when the caller
/// itself is being killed meanwhile (another thread's exit_group or execve came first).
fn de_thread() -> Result<(), Errno> {
    let (me, tgid) = super::with_current(|p| (p.pid, p.tgid));
    let alive = |t: &alloc::collections::BTreeMap<Pid, Box<super::Process>>| {
        t.values()
            .any(|q| q.tgid == tgid && q.pid != me && q.state != State::Zombie)
    };
    let others: Vec<Pid> = super::with_table(|t| {
        t.values_mut()
            .filter(|q| q.tgid == tgid && q.pid != me && q.state != State::Zombie)
            .map(|q| {
                q.group_exit
                    .get_or_insert(kcore::wait::signaled(super::signal::SIGKILL, false));
                q.pid
            })
            .collect()
    });
    if others.is_empty() && me == tgid {
        return Ok(());
    }
    for o in others {
        let _ = super::signal::send_thread(o, super::signal::SIGKILL);
    }
    let mut steps = 0;
    while super::with_table(|t| alive(t)) {
        if super::signal::fatal_pending() || steps == DE_THREAD_STEPS {
            return Err(Errno::EAGAIN);
        }
        steps += 1;
        if !super::sched::sleep_until(crate::time::now_ns() + 10_000_000) {
            // A signal is pending (not SIGKILL): let the dying threads run all the same.
            super::sched::yield_now();
        }
    }
    if me != tgid {
        super::take_over_leader(me, tgid);
    }
    Ok(())
}

/// execve in the current process: on success the old image is gone and `frame` enters the new one.
pub fn exec_current(
    frame: &mut TrapFrame,
    path: &fs::Path,
    argv: &[ArgStr],
    envp: &[ArgStr],
) -> Result<(), Errno> {
    let l = load(path, argv, envp)?;
    if let Err(e) = de_thread() {
        l.aspace.destroy();
        return Err(e);
    }
    l.aspace.activate();
    let old = super::with_current(|p| {
        let old = core::mem::replace(&mut p.mm, super::Mm::new_ref(l.aspace, l.vmas, l.brk_start));
        p.name = l.name;
        p.exec = l.exec;
        p.fds.close_on_exec();
        p.signals.reset_for_exec();
        p.fs_base = 0;
        p.ctx.reset_fx();
        crate::arch::switch::restore_fx(&p.ctx);
        old
    });
    crate::arch::set_fs_base(0);
    super::drop_mm(old);
    super::fork::release_vfork_parent();
    *frame = l.frame;
    Ok(())
}
