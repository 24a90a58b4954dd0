//! A host TAP device, opened for virtio-net: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, a 12-byte virtio-net
//! header in front of every frame (`TUNSETVNETHDRSZ`), no offloads (`TUNSETOFFLOAD` 0, so the host never
//! hands us partial checksums or GSO frames), and non-blocking, so neither direction can stall the VMM
//! thread.
//!
//! The TAP must already exist (`ip tuntap add dev NAME mode tap`): `TUNSETIFF` would otherwise create a new
//! one, so its existence is checked first, and a TAP another process holds is reported as busy.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Size of the virtio-net header on the TAP (`struct virtio_net_hdr_v1`, with `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;
/// Longest interface name (IFNAMSIZ less the NUL).
const IFNAME_MAX: usize = 15;

/// Why a TAP could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is empty, too long or has a NUL.
    #[error("TAP device name {0:?} is invalid (1 to 15 bytes)")]
    BadName(String),
    /// No network device of that name exists.
    #[error("TAP device {0:?} does not exist (create it with: ip tuntap add dev {0} mode tap)")]
    Missing(String),
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(#[source] io::Error),
    /// Another process (or another interface of this VM) has the TAP open.
    #[error("TAP device {0:?} is busy (another process has it open)")]
    Busy(String),
    /// The device exists but is not a (single-queue) TAP: a TUN, a bridge, a multi-queue TAP, ...
    #[error("network device {0:?} is not a TAP device (or is a multi-queue one)")]
    NotTap(String),
    /// TUNSETIFF failed otherwise (no permission, ...).
    #[error("cannot attach to TAP device {name:?}: {source}")]
    Attach {
        /// The device.
        name: String,
        /// What TUNSETIFF said.
        #[source]
        source: io::Error,
    },
    /// A TAP ioctl other than TUNSETIFF failed.
    #[error("TAP device {name:?}: {op} failed: {source}")]
    Ioctl {
        /// The device.
        name: String,
        /// The ioctl.
        op: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags (the rest of the union is padding).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TAP (or, in tests, any datagram file descriptor).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Checks that a network device `name` exists (in this process's network namespace).
    pub fn ensure_exists(name: &str) -> Result<(), TapError> {
        if name.is_empty() || name.len() > IFNAME_MAX {
            return Err(TapError::BadName(name.to_owned()));
        }
        let cname = CString::new(name).map_err(|_| TapError::BadName(name.to_owned()))?;
        // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
        if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
            return Err(TapError::Missing(name.to_owned()));
        }
        Ok(())
    }

    /// Attaches to the existing TAP `name`.
    pub fn open(name: &str) -> Result<Self, TapError> {
        Self::ensure_exists(name)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq {
            name: [0; 16],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads (and may write) one `struct ifreq`; `req` is one, with the same layout
        // (16-byte name, then the flags in a 24-byte union), and lives across the call.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) => TapError::Busy(name.to_owned()),
                Some(libc::EINVAL) => TapError::NotTap(name.to_owned()),
                _ => TapError::Attach {
                    name: name.to_owned(),
                    source: e,
                },
            });
        }
        let tap = Self {
            file,
            name: name.to_owned(),
        };
        tap.ioctl_int(
            "TUNSETVNETHDRSZ",
            libc::TUNSETVNETHDRSZ,
            VNET_HDR_LEN as libc::c_int,
            true,
        )?;
        tap.ioctl_int("TUNSETOFFLOAD", libc::TUNSETOFFLOAD, 0, false)?;
        Ok(tap)
    }

    /// Wraps an already open datagram descriptor (a socketpair end in tests). It must be non-blocking.
    pub fn from_fd(fd: OwnedFd, name: &str) -> Self {
        Self {
            file: File::from(fd),
            name: name.to_owned(),
        }
    }

    /// The host device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn ioctl_int(
        &self,
        op: &'static str,
        req: libc::Ioctl,
        value: libc::c_int,
        by_pointer: bool,
    ) -> Result<(), TapError> {
        let r = if by_pointer {
            // SAFETY: this request reads one c_int through the pointer, which is valid for the call.
            unsafe { libc::ioctl(self.file.as_raw_fd(), req, &value as *const libc::c_int) }
        } else {
            // SAFETY: this request takes its argument by value; no memory is passed.
            unsafe { libc::ioctl(self.file.as_raw_fd(), req, value as libc::c_ulong) }
        };
        if r < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                op,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Reads one frame (virtio-net header first) into `buf`; `WouldBlock` when none is waiting.
    pub fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    /// Writes one frame given as a header and a body in a single `writev`; `WouldBlock` when the TAP
    /// cannot take it now.
    pub fn write_frame(&mut self, hdr: &[u8], frame: &[u8]) -> io::Result<usize> {
        self.file
            .write_vectored(&[IoSlice::new(hdr), IoSlice::new(frame)])
    }

    /// A second descriptor for the same TAP queue (tests use it to inject and collect frames).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            file: self.file.try_clone()?,
            name: self.name.clone(),
        })
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// A connected pair of non-blocking datagram sockets, standing in for a TAP and the host side of it.
#[cfg(any(test, feature = "test-utils"))]
pub fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: socketpair writes two descriptors into the array it is given, which has room for them.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created by socketpair and are owned by nobody else.
    Ok(unsafe {
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_and_missing_names_are_reported_before_touching_tun() {
        assert!(matches!(Tap::open(""), Err(TapError::BadName(_))));
        assert!(matches!(
            Tap::open(&"x".repeat(16)),
            Err(TapError::BadName(_))
        ));
        assert!(matches!(Tap::open("a\0b"), Err(TapError::BadName(_))));
        let e = Tap::open("mvmnotap0").unwrap_err();
        assert!(matches!(e, TapError::Missing(_)));
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn a_device_that_is_not_a_tap_is_named_as_such() {
        if std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .is_err()
        {
            eprintln!("SKIPPED: /dev/net/tun cannot be opened");
            return;
        }
        let e = Tap::open("lo").unwrap_err();
        assert!(matches!(e, TapError::NotTap(_)), "{e}");
        assert_eq!(
            e.to_string(),
            "network device \"lo\" is not a TAP device (or is a multi-queue one)"
        );
    }

    #[test]
    fn frames_keep_their_boundaries_over_a_socket_pair() {
        let (a, b) = socket_pair().unwrap();
        let mut vmm = Tap::from_fd(a, "pair");
        let mut host = Tap::from_fd(b, "pair");
        vmm.write_frame(&[0; VNET_HDR_LEN], b"abc").unwrap();
        vmm.write_frame(&[1; VNET_HDR_LEN], b"defg").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(host.read_frame(&mut buf).unwrap(), 15);
        assert_eq!(&buf[12..15], b"abc");
        assert_eq!(host.read_frame(&mut buf).unwrap(), 16);
        assert_eq!(
            host.read_frame(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(vmm.name(), "pair");
    }
}
