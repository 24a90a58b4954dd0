//! [`Path`]: a path as the VFS takes it, after the system call layer (`syscall/path.rs`) has made it
//! absolute against the working directory or a directory descriptor.
//!
//! A relative path on a mounted filesystem is walked from the directory itself, not from its name:
//! Linux's dirfd and working directory hold the directory, so a path relative to one still works
//! after the directory is renamed or moved, and `..` is its real parent. So a [`Path`] says where
//! its walk starts ([`Start`]) beside its text. The text is what a person would write, the same for
//! both starts: the display text kept for /proc/PID/fd, exec's exe, and looking up the device and
//! /proc registries (which go by name).
#![deny(unsafe_code)]

use super::Mount;
use alloc::vec::Vec;

/// Where the walk of a [`Path`] starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The namespace's root: the whole text is walked.
    Root,
    /// Directory `ino` of the mount whose id is `mount` (found again by id when the path is
    /// resolved, so a mount taken away meanwhile is ENOENT). The text is that directory's path as
    /// it was opened (`display_len` bytes, without trailing slashes), `/`, and the relative part,
    /// which is what is walked.
    Dir {
        mount: u32,
        ino: u32,
        display_len: usize,
    },
}

/// A path and what its walk starts at.
#[derive(Clone, Debug)]
pub struct Path {
    start: Start,
    text: Vec<u8>,
}

impl Path {
    /// An absolute path (kernel paths, and user paths that begin with `/`), walked from the root.
    pub fn absolute(text: impl Into<Vec<u8>>) -> Path {
        Path {
            start: Start::Root,
            text: text.into(),
        }
    }

    /// `rel`, relative to directory `ino` of `m`, which was opened as `display`.
    pub fn in_dir(m: &Mount, ino: u32, display: &[u8], rel: &[u8]) -> Path {
        // Without its trailing slashes (the root's display is empty): one `/` joins it to `rel`.
        let display = &display[..display
            .iter()
            .rposition(|&c| c != b'/')
            .map_or(0, |i| i + 1)];
        let mut text = Vec::with_capacity(display.len() + 1 + rel.len());
        text.extend_from_slice(display);
        text.push(b'/');
        text.extend_from_slice(rel);
        Path {
            start: Start::Dir {
                mount: m.id,
                ino,
                display_len: display.len(),
            },
            text,
        }
    }

    /// Where the walk starts.
    pub fn start(&self) -> Start {
        self.start
    }

    /// The path as a person would write it (for a path in a directory: the directory's path as
    /// opened, `/`, the relative part).
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// What is walked from [`Path::start`]: the whole text from the root, or the relative part
    /// (without leading slashes) from a directory.
    pub fn walked(&self) -> &[u8] {
        match self.start {
            Start::Root => &self.text,
            Start::Dir { display_len, .. } => {
                let rel = &self.text[display_len.min(self.text.len())..];
                &rel[rel.iter().position(|&c| c != b'/').unwrap_or(rel.len())..]
            }
        }
    }

    /// Where the text that can be cut begins: all of it from the root, the joining `/` in a
    /// directory.
    fn floor(&self) -> usize {
        match self.start {
            Start::Root => 0,
            Start::Dir { display_len, .. } => display_len.min(self.text.len()),
        }
    }

    /// The text without trailing slashes (but `/` stays `/`, and a directory's joining `/` stays).
    pub fn trimmed(&self) -> &[u8] {
        let floor = self.floor();
        let mut end = self.text.len();
        while end > floor + 1 && self.text[end - 1] == b'/' {
            end -= 1;
        }
        &self.text[..end]
    }

    /// The path of the directory holding the last component, and that component's name (trailing
    /// slashes are not a component; empty for `/`). None for a path without a `/` (nothing to
    /// walk from: only an empty or malformed text).
    pub fn split_last(&self) -> Option<(Path, &[u8])> {
        let floor = self.floor();
        let end = self.trimmed().len();
        let cut = floor + self.text[floor..end].iter().rposition(|&c| c == b'/')?;
        let dir_end = match self.start {
            // `/name`'s directory is `/`.
            Start::Root => cut.max(1),
            // The directory itself when `cut` is the joining `/` (nothing left to walk).
            Start::Dir { .. } => cut,
        };
        let dir = Path {
            start: self.start,
            text: self.text[..dir_end].to_vec(),
        };
        Some((dir, &self.text[cut + 1..end]))
    }
}
