//! The shared libraries a dynamically linked exec file needs inside the jail: its ELF interpreter
//! (`PT_INTERP`) and its `DT_NEEDED` libraries, recursively, found in the standard directories. A static
//! binary (musl, or glibc with `crt-static`) needs none.

use std::path::{Path, PathBuf};

use object::elf::{DT_NEEDED, PT_INTERP};
use object::read::elf::{Dyn, ElfFile64, FileHeader, ProgramHeader};
use object::Endianness;

/// Where `DT_NEEDED` names are looked up, in order (the dynamic loader's defaults on x86_64 Debian).
const DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Why the libraries could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum LibsError {
    #[error("{0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0}: not an x86_64 ELF file: {1}")]
    Parse(PathBuf, #[source] object::read::Error),
    #[error("{0}: a DT_NEEDED name lies outside the string table")]
    BadName(PathBuf),
    #[error("{0} needs {1}, which is in none of {dirs}", dirs = DIRS.join(", "))]
    NotFound(PathBuf, String),
}

/// The interpreter and needed libraries of one ELF file.
fn direct(path: &Path) -> Result<(Option<PathBuf>, Vec<String>), LibsError> {
    let data = std::fs::read(path).map_err(|e| LibsError::Read(path.to_owned(), e))?;
    let parse = |e| LibsError::Parse(path.to_owned(), e);
    let elf = ElfFile64::<Endianness>::parse(data.as_slice()).map_err(parse)?;
    let endian = elf.endian();
    let header = elf.elf_header();
    let mut interp = None;
    for ph in header
        .program_headers(endian, data.as_slice())
        .map_err(parse)?
    {
        if ph.p_type(endian) == PT_INTERP {
            if let Ok(bytes) = ph.data(endian, data.as_slice()) {
                let name = bytes.split(|b| *b == 0).next().unwrap_or_default();
                interp = Some(PathBuf::from(String::from_utf8_lossy(name).into_owned()));
            }
        }
    }
    let sections = header.sections(endian, data.as_slice()).map_err(parse)?;
    let mut needed = Vec::new();
    if let Some((dyns, link)) = sections.dynamic(endian, data.as_slice()).map_err(parse)? {
        let strings = sections
            .strings(endian, data.as_slice(), link)
            .map_err(parse)?;
        for d in dyns {
            if d.tag32(endian) == Some(DT_NEEDED) {
                let name = strings
                    .get(d.d_val(endian) as u32)
                    .map_err(|()| LibsError::BadName(path.to_owned()))?;
                needed.push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Ok((interp, needed))
}

/// Every file `exe` needs to run besides itself: interpreter and libraries, by absolute path.
pub fn needed_files(exe: &Path) -> Result<Vec<PathBuf>, LibsError> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut todo = vec![exe.to_path_buf()];
    while let Some(file) = todo.pop() {
        let (interp, needed) = direct(&file)?;
        let mut found = Vec::new();
        found.extend(interp);
        for name in needed {
            let path = DIRS
                .iter()
                .map(|d| Path::new(d).join(&name))
                .find(|p| p.exists())
                .ok_or_else(|| LibsError::NotFound(file.clone(), name.clone()))?;
            found.push(path);
        }
        for path in found {
            if !out.contains(&path) {
                out.push(path.clone());
                todo.push(path);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_needs_libc_and_its_loader() {
        let exe = std::env::current_exe().unwrap();
        let files = needed_files(&exe).unwrap();
        assert!(files.iter().any(|f| f.ends_with("libc.so.6")), "{files:?}");
        assert!(
            files
                .iter()
                .any(|f| f.to_string_lossy().contains("ld-linux-x86-64")),
            "{files:?}"
        );
    }
}
