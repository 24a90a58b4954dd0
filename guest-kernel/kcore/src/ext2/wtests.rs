//! Host tests of writing: images made by `mke2fs -d` (1 KiB and 4 KiB blocks), changed here, then
//! checked with `e2fsck -fn` (nothing to fix) and read back with `debugfs`.

use super::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An in-memory disk.
struct MemDev(Vec<u8>);

impl BlockDevice for MemDev {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Ext2Error> {
        assert_eq!(offset % 512, 0, "unaligned read");
        assert_eq!(buf.len() % 512, 0, "unaligned read length");
        let o = offset as usize;
        buf.copy_from_slice(self.0.get(o..o + buf.len()).ok_or(Ext2Error::Io)?);
        Ok(())
    }
    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), Ext2Error> {
        assert_eq!(offset % 512, 0, "unaligned write");
        assert_eq!(buf.len() % 512, 0, "unaligned write length");
        let o = offset as usize;
        self.0
            .get_mut(o..o + buf.len())
            .ok_or(Ext2Error::Io)?
            .copy_from_slice(buf);
        Ok(())
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kcore-ext2w-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// An image of `size` (mke2fs units) with `block` byte blocks holding a small tree.
fn image(tag: &str, block: u32, size: &str) -> (PathBuf, Ext2<MemDev>) {
    let dir = tmpdir(tag);
    let root = dir.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/motd"), b"hello\n").unwrap();
    fs::create_dir_all(root.join("full")).unwrap();
    fs::write(root.join("full/a"), b"a").unwrap();
    let img = dir.join("fs.img");
    let st = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext2", "-b", &block.to_string(), "-d"])
        .arg(&root)
        .arg(&img)
        .arg(size)
        .status()
        .expect("mke2fs (e2fsprogs) must be installed");
    assert!(st.success());
    let fs = Ext2::open(MemDev(fs::read(&img).unwrap())).unwrap();
    assert!(fs.writable());
    (dir, fs)
}

/// Syncs, writes the image out and runs `e2fsck -fn` on it: it must find nothing.
fn fsck(dir: &Path, fs: &mut Ext2<MemDev>) -> PathBuf {
    fs.sync().unwrap();
    let img = dir.join("out.img");
    fs::write(&img, &fs.device().0).unwrap();
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// `debugfs -R "cat PATH"` on the image.
fn debugfs_cat(img: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn lookup(fs: &mut Ext2<MemDev>, path: &str) -> Inode {
    fs.resolve(path.as_bytes(), false).unwrap()
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// A clock near the epoch, as the guest's is without an RTC (dtime must still not look like an
/// orphan-list link to e2fsck).
const NOW: u32 = 20;

fn files_dirs_and_links(block: u32) {
    let (dir, mut fs) = image(&format!("ops{block}"), block, "16M");
    let mut root = fs.inode(ROOT_INO).unwrap();
    // Files of several sizes: direct, single and double indirect blocks.
    let sizes = [0usize, 1, 1000, 5000, 300 * 1024, 1200 * 1024];
    for (i, &n) in sizes.iter().enumerate() {
        let name = format!("f{i}");
        let mut f = fs
            .create(&mut root, name.as_bytes(), S_IFREG | 0o644, NOW)
            .unwrap();
        let data = pattern(n, i as u32);
        // In uneven pieces, as programs write.
        let mut at = 0;
        while at < n {
            let step = (n - at).min(777 + at % 3000);
            assert_eq!(
                fs.write_at(&mut f, at as u64, &data[at..at + step], NOW)
                    .unwrap(),
                step
            );
            at += step;
        }
        assert_eq!(fs.inode(f.ino).unwrap().size, n as u64);
    }
    // Directories, a rename across them, a hard link, symlinks fast and slow.
    let mut d1 = fs.mkdir(&mut root, b"d1", 0o755, NOW).unwrap();
    let mut d2 = fs.mkdir(&mut root, b"d2", 0o700, NOW).unwrap();
    let mut sub = fs.mkdir(&mut d1, b"sub", 0o755, NOW).unwrap();
    fs.create(&mut sub, b"inner", S_IFREG | 0o600, NOW).unwrap();
    assert_eq!(
        fs.mkdir(&mut root, b"d1", 0o755, NOW).unwrap_err(),
        Ext2Error::Exists
    );
    fs.rename(&mut d1, b"sub", Some(&mut d2), b"moved", false, NOW)
        .unwrap();
    let mut f2 = lookup(&mut fs, "/f2");
    fs.link(&mut f2, &mut d2, b"f2-link", NOW).unwrap();
    fs.symlink(&mut root, b"fast", b"/f2", NOW).unwrap();
    let long = format!("/d2/{}", "y".repeat(100));
    fs.symlink(&mut root, b"slow", long.as_bytes(), NOW)
        .unwrap();
    // Rename over an existing file, RENAME_NOREPLACE, a directory into its own child.
    let mut root = fs.inode(ROOT_INO).unwrap();
    assert_eq!(
        fs.rename(&mut root, b"f1", None, b"f3", true, NOW)
            .unwrap_err(),
        Ext2Error::Exists
    );
    fs.rename(&mut root, b"f1", None, b"f3", false, NOW)
        .unwrap();
    let mut d2 = lookup(&mut fs, "/d2");
    let mut moved = lookup(&mut fs, "/d2/moved");
    let mut root = fs.inode(ROOT_INO).unwrap();
    assert_eq!(
        fs.rename(&mut root, b"d2", Some(&mut moved), b"x", false, NOW)
            .unwrap_err(),
        Ext2Error::Invalid
    );
    assert_eq!(
        fs.rmdir(&mut d2, b"moved", NOW).unwrap_err(),
        Ext2Error::NotEmpty
    );
    let mut root = fs.inode(ROOT_INO).unwrap();
    assert_eq!(
        fs.unlink(&mut root, b"d1", NOW).unwrap_err(),
        Ext2Error::IsDir
    );
    fs.unlink(&mut root, b"f0", NOW).unwrap();
    // chmod, chown, utimens.
    let mut f4 = lookup(&mut fs, "/f4");
    fs.set_attr(
        &mut f4,
        Some(0o640),
        (Some(1000), Some(100)),
        (Some(5), Some(6)),
        NOW,
    )
    .unwrap();
    let img = fsck(&dir, &mut fs);

    for i in [2, 4, 5] {
        let name = format!("/f{i}");
        assert_eq!(
            debugfs_cat(&img, &name),
            pattern(sizes[i], i as u32),
            "{name}"
        );
    }
    assert_eq!(
        debugfs_cat(&img, "/f3"),
        pattern(1, 1),
        "f1 renamed over f3"
    );
    assert_eq!(debugfs_cat(&img, "/d2/f2-link"), pattern(1000, 2));
    let slow = lookup(&mut fs, "/slow");
    assert_eq!(fs.read_link(&slow).unwrap(), long.as_bytes());
    assert_eq!(fs.resolve(b"/fast", true).unwrap().ino, f2.ino);
    assert_eq!(fs.inode(f2.ino).unwrap().links, 2);
    let moved = lookup(&mut fs, "/d2/moved");
    let d2_ino = lookup(&mut fs, "/d2").ino;
    assert_eq!(fs.lookup(&moved, b"..").unwrap(), Some(d2_ino));
    assert_eq!(lookup(&mut fs, "/d1").links, 2, "d1 lost its subdirectory");
    assert_eq!(lookup(&mut fs, "/d2").links, 3, "d2 gained one");
    let f4 = lookup(&mut fs, "/f4");
    assert_eq!(
        (f4.mode & 0o7777, f4.uid, f4.gid, f4.atime, f4.mtime),
        (0o640, 1000, 100, 5, 6)
    );

    // Truncation frees blocks (indirect ones too) and e2fsck agrees with the counts.
    let free_before = fs.statfs().1;
    let mut f5 = lookup(&mut fs, "/f5");
    fs.truncate(&mut f5, 3000, NOW).unwrap();
    assert!(fs.statfs().1 > free_before + 1000 / (block as u64 / 1024).max(1));
    // Growing again reads zeros past the old tail.
    fs.truncate(&mut f5, 10_000, NOW).unwrap();
    let mut back = vec![0xaa; 10_000];
    fs.read_at(&f5, 0, &mut back).unwrap();
    assert_eq!(&back[..3000], &pattern(1200 * 1024, 5)[..3000]);
    assert!(back[3000..].iter().all(|&b| b == 0));
    // Unlink everything created: the free counts come back to where they were.
    let mut root = fs.inode(ROOT_INO).unwrap();
    for n in ["f2", "f3", "f4", "f5", "fast", "slow"] {
        fs.unlink(&mut root, n.as_bytes(), NOW).unwrap();
    }
    let mut d2 = lookup(&mut fs, "/d2");
    fs.unlink(&mut d2, b"f2-link", NOW).unwrap();
    let mut moved = lookup(&mut fs, "/d2/moved");
    fs.unlink(&mut moved, b"inner", NOW).unwrap();
    fs.rmdir(&mut d2, b"moved", NOW).unwrap();
    let mut root = fs.inode(ROOT_INO).unwrap();
    fs.rmdir(&mut root, b"d2", NOW).unwrap();
    let mut root = fs.inode(ROOT_INO).unwrap();
    fs.rmdir(&mut root, b"d1", NOW).unwrap();
    fsck(&dir, &mut fs);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn files_dirs_and_links_1k() {
    files_dirs_and_links(1024);
}

#[test]
fn files_dirs_and_links_4k() {
    files_dirs_and_links(4096);
}

/// Sparse files reaching triple indirect blocks (a byte past 1 GiB with 1 KiB blocks; past 5 GiB with
/// 4 KiB ones), then truncated to nothing.
fn sparse_and_huge(block: u32, offset: u64) {
    let (dir, mut fs) = image(&format!("huge{block}"), block, "8M");
    let free = fs.statfs().1;
    let mut root = fs.inode(ROOT_INO).unwrap();
    let mut f = fs.create(&mut root, b"huge", S_IFREG | 0o644, NOW).unwrap();
    fs.write_at(&mut f, offset, b"far away", NOW).unwrap();
    fs.write_at(&mut f, 5, b"near", NOW).unwrap();
    assert_eq!(f.size, offset + 8);
    let mut buf = [0u8; 8];
    fs.read_at(&f, offset, &mut buf).unwrap();
    assert_eq!(&buf, b"far away");
    fs.read_at(&f, offset - 8, &mut buf).unwrap();
    assert_eq!(buf, [0; 8], "the hole reads as zeros");
    let img = fsck(&dir, &mut fs);
    let out = Command::new("debugfs")
        .arg("-R")
        .arg("stat /huge")
        .arg(&img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("Size: {}", offset + 8)), "{text}");
    assert!(
        text.contains("TRIPLE INDIRECT") || text.contains("TIND"),
        "{text}"
    );
    fs.truncate(&mut f, 0, NOW).unwrap();
    assert_eq!(fs.statfs().1, free, "every block came back");
    fsck(&dir, &mut fs);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn sparse_and_huge_1k() {
    sparse_and_huge(1024, (1 << 30) + 12345);
}

#[test]
fn sparse_and_huge_4k() {
    sparse_and_huge(4096, (5 << 30) + 12345);
}

/// Thousands of entries in one directory, half removed, the rest renamed.
#[test]
fn thousands_of_entries() {
    let (dir, mut fs) = image("many", 1024, "16M");
    let mut root = fs.inode(ROOT_INO).unwrap();
    let mut d = fs.mkdir(&mut root, b"many", 0o755, NOW).unwrap();
    for i in 0..3000 {
        let name = format!("file-with-a-longish-name-{i}");
        let mut f = fs
            .create(&mut d, name.as_bytes(), S_IFREG | 0o644, NOW)
            .unwrap();
        fs.write_at(&mut f, 0, name.as_bytes(), NOW).unwrap();
    }
    for i in (0..3000).step_by(2) {
        let name = format!("file-with-a-longish-name-{i}");
        fs.unlink(&mut d, name.as_bytes(), NOW).unwrap();
    }
    for i in (1..3000).step_by(2) {
        let from = format!("file-with-a-longish-name-{i}");
        let to = format!("r{i}");
        fs.rename(&mut d, from.as_bytes(), None, to.as_bytes(), false, NOW)
            .unwrap();
        d = fs.inode(d.ino).unwrap();
    }
    let names = fs.read_dir(&d).unwrap();
    assert_eq!(names.len(), 1500 + 2);
    // The directory's index (it is far past INDEX_MIN_BLOCKS) answers as the blocks do.
    for e in &names {
        assert_eq!(fs.lookup(&d, &e.name).unwrap(), Some(e.ino));
    }
    for i in (0..3000).step_by(2) {
        let gone = format!("file-with-a-longish-name-{i}");
        assert_eq!(fs.lookup(&d, gone.as_bytes()).unwrap(), None);
    }
    // Into a second large directory and back over an existing name: both indexes follow.
    let mut root = fs.inode(ROOT_INO).unwrap();
    let mut d2 = fs.mkdir(&mut root, b"other", 0o755, NOW).unwrap();
    for i in 0..400 {
        let name = format!("o{i:04}-with-some-length");
        fs.create(&mut d2, name.as_bytes(), S_IFREG | 0o644, NOW)
            .unwrap();
    }
    let moved = fs.lookup(&d, b"r1").unwrap().unwrap();
    fs.rename(
        &mut d,
        b"r1",
        Some(&mut d2),
        b"o0007-with-some-length",
        false,
        NOW,
    )
    .unwrap();
    d = fs.inode(d.ino).unwrap();
    d2 = fs.inode(d2.ino).unwrap();
    assert_eq!(fs.lookup(&d, b"r1").unwrap(), None);
    assert_eq!(
        fs.lookup(&d2, b"o0007-with-some-length").unwrap(),
        Some(moved)
    );
    assert_eq!(fs.read_dir(&d2).unwrap().len(), 400 + 2);
    let img = fsck(&dir, &mut fs);
    assert_eq!(
        debugfs_cat(&img, "/many/r2999"),
        b"file-with-a-longish-name-2999"
    );
    let _ = fs::remove_dir_all(dir);
}

/// A file or directory whose last link goes while it is open keeps its inode and blocks until the
/// last close (Linux's iput), then is freed; the image is clean either way.
#[test]
fn unlinked_while_open_is_freed_at_the_last_close() {
    let (dir, mut fs) = image("open-unlinked", 1024, "4M");
    let mut root = fs.inode(ROOT_INO).unwrap();
    let data = pattern(200 * 1024, 7);
    let mut f = fs.create(&mut root, b"held", S_IFREG | 0o644, NOW).unwrap();
    fs.write_at(&mut f, 0, &data, NOW).unwrap();
    let d = fs.mkdir(&mut root, b"held-dir", 0o755, NOW).unwrap();
    let (_, free_before, ..) = fs.statfs();
    fs.opened(f.ino);
    fs.opened(f.ino);
    fs.opened(d.ino);
    fs.unlink(&mut root, b"held", NOW).unwrap();
    fs.rmdir(&mut root, b"held-dir", NOW).unwrap();
    // Still there for the open files: no links, the data readable, nothing freed.
    let f = fs.inode(f.ino).unwrap();
    assert_eq!((f.links, f.size), (0, data.len() as u64));
    let mut back = vec![0u8; data.len()];
    fs.read_at(&f, 0, &mut back).unwrap();
    assert!(back == data);
    assert_eq!(fs.inode(d.ino).unwrap().links, 0);
    assert_eq!(fs.statfs().1, free_before);
    assert_eq!(fs.lookup(&root, b"held").unwrap(), None);
    // A new file must not get its inode.
    let mut root = fs.inode(ROOT_INO).unwrap();
    let other = fs
        .create(&mut root, b"other", S_IFREG | 0o644, NOW)
        .unwrap();
    assert!(other.ino != f.ino && other.ino != d.ino);
    assert!(!fs.closed(f.ino, NOW).unwrap());
    assert!(fs.closed(f.ino, NOW).unwrap());
    assert!(fs.closed(d.ino, NOW).unwrap());
    assert!(fs.statfs().1 > free_before);
    fsck(&dir, &mut fs);
    let _ = fs::remove_dir_all(dir);
}

/// A full disk: NoSpace, consistent; after a delete, writing works again.
#[test]
fn no_space_then_delete_and_write_again() {
    let (dir, mut fs) = image("full", 1024, "2M");
    let mut root = fs.inode(ROOT_INO).unwrap();
    let mut f = fs
        .create(&mut root, b"filler", S_IFREG | 0o644, NOW)
        .unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match fs.write_at(&mut f, total, &chunk, NOW) {
            Ok(n) => {
                total += n as u64;
                if n < chunk.len() {
                    break;
                }
            }
            Err(e) => {
                assert_eq!(e, Ext2Error::NoSpace);
                break;
            }
        }
    }
    assert_eq!(
        fs.write_at(&mut f, total, b"x", NOW),
        Err(Ext2Error::NoSpace)
    );
    assert_eq!(fs.statfs().1, 0);
    let img = fsck(&dir, &mut fs);
    assert_eq!(debugfs_cat(&img, "/filler").len() as u64, total);
    let mut root = fs.inode(ROOT_INO).unwrap();
    fs.unlink(&mut root, b"filler", NOW).unwrap();
    let mut g = fs
        .create(&mut root, b"again", S_IFREG | 0o644, NOW)
        .unwrap();
    assert_eq!(fs.write_at(&mut g, 0, &chunk, NOW).unwrap(), chunk.len());
    fsck(&dir, &mut fs);
    let _ = fs::remove_dir_all(dir);
}

/// Corrupt metadata: a block pointer past the end, an absurd directory size: errors, no panic.
#[test]
fn corrupt_metadata_is_an_error() {
    let (dir, mut fs) = image("corrupt", 1024, "2M");
    let mut motd = lookup(&mut fs, "/etc/motd");
    motd.block[0] = 0xfff_fff0;
    fs.write_inode(&motd).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(
        fs.read_at(&motd, 0, &mut buf),
        Err(Ext2Error::Corrupt(_))
    ));
    assert!(matches!(
        fs.write_at(&mut motd, 0, b"x", NOW),
        Err(Ext2Error::Corrupt(_))
    ));
    assert!(matches!(
        fs.extents(&motd, 0, 6),
        Err(Ext2Error::Corrupt(_))
    ));
    let mut etc = lookup(&mut fs, "/etc");
    etc.size = 1 << 40;
    fs.write_inode(&etc).unwrap();
    assert!(matches!(fs.read_dir(&etc), Err(Ext2Error::Corrupt(_))));
    let _ = fs::remove_dir_all(dir);
}

/// f_blocks as Linux 6.18's ext2 showed it for these images (`stat -f` of a loop mount): block count
/// less the metadata overhead.
#[test]
fn statfs_blocks_match_linux() {
    for (tag, args, size, linux_blocks) in [
        ("sf1", &["-b", "1024"][..], "8M", 7644u64),
        ("sf2", &["-b", "1024"][..], "300M", 285_823),
        ("sf3", &["-b", "4096"][..], "300M", 71_954),
        (
            "sf4",
            &["-b", "1024", "-O", "^resize_inode"][..],
            "100M",
            95_965,
        ),
    ] {
        let dir = tmpdir(tag);
        let img = dir.join("fs.img");
        let st = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext2"])
            .args(args)
            .arg(&img)
            .arg(size)
            .status()
            .unwrap();
        assert!(st.success());
        let fs = Ext2::open(MemDev(fs::read(&img).unwrap())).unwrap();
        let blocks = fs.statfs().0 - fs.statfs_overhead();
        assert_eq!(blocks, linux_blocks, "{tag} {args:?} {size}");
        let _ = fs::remove_dir_all(dir);
    }
}

/// What the kernel's write-back does: blocks reserved first (`reserve`), the bytes written later as
/// whole blocks found through `extents`; e2fsck finds nothing and debugfs reads the data. A full
/// disk reserves part of a write.
fn reserve_then_write_back(block: u32) {
    let (dir, mut fs) = image(&format!("reserve{block}"), block, "4M");
    let mut root = fs.inode(ROOT_INO).unwrap();
    let mut f = fs.create(&mut root, b"wb", S_IFREG | 0o644, NOW).unwrap();
    let data = pattern(300 * 1024 + 123, 7);
    // Reserved in uneven pieces, then written back in 4 KiB pages (zeros past the end).
    let mut at = 0;
    while at < data.len() {
        let step = (data.len() - at).min(5000 + at % 777);
        assert_eq!(fs.reserve(&mut f, at as u64, step, NOW).unwrap(), step);
        at += step;
    }
    assert_eq!(f.size, data.len() as u64);
    let bs = fs.block_size();
    for page in 0..data.len().div_ceil(4096) {
        let start = page * 4096;
        let mut buf = vec![0u8; 4096];
        let end = (start + 4096).min(data.len());
        buf[..end - start].copy_from_slice(&data[start..end]);
        for e in fs.extents(&f, start as u64, 4096).unwrap() {
            let d = e.disk_offset.expect("reserved blocks are no holes");
            let off = (e.file_offset - start as u64) as usize;
            let n = (e.len.div_ceil(bs) * bs) as usize;
            fs.device().write(d, &buf[off..off + n]).unwrap();
        }
    }
    // The disk fills: the reservation stops short, and nothing past it is claimed.
    let mut big = fs.create(&mut root, b"big", S_IFREG | 0o644, NOW).unwrap();
    let got = fs.reserve(&mut big, 0, 8 << 20, NOW).unwrap();
    assert!(got > 0 && got < 8 << 20, "reserved {got}");
    assert_eq!(big.size, got as u64);
    assert_eq!(
        fs.reserve(&mut big, got as u64, 1 << 20, NOW),
        Err(Ext2Error::NoSpace)
    );
    fs.truncate(&mut big, 0, NOW).unwrap();
    let img = fsck(&dir, &mut fs);
    assert_eq!(debugfs_cat(&img, "/wb"), data);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn reserve_then_write_back_1k() {
    reserve_then_write_back(1024);
}

#[test]
fn reserve_then_write_back_4k() {
    reserve_then_write_back(4096);
}

/// A write to the device underneath (`/dev/vdb` written while mounted) is seen after `reload`:
/// an inode's owner changed in the inode table and the superblock's free-inode count; before the
/// reload the cached copies are what the filesystem shows.
#[test]
fn a_device_write_underneath_is_seen_after_reload() {
    let (_img, mut fs) = image("reload", 1024, "2M");
    let mut root = fs.inode(ROOT_INO).unwrap();
    let f = fs.create(&mut root, b"f", S_IFREG | 0o644, NOW).unwrap();
    fs.write_back().unwrap();
    let uid = fs.inode(f.ino).unwrap().uid;
    let (_, _, _, _, free_inodes, _) = fs.statfs();
    // Another writer: the inode's i_uid (offset 2) and s_free_inodes_count (offset 16).
    let pos = fs.inode_pos(f.ino).unwrap();
    let sector = pos & !511;
    let mut raw = vec![0u8; 512];
    fs.device().read(sector, &mut raw).unwrap();
    let at = (pos - sector) as usize;
    raw[at + 2..at + 4].copy_from_slice(&(uid ^ 0x4d2).to_le_bytes());
    fs.device().write(sector, &raw).unwrap();
    let mut sb = vec![0u8; 1024];
    fs.device().read(1024, &mut sb).unwrap();
    sb[16..20].copy_from_slice(&(free_inodes as u32 - 1).to_le_bytes());
    fs.device().write(1024, &sb).unwrap();
    assert_eq!(fs.inode(f.ino).unwrap().uid, uid, "the cached inode");
    fs.reload().unwrap();
    assert_eq!(fs.inode(f.ino).unwrap().uid, uid ^ 0x4d2);
    assert_eq!(fs.statfs().4, free_inodes - 1);
    // Another filesystem's superblock written over this one is refused; the old view stays.
    sb[4..8].copy_from_slice(&12345u32.to_le_bytes());
    fs.device().write(1024, &sb).unwrap();
    assert!(fs.reload().is_err());
    assert_eq!(fs.inode(f.ino).unwrap().uid, uid ^ 0x4d2);
}
