//! virtio-blk requests: parsing a descriptor chain ([`parse_request`]) and carrying it out against a
//! [`DiskFile`] ([`execute`]).
//!
//! Both are plain functions over guest memory and a descriptor chain, so they are tested with
//! `virtio_queue::mock::MockSplitQueue` and seeded random chains without a VM. Parsing makes no
//! assumption about descriptor framing (virtio 1.x, 2.6.4): the 16-byte header is the first 16
//! device-readable bytes wherever they sit, the status is the last device-writable byte, and data is what
//! lies between. Every range is checked against guest memory before use, and the chain length is bounded.
//!
//! When the chain has a usable status byte, a bad request is answered with `VIRTIO_BLK_S_IOERR` (or
//! `S_UNSUPP` for unknown types); without one, the caller can only return the chain with length 0.

use vm_memory::{
    Address, ByteValued, Bytes, GuestAddress, GuestMemoryBackend, Le32, Le64, VolatileSlice,
};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_queue::desc::split::Descriptor;

use crate::disk::DiskFile;
use crate::GuestMemoryMmap;

/// Bytes per virtio-blk sector (always 512, whatever the advertised block size).
pub const SECTOR_SIZE: u64 = 512;
/// Size of the request header (type, reserved, sector).
pub const HEADER_LEN: u64 = 16;
/// Size of one discard / write-zeroes segment.
pub const DISCARD_SEGMENT_LEN: u64 = 16;
/// Most discard / write-zeroes segments we accept in one request (advertised in config space).
pub const MAX_DISCARD_SEGMENTS: u32 = 32;

/// The request types we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    /// Read sectors into guest memory.
    In,
    /// Write sectors from guest memory.
    Out,
    /// Make completed writes durable.
    Flush,
    /// Return the device id (serial).
    GetId,
    /// Discard ranges.
    Discard,
    /// Zero ranges.
    WriteZeroes,
    /// Anything else: answered with `S_UNSUPP`.
    Unsupported(u32),
}

impl From<u32> for RequestType {
    fn from(t: u32) -> Self {
        match t {
            VIRTIO_BLK_T_IN => Self::In,
            VIRTIO_BLK_T_OUT => Self::Out,
            VIRTIO_BLK_T_FLUSH => Self::Flush,
            VIRTIO_BLK_T_GET_ID => Self::GetId,
            VIRTIO_BLK_T_DISCARD => Self::Discard,
            VIRTIO_BLK_T_WRITE_ZEROES => Self::WriteZeroes,
            other => Self::Unsupported(other),
        }
    }
}

/// A guest memory range known to lie inside guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Start.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u64,
}

/// A parsed, validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub request_type: RequestType,
    /// First sector.
    pub sector: u64,
    /// The data buffers: device-writable for In/GetId, device-readable for Out/Discard/WriteZeroes.
    pub data: Vec<Segment>,
    /// Total length of `data`.
    pub data_len: u64,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// Why a chain is not a valid request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No device-writable byte for the status.
    #[error("descriptor chain has no device-writable status byte")]
    NoStatus,
    /// A descriptor points outside guest memory (or wraps around).
    #[error("descriptor {addr:#x}+{len:#x} is outside guest memory")]
    BadAddress { addr: u64, len: u32 },
    /// A device-readable descriptor follows a device-writable one.
    #[error("device-readable descriptor after a device-writable one")]
    BadOrder,
    /// The chain has more descriptors than we advertise.
    #[error("descriptor chain has more than {0} descriptors")]
    TooLong(usize),
    /// Fewer than 16 device-readable bytes.
    #[error("request header is only {0} bytes")]
    ShortHeader(u64),
    /// Data buffers in the wrong direction for the request type.
    #[error("{0:?} request with buffers of the wrong direction")]
    WrongDirection(RequestType),
    /// A read or write length that is not a whole number of sectors.
    #[error("data length {0} is not a multiple of 512")]
    Unaligned(u64),
    /// Sectors past the end of the disk.
    #[error("sectors {sector}+{count} are beyond the disk's {capacity} sectors")]
    OutOfRange {
        sector: u64,
        count: u64,
        capacity: u64,
    },
    /// A discard / write-zeroes payload that is not a whole number of segments, or too many of them.
    #[error("discard/write-zeroes payload of {0} bytes is invalid")]
    BadSegments(u64),
}

/// A parse failure, with the status address if the chain had a usable one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What was wrong.
    pub error: RequestError,
    /// Where to report `S_IOERR`, if anywhere.
    pub status: Option<GuestAddress>,
}

/// Parses one request from a descriptor chain.
///
/// `max_descriptors` bounds the chain (advertised SEG_MAX + 2); `capacity` is the disk size in sectors.
pub fn parse_request<I>(
    mem: &GuestMemoryMmap,
    chain: I,
    max_descriptors: usize,
    capacity: u64,
) -> Result<Request, ParseError>
where
    I: Iterator<Item = Descriptor>,
{
    let mut readable = Vec::new();
    let mut writable = Vec::new();
    let mut first_error = None;
    for (count, desc) in chain.enumerate() {
        if count >= max_descriptors {
            first_error.get_or_insert(RequestError::TooLong(max_descriptors));
            break;
        }
        let seg = Segment {
            addr: desc.addr(),
            len: u64::from(desc.len()),
        };
        let in_memory = usize::try_from(seg.len).is_ok_and(|len| mem.check_range(seg.addr, len));
        if !in_memory {
            first_error.get_or_insert(RequestError::BadAddress {
                addr: seg.addr.0,
                len: desc.len(),
            });
        }
        if desc.is_write_only() {
            writable.push(seg);
        } else {
            if !writable.is_empty() {
                first_error.get_or_insert(RequestError::BadOrder);
            }
            readable.push(seg);
        }
    }

    // The status byte: the last byte of the last writable descriptor, if that one is in memory.
    let status = writable.iter().rev().find(|s| s.len > 0).and_then(|s| {
        let addr = s.addr.checked_add(s.len - 1)?;
        mem.check_range(addr, 1).then_some(addr)
    });
    let fail = |error| ParseError { error, status };
    let Some(status_addr) = status else {
        return Err(ParseError {
            error: first_error.unwrap_or(RequestError::NoStatus),
            status: None,
        });
    };
    if let Some(e) = first_error {
        return Err(fail(e));
    }

    let readable_len: u64 = readable.iter().map(|s| s.len).sum();
    if readable_len < HEADER_LEN {
        return Err(fail(RequestError::ShortHeader(readable_len)));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    copy_from_segments(mem, &readable, &mut header).map_err(|_| fail(RequestError::NoStatus))?;
    let request_type = RequestType::from(u32::from_le_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));

    let readable_data = skip_bytes(&readable, HEADER_LEN);
    let writable_data = trim_last_byte(&writable);
    let readable_data_len = readable_len - HEADER_LEN;
    let writable_data_len: u64 = writable_data.iter().map(|s| s.len).sum();

    let (data, data_len) = match request_type {
        RequestType::In | RequestType::GetId => {
            if readable_data_len != 0 {
                return Err(fail(RequestError::WrongDirection(request_type)));
            }
            (writable_data, writable_data_len)
        }
        RequestType::Out | RequestType::Discard | RequestType::WriteZeroes => {
            if writable_data_len != 0 {
                return Err(fail(RequestError::WrongDirection(request_type)));
            }
            (readable_data, readable_data_len)
        }
        RequestType::Flush | RequestType::Unsupported(_) => (Vec::new(), 0),
    };

    match request_type {
        RequestType::In | RequestType::Out => {
            if data_len % SECTOR_SIZE != 0 {
                return Err(fail(RequestError::Unaligned(data_len)));
            }
            check_sectors(sector, data_len / SECTOR_SIZE, capacity).map_err(fail)?;
        }
        RequestType::Discard | RequestType::WriteZeroes => {
            let n = data_len / DISCARD_SEGMENT_LEN;
            if data_len == 0
                || data_len % DISCARD_SEGMENT_LEN != 0
                || n > u64::from(MAX_DISCARD_SEGMENTS)
            {
                return Err(fail(RequestError::BadSegments(data_len)));
            }
        }
        _ => {}
    }

    Ok(Request {
        request_type,
        sector,
        data,
        data_len,
        status: status_addr,
    })
}

fn check_sectors(sector: u64, count: u64, capacity: u64) -> Result<(), RequestError> {
    match sector.checked_add(count) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(RequestError::OutOfRange {
            sector,
            count,
            capacity,
        }),
    }
}

/// The segments after the first `n` bytes.
fn skip_bytes(segs: &[Segment], mut n: u64) -> Vec<Segment> {
    let mut out = Vec::with_capacity(segs.len());
    for s in segs {
        if n >= s.len {
            n -= s.len;
            continue;
        }
        out.push(Segment {
            addr: GuestAddress(s.addr.0 + n),
            len: s.len - n,
        });
        n = 0;
    }
    out
}

/// The segments without their very last byte (the status).
fn trim_last_byte(segs: &[Segment]) -> Vec<Segment> {
    let mut out: Vec<Segment> = segs.iter().copied().filter(|s| s.len > 0).collect();
    if let Some(last) = out.last_mut() {
        last.len -= 1;
        if last.len == 0 {
            out.pop();
        }
    }
    out
}

fn copy_from_segments(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    buf: &mut [u8],
) -> Result<(), vm_memory::GuestMemoryError> {
    let mut done = 0;
    for s in segs {
        if done == buf.len() {
            break;
        }
        let n = (buf.len() - done).min(s.len as usize);
        mem.read_slice(&mut buf[done..done + n], s.addr)?;
        done += n;
    }
    Ok(())
}

/// Borrowed views of the data segments, split where they cross guest memory regions.
pub(crate) fn slices<'m>(
    mem: &'m GuestMemoryMmap,
    segs: &[Segment],
) -> Result<Vec<VolatileSlice<'m>>, vm_memory::GuestMemoryError> {
    let mut out = Vec::with_capacity(segs.len());
    for s in segs {
        for slice in GuestMemoryBackend::get_slices(mem, s.addr, s.len as usize) {
            out.push(slice?);
        }
    }
    Ok(out)
}

/// One discard / write-zeroes segment as the guest lays it out.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct DiscardSegment {
    sector: Le64,
    num_sectors: Le32,
    flags: Le32,
}
// SAFETY: plain little-endian integers, no padding (8 + 4 + 4 bytes), any bit pattern is valid.
unsafe impl ByteValued for DiscardSegment {}

/// What a request turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The status byte written to the guest.
    pub status: u8,
    /// Bytes written into device-writable buffers (including the status byte).
    pub used_len: u32,
}

/// Carries out `req` on `disk` and writes its status byte. `id` is the GET_ID answer.
pub fn execute(
    req: &Request,
    mem: &GuestMemoryMmap,
    disk: &mut dyn DiskFile,
    id: &[u8; VIRTIO_BLK_ID_BYTES as usize],
) -> Outcome {
    let capacity = disk.size() / SECTOR_SIZE;
    let mut written: u64 = 0;
    let status = match run(req, mem, disk, id, capacity, &mut written) {
        Ok(()) => VIRTIO_BLK_S_OK,
        Err(status) => status,
    } as u8;
    // The status address was checked when parsing; a failure here means memory vanished under us.
    if mem.write_obj(status, req.status).is_err() {
        log::warn!("virtio-blk: cannot write request status");
    }
    Outcome {
        status,
        used_len: u32::try_from(written + 1).unwrap_or(u32::MAX),
    }
}

fn run(
    req: &Request,
    mem: &GuestMemoryMmap,
    disk: &mut dyn DiskFile,
    id: &[u8; VIRTIO_BLK_ID_BYTES as usize],
    capacity: u64,
    written: &mut u64,
) -> Result<(), u32> {
    let ioerr = |e: &dyn std::fmt::Display| {
        log::debug!("virtio-blk: {:?} failed: {e}", req.request_type);
        VIRTIO_BLK_S_IOERR
    };
    let offset = req
        .sector
        .checked_mul(SECTOR_SIZE)
        .ok_or(VIRTIO_BLK_S_IOERR)?;
    match req.request_type {
        RequestType::In => {
            let bufs = slices(mem, &req.data).map_err(|e| ioerr(&e))?;
            disk.read_vectored(offset, &bufs).map_err(|e| ioerr(&e))?;
            *written = req.data_len;
        }
        RequestType::Out => {
            if disk.read_only() {
                return Err(VIRTIO_BLK_S_IOERR);
            }
            let bufs = slices(mem, &req.data).map_err(|e| ioerr(&e))?;
            disk.write_vectored(offset, &bufs).map_err(|e| ioerr(&e))?;
        }
        RequestType::Flush => disk.flush().map_err(|e| ioerr(&e))?,
        RequestType::GetId => {
            let mut left = &id[..];
            for s in &req.data {
                let n = left.len().min(s.len as usize);
                mem.write_slice(&left[..n], s.addr).map_err(|e| ioerr(&e))?;
                left = &left[n..];
                *written += n as u64;
            }
        }
        RequestType::Discard | RequestType::WriteZeroes => {
            let discard = req.request_type == RequestType::Discard;
            if disk.read_only() {
                return Err(VIRTIO_BLK_S_IOERR);
            }
            let supported = if discard {
                disk.supports_discard()
            } else {
                disk.supports_write_zeroes()
            };
            if !supported {
                return Err(VIRTIO_BLK_S_UNSUPP);
            }
            let mut raw = vec![0u8; req.data_len as usize];
            copy_from_segments(mem, &req.data, &mut raw).map_err(|e| ioerr(&e))?;
            for chunk in raw.chunks_exact(DISCARD_SEGMENT_LEN as usize) {
                let seg = DiscardSegment::from_slice(chunk)
                    .copied()
                    .unwrap_or_default();
                let (sector, count, flags) = (
                    seg.sector.to_native(),
                    u64::from(seg.num_sectors.to_native()),
                    seg.flags.to_native(),
                );
                let allowed = if discard {
                    0
                } else {
                    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
                };
                if flags & !allowed != 0 {
                    return Err(VIRTIO_BLK_S_UNSUPP);
                }
                check_sectors(sector, count, capacity).map_err(|e| ioerr(&e))?;
                let (off, len) = (sector * SECTOR_SIZE, count * SECTOR_SIZE);
                let unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
                let res = if discard {
                    disk.discard(off, len)
                } else {
                    disk.write_zeroes(off, len, unmap)
                };
                res.map_err(|e| ioerr(&e))?;
            }
        }
        RequestType::Unsupported(_) => return Err(VIRTIO_BLK_S_UNSUPP),
    }
    Ok(())
}

#[cfg(test)]
#[path = "request_tests.rs"]
pub(crate) mod tests;
