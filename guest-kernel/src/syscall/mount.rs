//! mount(2) and umount2(2): ext2 from a virtio disk (`/dev/vdX`) or a new tmpfs on a directory,
//! remounting read-only or read-write (and a tmpfs's size), and taking a mount away again.
//!
//! Not done (EINVAL): bind mounts (MS_BIND) and moving mounts (MS_MOVE). A mount on a directory that
//! is a mount point already is EBUSY here (Linux stacks it). The propagation flags
//! (MS_SHARED/PRIVATE/SLAVE/UNBINDABLE) are accepted and change nothing: there is one namespace.
#![deny(unsafe_code)]

use super::file::user_cstr;
use super::path::absolute_path;
use super::SysResult;
use crate::fs::{self, mount, tmpfs};
use alloc::boxed::Box;
use alloc::vec::Vec;
use kcore::errno::Errno;
use kcore::ext2::Ext2Error;

const MS_RDONLY: u64 = 1;
const MS_REMOUNT: u64 = 32;
const MS_BIND: u64 = 4096;
const MS_MOVE: u64 = 8192;
/// MS_UNBINDABLE | MS_PRIVATE | MS_SLAVE | MS_SHARED.
const MS_PROPAGATION: u64 = (1 << 17) | (1 << 18) | (1 << 19) | (1 << 20);
/// The old magic number in the top half of `flags` (ignored, as Linux does).
const MS_MGC_MSK: u64 = 0xffff_0000;
const MS_MGC_VAL: u64 = 0xc0ed_0000;

const MNT_FORCE: u32 = 1;
const MNT_DETACH: u32 = 2;
const MNT_EXPIRE: u32 = 4;
const UMOUNT_NOFOLLOW: u32 = 8;

/// A user string argument that may be NULL.
fn opt_str(va: u64) -> Result<Vec<u8>, Errno> {
    if va == 0 {
        Ok(Vec::new())
    } else {
        user_cstr(va)
    }
}

/// ext2 options Linux takes that change nothing here; any other is EINVAL.
fn ext2_options_ok(data: &[u8]) -> bool {
    data.split(|&c| c == b',')
        .filter(|o| !o.is_empty())
        .all(|o| {
            let key = o.split(|&c| c == b'=').next().unwrap_or(o);
            matches!(
                key,
                b"rw"
                    | b"ro"
                    | b"defaults"
                    | b"errors"
                    | b"user_xattr"
                    | b"nouser_xattr"
                    | b"acl"
                    | b"noacl"
                    | b"bsddf"
                    | b"grpid"
                    | b"nogrpid"
                    | b"nouid32"
            )
        })
}

pub fn sys_mount(source: u64, target: u64, fstype: u64, flags: u64, data: u64) -> SysResult {
    let mut flags = flags;
    if flags & MS_MGC_MSK == MS_MGC_VAL {
        flags &= !MS_MGC_MSK;
    }
    let target = absolute_path(user_cstr(target)?)?;
    let data = opt_str(data)?;
    if flags & MS_PROPAGATION != 0 && flags & (MS_REMOUNT | MS_BIND | MS_MOVE) == 0 {
        mount::resolve(&target, true)?;
        return Ok(0);
    }
    if flags & (MS_BIND | MS_MOVE) != 0 {
        return Err(Errno::EINVAL);
    }
    let ro = flags & MS_RDONLY != 0;
    let (mnt, dir) = mount::resolve(&target, true)?;
    if flags & MS_REMOUNT != 0 {
        if dir.ino != mnt.root_ino {
            return Err(Errno::EINVAL);
        }
        if !ro {
            if let Some(disk) = mnt.disk {
                let device_ro =
                    crate::drivers::virtio::with_block(disk, |d| d.readonly()).unwrap_or(true);
                if device_ro {
                    return Err(Errno::EACCES);
                }
            }
        }
        let ram = fs::ram_bytes();
        if ro {
            fs::writeback::write_back_mount(&mnt)?;
        }
        return mnt
            .with(|fs| {
                fs.remount(&data, ram)?;
                // Read-only: what is dirty is written first (Ext2::set_read_only syncs).
                fs.set_read_only(ro)
            })
            .map(|_| 0);
    }
    if !dir.is_dir() {
        return Err(Errno::ENOTDIR);
    }
    if mount::is_mount_point(&mnt, dir.ino) {
        return Err(Errno::EBUSY);
    }
    // Its path as /proc/mounts shows it (a relative target is resolved from the directory).
    let target = mount::path_of(&mnt, dir.ino, target.text())?;
    let fstype = user_cstr(fstype)?;
    match fstype.as_slice() {
        b"tmpfs" => {
            let opts = tmpfs::Options::parse(&data, fs::ram_bytes()).map_err(|_| Errno::EINVAL)?;
            let mut t = tmpfs::Tmpfs::new(&opts, fs::ram_bytes(), fs::now());
            if ro {
                let _ = mount::FileSystem::set_read_only(&mut t, true);
            }
            let source = opt_str(source)?;
            mount::add(
                Box::new(t),
                "tmpfs",
                if source.is_empty() {
                    b"none".to_vec()
                } else {
                    source
                },
                target,
                Some((mnt, dir.ino)),
                None,
            );
            Ok(0)
        }
        b"ext2" => {
            if !ext2_options_ok(&data) {
                return Err(Errno::EINVAL);
            }
            let source = absolute_path(user_cstr(source)?)?;
            let source = source.text().to_vec();
            let index = match fs::disk_index(&source) {
                Some(i) => i,
                None => {
                    // Something that exists but is no disk is ENOTBLK, as Linux.
                    fs::open(&fs::Path::absolute(source), fs::O_NOCTTY, 0)?;
                    return Err(Errno::ENOTBLK);
                }
            };
            if mount::by_disk(index).is_some() {
                return Err(Errno::EBUSY);
            }
            let name = core::str::from_utf8(&source).unwrap_or("?");
            let (e, _) = fs::open_ext2_disk(index, name, !ro).map_err(|e| match e {
                Ext2Error::BadMagic | Ext2Error::Unsupported(_) | Ext2Error::Corrupt(_) => {
                    Errno::EINVAL
                }
                _ => Errno::EIO,
            })?;
            mount::add(
                Box::new(e),
                "ext2",
                source,
                target,
                Some((mnt, dir.ino)),
                Some(index),
            );
            Ok(0)
        }
        _ => Err(Errno::ENODEV),
    }
}

pub fn sys_umount2(target: u64, flags: u32) -> SysResult {
    if flags & !(MNT_FORCE | MNT_DETACH | MNT_EXPIRE | UMOUNT_NOFOLLOW) != 0
        || (flags & MNT_EXPIRE != 0 && flags & (MNT_FORCE | MNT_DETACH) != 0)
    {
        return Err(Errno::EINVAL);
    }
    let target = absolute_path(user_cstr(target)?)?;
    let (mnt, dir) = mount::resolve(&target, flags & UMOUNT_NOFOLLOW == 0)?;
    if dir.ino != mnt.root_ino {
        return Err(Errno::EINVAL);
    }
    mount::remove(mnt, flags & MNT_DETACH != 0).map(|_| 0)
}
