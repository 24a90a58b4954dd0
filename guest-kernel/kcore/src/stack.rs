//! The System V x86-64 initial process stack, as Linux's `create_elf_tables` lays it out.
//!
//! From the top down: an 8-byte zero end marker, the exec filename, the environment and argument strings,
//! the platform string, 16 random bytes (AT_RANDOM), padding, then from `rsp` upwards: argc, argv[],
//! NULL, envp[], NULL, auxv pairs ending with AT_NULL. `rsp` is 16-byte aligned.
//!
//! [`build`] writes into `mem`, which stands for the user addresses `[top - mem.len(), top)`; the kernel
//! passes a direct-map view of the stack's top frames.

pub const AT_NULL: u64 = 0;
pub const AT_PHDR: u64 = 3;
pub const AT_PHENT: u64 = 4;
pub const AT_PHNUM: u64 = 5;
pub const AT_PAGESZ: u64 = 6;
pub const AT_BASE: u64 = 7;
pub const AT_FLAGS: u64 = 8;
pub const AT_ENTRY: u64 = 9;
pub const AT_UID: u64 = 11;
pub const AT_EUID: u64 = 12;
pub const AT_GID: u64 = 13;
pub const AT_EGID: u64 = 14;
pub const AT_PLATFORM: u64 = 15;
pub const AT_HWCAP: u64 = 16;
pub const AT_CLKTCK: u64 = 17;
pub const AT_SECURE: u64 = 23;
pub const AT_RANDOM: u64 = 25;
pub const AT_HWCAP2: u64 = 26;
pub const AT_EXECFN: u64 = 31;

/// What goes on the stack besides argv and envp.
#[derive(Clone, Copy, Debug)]
pub struct AuxInfo {
    pub phdr: u64,
    pub phnum: u64,
    pub entry: u64,
    pub hwcap: u64,
    pub clktck: u64,
    pub uid: u64,
    pub gid: u64,
    pub random: [u8; 16],
}

/// Why [`build`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The stack did not fit in the memory given.
    TooSmall,
    /// A string could not be read (it lives in memory that went away).
    Unreadable,
}

/// A string for the new stack: its length and a way to copy it (the kernel's strings are slices, a
/// caller's execve strings are copied out of its memory).
pub trait StackStr {
    /// Its length, without a NUL.
    fn len(&self) -> usize;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies its first `dst.len()` bytes (at most `len()`) into `dst`; false if they cannot be read.
    fn copy_to(&self, dst: &mut [u8]) -> bool;
}

impl StackStr for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    fn copy_to(&self, dst: &mut [u8]) -> bool {
        match self.get(..dst.len()) {
            Some(s) => {
                dst.copy_from_slice(s);
                true
            }
            None => false,
        }
    }
}

struct Writer<'a> {
    mem: &'a mut [u8],
    top: u64,
    /// Offset into `mem` of the lowest byte written so far.
    pos: usize,
}

impl Writer<'_> {
    fn addr(&self) -> u64 {
        self.top - (self.mem.len() - self.pos) as u64
    }

    fn push_bytes(&mut self, b: &[u8]) -> Result<u64, BuildError> {
        self.pos = self.pos.checked_sub(b.len()).ok_or(BuildError::TooSmall)?;
        self.mem[self.pos..self.pos + b.len()].copy_from_slice(b);
        Ok(self.addr())
    }

    fn push_str<S: StackStr + ?Sized>(&mut self, s: &S) -> Result<u64, BuildError> {
        self.push_bytes(&[0])?;
        self.pos = self.pos.checked_sub(s.len()).ok_or(BuildError::TooSmall)?;
        if !s.copy_to(&mut self.mem[self.pos..self.pos + s.len()]) {
            return Err(BuildError::Unreadable);
        }
        Ok(self.addr())
    }
}

/// Bytes [`build`] needs for these strings (an upper bound).
pub fn size_needed<S: StackStr>(argv: &[S], envp: &[S], execfn: &[u8]) -> u64 {
    let strings: u64 = argv.iter().chain(envp).map(|s| s.len() as u64 + 1).sum();
    // End marker, execfn, platform, random bytes, alignment; argc, the two lists with their NULLs,
    // and the auxiliary vector (at most 32 pairs).
    8 + execfn.len() as u64
        + 1
        + 7
        + 16
        + 16
        + strings
        + 8 * (3 + argv.len() + envp.len()) as u64
        + 32 * 16
}

/// Where [`build`] puts the argument and the environment strings below `top`: `[start, end)` of
/// each, NULs included (Linux's `arg_start`/`arg_end` and `env_start`/`env_end`, which
/// /proc/PID/cmdline and /proc/PID/environ read from the process's memory).
pub fn string_areas<S: StackStr>(
    top: u64,
    argv: &[S],
    envp: &[S],
    execfn: &[u8],
) -> ((u64, u64), (u64, u64)) {
    let total = |list: &[S]| list.iter().map(|s| s.len() as u64 + 1).sum::<u64>();
    // The end marker, then execfn and its NUL; the environment strings end where execfn starts.
    let env_end = top - 8 - (execfn.len() as u64 + 1);
    let env_start = env_end - total(envp);
    ((env_start - total(argv), env_start), (env_start, env_end))
}

/// Writes the initial stack for `argv`/`envp` and returns the initial `rsp`.
pub fn build<S: StackStr>(
    mem: &mut [u8],
    top: u64,
    argv: &[S],
    envp: &[S],
    execfn: &[u8],
    aux: &AuxInfo,
) -> Result<u64, BuildError> {
    let mut w = Writer { mem, top, pos: 0 };
    w.pos = w.mem.len();
    w.push_bytes(&[0; 8])?;
    let execfn_addr = w.push_str(&execfn)?;
    // The strings go in back to front, so each list ends up in order from its lowest address; the
    // pointers are computed from there (no list of addresses: execve's lists can be long).
    let mut env_lo = w.addr();
    for e in envp.iter().rev() {
        env_lo = w.push_str(e)?;
    }
    let mut arg_lo = w.addr();
    for a in argv.iter().rev() {
        arg_lo = w.push_str(a)?;
    }
    let platform = w.push_str(&&b"x86_64"[..])?;
    let random = w.push_bytes(&aux.random)?;

    let auxv: [(u64, u64); 18] = [
        (AT_HWCAP, aux.hwcap),
        (AT_PAGESZ, 4096),
        (AT_CLKTCK, aux.clktck),
        (AT_PHDR, aux.phdr),
        (AT_PHENT, crate::elf::PHENT_SIZE),
        (AT_PHNUM, aux.phnum),
        (AT_BASE, 0),
        (AT_FLAGS, 0),
        (AT_ENTRY, aux.entry),
        (AT_UID, aux.uid),
        (AT_EUID, aux.uid),
        (AT_GID, aux.gid),
        (AT_EGID, aux.gid),
        (AT_SECURE, 0),
        (AT_RANDOM, random),
        (AT_HWCAP2, 0),
        (AT_EXECFN, execfn_addr),
        (AT_PLATFORM, platform),
    ];
    let words = 1 + (argv.len() + 1) + (envp.len() + 1) + 2 * (auxv.len() + 1);
    // Align so that rsp (the argc word) ends 16-byte aligned.
    let mut rsp = w
        .addr()
        .checked_sub((words * 8) as u64)
        .ok_or(BuildError::TooSmall)?
        & !15;
    if top - rsp > w.mem.len() as u64 {
        return Err(BuildError::TooSmall);
    }
    let base = w.mem.len() - (top - rsp) as usize;
    let mut o = base;
    let mut put = |v: u64, mem: &mut [u8]| {
        mem[o..o + 8].copy_from_slice(&v.to_le_bytes());
        o += 8;
    };
    put(argv.len() as u64, w.mem);
    for list in [(argv, arg_lo), (envp, env_lo)] {
        let mut p = list.1;
        for s in list.0 {
            put(p, w.mem);
            p += s.len() as u64 + 1;
        }
        put(0, w.mem);
    }
    for (k, v) in auxv {
        put(k, w.mem);
        put(v, w.mem);
    }
    put(AT_NULL, w.mem);
    put(0, w.mem);
    rsp = top - (w.mem.len() - base) as u64;
    Ok(rsp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(mem: &[u8], top: u64, addr: u64) -> u64 {
        let o = mem.len() - (top - addr) as usize;
        u64::from_le_bytes(mem[o..o + 8].try_into().unwrap())
    }

    fn cstr(mem: &[u8], top: u64, addr: u64) -> Vec<u8> {
        let o = mem.len() - (top - addr) as usize;
        mem[o..].iter().take_while(|&&b| b != 0).copied().collect()
    }

    #[test]
    fn layout_matches_the_abi() {
        let top = 0x7fff_ffff_f000;
        let mut mem = vec![0u8; 8192];
        let aux = AuxInfo {
            phdr: 0x400040,
            phnum: 7,
            entry: 0x401000,
            hwcap: 0x178bfbff,
            clktck: 100,
            uid: 0,
            gid: 0,
            random: [7; 16],
        };
        let rsp = build(
            &mut mem,
            top,
            &[&b"/sbin/init"[..], b"-v"],
            &[&b"HOME=/"[..], b"TERM=linux"],
            b"/sbin/init",
            &aux,
        )
        .unwrap();
        assert_eq!(rsp % 16, 0);
        assert_eq!(word(&mem, top, rsp), 2, "argc");
        assert_eq!(cstr(&mem, top, word(&mem, top, rsp + 8)), b"/sbin/init");
        assert_eq!(cstr(&mem, top, word(&mem, top, rsp + 16)), b"-v");
        assert_eq!(word(&mem, top, rsp + 24), 0);
        assert_eq!(cstr(&mem, top, word(&mem, top, rsp + 32)), b"HOME=/");
        assert_eq!(cstr(&mem, top, word(&mem, top, rsp + 40)), b"TERM=linux");
        assert_eq!(word(&mem, top, rsp + 48), 0);
        // auxv
        let mut a = rsp + 56;
        let mut seen = std::collections::HashMap::new();
        loop {
            let (k, v) = (word(&mem, top, a), word(&mem, top, a + 8));
            a += 16;
            if k == AT_NULL {
                break;
            }
            seen.insert(k, v);
        }
        assert_eq!(seen[&AT_PHDR], 0x400040);
        assert_eq!(seen[&AT_PHENT], 56);
        assert_eq!(seen[&AT_PHNUM], 7);
        assert_eq!(seen[&AT_PAGESZ], 4096);
        assert_eq!(seen[&AT_ENTRY], 0x401000);
        for k in [AT_UID, AT_EUID, AT_GID, AT_EGID, AT_SECURE] {
            assert_eq!(seen[&k], 0);
        }
        assert_eq!(seen[&AT_HWCAP], 0x178bfbff);
        let r = seen[&AT_RANDOM];
        let o = mem.len() - (top - r) as usize;
        assert_eq!(&mem[o..o + 16], &[7; 16]);
        assert_eq!(cstr(&mem, top, seen[&AT_PLATFORM]), b"x86_64");
        assert_eq!(cstr(&mem, top, seen[&AT_EXECFN]), b"/sbin/init");
        // The top 8 bytes are the zero end marker.
        assert_eq!(word(&mem, top, top - 8), 0);
        assert!(a <= top);
    }

    #[test]
    fn too_small_is_an_error() {
        let mut mem = vec![0u8; 64];
        let aux = AuxInfo {
            phdr: 0,
            phnum: 0,
            entry: 0,
            hwcap: 0,
            clktck: 100,
            uid: 0,
            gid: 0,
            random: [0; 16],
        };
        assert_eq!(
            build(&mut mem, 0x1000, &[&b"x"[..]], &[], b"x", &aux),
            Err(BuildError::TooSmall)
        );
    }

    #[test]
    fn size_needed_is_enough_for_long_lists() {
        let aux = AuxInfo {
            phdr: 0,
            phnum: 0,
            entry: 0,
            hwcap: 0,
            clktck: 100,
            uid: 0,
            gid: 0,
            random: [7; 16],
        };
        let long = vec![b'a'; 4095];
        let argv: Vec<&[u8]> = (0..300).map(|i| &long[..i * 13 % 4096]).collect();
        let envp: Vec<&[u8]> = vec![b"A=1", b"", b"PATH=/bin"];
        let need = size_needed(&argv, &envp, b"/bin/x") as usize;
        let top = 0x7fff_ffff_f000;
        let mut mem = vec![0u8; need];
        let rsp = build(&mut mem, top, &argv, &envp, b"/bin/x", &aux).unwrap();
        assert_eq!(word(&mem, top, rsp), 300);
        for (i, a) in argv.iter().enumerate() {
            let p = word(&mem, top, rsp + 8 + 8 * i as u64);
            assert_eq!(&cstr(&mem, top, p), a, "argv[{i}]");
        }
        let envp0 = rsp + 8 + 8 * 301;
        for (i, e) in envp.iter().enumerate() {
            let p = word(&mem, top, envp0 + 8 * i as u64);
            assert_eq!(&cstr(&mem, top, p), e, "envp[{i}]");
        }
        // The areas /proc reads: from argv[0] to just past the last argument's NUL, then the
        // environment's strings in the same way.
        let ((a0, a1), (e0, e1)) = string_areas(top, &argv, &envp, b"/bin/x");
        assert_eq!(a0, word(&mem, top, rsp + 8));
        assert_eq!(a1, e0);
        assert_eq!(e0, word(&mem, top, envp0));
        let last = word(&mem, top, envp0 + 16);
        assert_eq!(e1, last + b"PATH=/bin".len() as u64 + 1);
        let base = top - mem.len() as u64;
        let area = &mem[(a0 - base) as usize..(a1 - base) as usize];
        let want: Vec<u8> = argv
            .iter()
            .flat_map(|a| a.iter().copied().chain([0]))
            .collect();
        assert_eq!(area, &want[..]);
    }
}
