//! Tests of request parsing and execution: hand-built chains for each rule, then seeded random chains.
//! (Kept in their own file so request.rs stays readable; included from request.rs as its `tests` module.)

use super::*;
use crate::disk::test_utils::MemDisk;
use crate::virtio::test_utils::guest_memory;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueOwnedT};

const MEM_SIZE: usize = 4 << 20;
const DISK_SIZE: usize = 1 << 20;
const CAP: u64 = DISK_SIZE as u64 / SECTOR_SIZE;
const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;
const ID: [u8; 20] = *b"drive-id-0123456789!";

fn d(addr: u64, len: u32, write: bool) -> RawDescriptor {
    let flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
}

fn header(mem: &GuestMemoryMmap, addr: u64, t: u32, sector: u64) {
    mem.write_obj(t.to_le(), GuestAddress(addr)).unwrap();
    mem.write_obj(0u32, GuestAddress(addr + 4)).unwrap();
    mem.write_obj(sector.to_le(), GuestAddress(addr + 8))
        .unwrap();
}

fn parse(mem: &GuestMemoryMmap, descs: &[RawDescriptor]) -> Result<Request, ParseError> {
    let q = MockSplitQueue::new(mem, 16);
    let chain = q.build_desc_chain(descs).unwrap();
    parse_request(mem, chain, 16, CAP)
}

fn run_ok(mem: &GuestMemoryMmap, disk: &mut MemDisk, descs: &[RawDescriptor]) -> Outcome {
    let req = parse(mem, descs).unwrap();
    execute(&req, mem, disk, &ID)
}

fn status_byte(mem: &GuestMemoryMmap) -> u8 {
    mem.read_obj(GuestAddress(STATUS)).unwrap()
}

fn pattern_disk() -> MemDisk {
    let mut disk = MemDisk::new(DISK_SIZE, false);
    for (i, b) in disk.data.iter_mut().enumerate() {
        *b = (i % 253) as u8;
    }
    disk
}

#[test]
fn read_write_round_trip() {
    let mem = guest_memory(MEM_SIZE);
    let mut disk = pattern_disk();
    header(&mem, HDR, VIRTIO_BLK_T_IN, 2);
    let out = run_ok(
        &mem,
        &mut disk,
        &[d(HDR, 16, false), d(DATA, 1024, true), d(STATUS, 1, true)],
    );
    assert_eq!(
        out,
        Outcome {
            status: 0,
            used_len: 1025
        }
    );
    let mut buf = [0u8; 1024];
    mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
    assert_eq!(&buf[..], &disk.data[1024..2048]);

    mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 100);
    let out = run_ok(
        &mem,
        &mut disk,
        &[d(HDR, 16, false), d(DATA, 512, false), d(STATUS, 1, true)],
    );
    assert_eq!(
        out,
        Outcome {
            status: 0,
            used_len: 1
        }
    );
    assert!(disk.data[51200..51712].iter().all(|&b| b == 0xab));
    assert_eq!(status_byte(&mem), 0);
}

#[test]
fn framing_is_free() {
    let mem = guest_memory(MEM_SIZE);
    let mut disk = MemDisk::new(DISK_SIZE, false);
    // Header and data in one descriptor; header itself split 8 + 8 before it.
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 1);
    mem.write_slice(&[7u8; 512], GuestAddress(HDR + 16))
        .unwrap();
    let out = run_ok(&mem, &mut disk, &[d(HDR, 528, false), d(STATUS, 1, true)]);
    assert_eq!(out.status, 0);
    assert!(disk.data[512..1024].iter().all(|&b| b == 7));
    let req = parse(
        &mem,
        &[
            d(HDR, 8, false),
            d(HDR + 8, 8, false),
            d(HDR + 16, 512, false),
            d(STATUS, 1, true),
        ],
    )
    .unwrap();
    assert_eq!((req.sector, req.data_len), (1, 512));
    // Read data and status in one writable descriptor: status is its last byte.
    header(&mem, HDR, VIRTIO_BLK_T_IN, 1);
    let req = parse(&mem, &[d(HDR, 16, false), d(DATA, 513, true)]).unwrap();
    assert_eq!(req.status, GuestAddress(DATA + 512));
    assert_eq!(
        req.data,
        vec![Segment {
            addr: GuestAddress(DATA),
            len: 512
        }]
    );
}

#[test]
fn malformed_chains_get_errors() {
    let mem = guest_memory(MEM_SIZE);
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    let st = Some(GuestAddress(STATUS));
    let e = |descs: &[RawDescriptor]| parse(&mem, descs).unwrap_err();

    assert_eq!(
        e(&[d(HDR, 16, false)]),
        ParseError {
            error: RequestError::NoStatus,
            status: None
        }
    );
    assert_eq!(
        e(&[d(HDR, 12, false), d(STATUS, 1, true)]).error,
        RequestError::ShortHeader(12)
    );
    assert_eq!(e(&[d(HDR, 12, false), d(STATUS, 1, true)]).status, st);
    assert_eq!(
        e(&[d(HDR, 16, false), d(DATA, 500, true), d(STATUS, 1, true)]).error,
        RequestError::Unaligned(500)
    );
    assert_eq!(
        e(&[d(HDR, 16, false), d(DATA, 512, false), d(STATUS, 1, true)]).error,
        RequestError::WrongDirection(RequestType::In)
    );
    assert_eq!(
        e(&[d(HDR, 16, false), d(STATUS, 1, true), d(DATA, 512, false)]).error,
        RequestError::BadOrder
    );
    // Out of range, including overflow.
    header(&mem, HDR, VIRTIO_BLK_T_IN, CAP);
    assert!(matches!(
        e(&[d(HDR, 16, false), d(DATA, 512, true), d(STATUS, 1, true)]).error,
        RequestError::OutOfRange { .. }
    ));
    header(&mem, HDR, VIRTIO_BLK_T_OUT, u64::MAX);
    assert!(matches!(
        e(&[d(HDR, 16, false), d(DATA, 512, false), d(STATUS, 1, true)]).error,
        RequestError::OutOfRange { .. }
    ));
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    // Buffers outside guest memory.
    let outside = MEM_SIZE as u64 - 100;
    assert_eq!(
        e(&[d(HDR, 16, false), d(outside, 512, true), d(STATUS, 1, true)]),
        ParseError {
            error: RequestError::BadAddress {
                addr: outside,
                len: 512
            },
            status: st
        }
    );
    assert_eq!(
        e(&[
            d(HDR, 16, false),
            d(u64::MAX - 10, 512, true),
            d(STATUS, 1, true)
        ])
        .status,
        st
    );
    assert_eq!(
        e(&[d(HDR, 16, false), d(MEM_SIZE as u64, 1, true)]).status,
        None
    );
    // Longer than advertised.
    let q = MockSplitQueue::new(&mem, 16);
    let long: Vec<_> = std::iter::once(d(HDR, 16, false))
        .chain((0..8).map(|i| d(DATA + i * 512, 512, true)))
        .chain(std::iter::once(d(STATUS, 1, true)))
        .collect();
    let chain = q.build_desc_chain(&long).unwrap();
    assert_eq!(
        parse_request(&mem, chain, 6, CAP).unwrap_err().error,
        RequestError::TooLong(6)
    );
}

#[test]
fn flush_get_id_unsupported_and_read_only() {
    let mem = guest_memory(MEM_SIZE);
    let mut disk = MemDisk::new(DISK_SIZE, false);
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(
        run_ok(&mem, &mut disk, &[d(HDR, 16, false), d(STATUS, 1, true)]).status,
        0
    );
    assert_eq!(disk.flushes, 1);

    header(&mem, HDR, VIRTIO_BLK_T_GET_ID, 0);
    let out = run_ok(
        &mem,
        &mut disk,
        &[d(HDR, 16, false), d(DATA, 20, true), d(STATUS, 1, true)],
    );
    assert_eq!(
        out,
        Outcome {
            status: 0,
            used_len: 21
        }
    );
    let mut id = [0u8; 20];
    mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(id, ID);

    header(&mem, HDR, 99, 0);
    let out = run_ok(&mem, &mut disk, &[d(HDR, 16, false), d(STATUS, 1, true)]);
    assert_eq!(out.status as u32, VIRTIO_BLK_S_UNSUPP);

    let mut ro = MemDisk::new(DISK_SIZE, true);
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    let out = run_ok(
        &mem,
        &mut ro,
        &[d(HDR, 16, false), d(DATA, 512, false), d(STATUS, 1, true)],
    );
    assert_eq!(out.status as u32, VIRTIO_BLK_S_IOERR);
    assert_eq!(status_byte(&mem) as u32, VIRTIO_BLK_S_IOERR);
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    assert_eq!(
        run_ok(
            &mem,
            &mut ro,
            &[d(HDR, 16, false), d(DATA, 512, true), d(STATUS, 1, true)]
        )
        .status,
        0
    );
}

fn discard_seg(mem: &GuestMemoryMmap, at: u64, sector: u64, n: u32, flags: u32) {
    mem.write_obj(sector.to_le(), GuestAddress(at)).unwrap();
    mem.write_obj(n.to_le(), GuestAddress(at + 8)).unwrap();
    mem.write_obj(flags.to_le(), GuestAddress(at + 12)).unwrap();
}

#[test]
fn discard_and_write_zeroes() {
    let mem = guest_memory(MEM_SIZE);
    let mut disk = pattern_disk();
    header(&mem, HDR, VIRTIO_BLK_T_DISCARD, 0);
    discard_seg(&mem, DATA, 1, 2, 0);
    discard_seg(&mem, DATA + 16, 10, 1, 0);
    let chain = [d(HDR, 16, false), d(DATA, 32, false), d(STATUS, 1, true)];
    assert_eq!(run_ok(&mem, &mut disk, &chain).status, 0);
    assert!(disk.data[512..1536].iter().all(|&b| b == 0));
    assert!(disk.data[5120..5632].iter().all(|&b| b == 0));
    assert_ne!(disk.data[1536], 0);

    discard_seg(&mem, DATA, 1, 2, 1); // unmap flag is not valid for discard
    assert_eq!(
        run_ok(&mem, &mut disk, &chain).status as u32,
        VIRTIO_BLK_S_UNSUPP
    );
    header(&mem, HDR, VIRTIO_BLK_T_WRITE_ZEROES, 0);
    discard_seg(&mem, DATA + 16, 20, 1, 0);
    assert_eq!(run_ok(&mem, &mut disk, &chain).status, 0);
    assert!(disk.data[10240..10752].iter().all(|&b| b == 0));
    discard_seg(&mem, DATA, CAP - 1, 2, 0);
    assert_eq!(
        run_ok(&mem, &mut disk, &chain).status as u32,
        VIRTIO_BLK_S_IOERR
    );
    assert_eq!(
        parse(
            &mem,
            &[d(HDR, 16, false), d(DATA, 20, false), d(STATUS, 1, true)]
        )
        .unwrap_err()
        .error,
        RequestError::BadSegments(20)
    );
}

/// xorshift64*: a tiny seeded PRNG so every random case reproduces.
pub(crate) struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A random descriptor: mostly plausible, often hostile.
pub(crate) fn random_desc(rng: &mut Rng, i: u16, n: u16, mem_size: u64) -> RawDescriptor {
    let addr = match rng.below(10) {
        0 => rng.next(),
        1 => mem_size - rng.below(600),
        2 => mem_size + rng.below(1 << 20),
        3 => HDR,
        4 => STATUS,
        _ => DATA + rng.below(1 << 20),
    };
    let len = match rng.below(10) {
        0 => 0,
        1 => 1,
        2 => 16,
        3 => 512 * (1 + rng.below(8) as u32),
        4 => rng.next() as u32,
        5 => u32::MAX,
        _ => rng.below(5000) as u32,
    };
    let mut flags = 0u16;
    if i + 1 < n || rng.below(6) == 0 {
        flags |= VRING_DESC_F_NEXT as u16;
    }
    if rng.below(2) == 0 {
        flags |= VRING_DESC_F_WRITE as u16;
    }
    if rng.below(30) == 0 {
        flags |= VRING_DESC_F_INDIRECT as u16;
    }
    let next = if rng.below(8) == 0 {
        rng.below(40) as u16
    } else {
        i + 1
    };
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

#[test]
fn seeded_random_chains_never_panic_and_ok_means_valid() {
    let mem = guest_memory(MEM_SIZE);
    let q = MockSplitQueue::new(&mem, 32);
    let mut disk = pattern_disk();
    let (mut oks, mut errs, mut drops) = (0, 0, 0);
    for case in 0..5000u64 {
        let mut rng = Rng(0x5eed_0000 + case);
        let types = [
            VIRTIO_BLK_T_IN,
            VIRTIO_BLK_T_OUT,
            VIRTIO_BLK_T_FLUSH,
            VIRTIO_BLK_T_GET_ID,
            VIRTIO_BLK_T_DISCARD,
            VIRTIO_BLK_T_WRITE_ZEROES,
            rng.next() as u32,
        ];
        let sector = if rng.below(2) == 0 {
            rng.below(CAP + 10)
        } else {
            rng.next()
        };
        header(
            &mem,
            HDR,
            types[rng.below(types.len() as u64) as usize],
            sector,
        );
        discard_seg(
            &mem,
            DATA,
            rng.below(CAP + 4),
            rng.next() as u32 >> rng.below(32),
            rng.below(3) as u32,
        );
        if rng.below(2) == 0 {
            // A well-formed chain for a random type, then maybe one hostile descriptor.
            let t: u32 = mem.read_obj(GuestAddress(HDR)).unwrap();
            let write = matches!(RequestType::from(t), RequestType::In | RequestType::GetId);
            let len = match RequestType::from(t) {
                RequestType::Discard | RequestType::WriteZeroes => 16,
                _ => 512 * rng.below(9) as u32,
            };
            let next = VRING_DESC_F_NEXT as u16;
            let mut chain = vec![
                SplitDescriptor::new(HDR, 16, next, 1),
                SplitDescriptor::new(
                    DATA,
                    len,
                    next | if write { VRING_DESC_F_WRITE as u16 } else { 0 },
                    2,
                ),
                SplitDescriptor::new(STATUS, 1, VRING_DESC_F_WRITE as u16, 0),
            ];
            if rng.below(3) == 0 {
                let i = rng.below(3) as u16;
                let r = SplitDescriptor::from(random_desc(&mut rng, i, 3, MEM_SIZE as u64));
                chain[i as usize] = r;
            }
            for (i, c) in chain.into_iter().enumerate() {
                q.desc_table()
                    .store(i as u16, RawDescriptor::from(c))
                    .unwrap();
            }
        } else {
            let n = 1 + rng.below(12) as u16;
            for i in 0..n {
                q.desc_table()
                    .store(i, random_desc(&mut rng, i, n, MEM_SIZE as u64))
                    .unwrap();
            }
        }
        // Avail ring: one entry, sometimes an out-of-range head.
        let head = if rng.below(10) == 0 {
            rng.below(100) as u16
        } else {
            0
        };
        mem.write_obj(head, q.avail_addr().unchecked_add(4))
            .unwrap();
        mem.write_obj(1u16, q.avail_addr().unchecked_add(2))
            .unwrap();
        let mut queue: Queue = q.create_queue().unwrap();
        let Some(chain) = queue.iter(&mem).unwrap().next() else {
            continue;
        };
        match parse_request(&mem, chain, 16, CAP) {
            Ok(req) => {
                oks += 1;
                let total: u64 = req.data.iter().map(|s| s.len).sum();
                assert_eq!(total, req.data_len, "case {case}");
                for s in &req.data {
                    assert!(
                        mem.check_range(s.addr, s.len as usize),
                        "case {case}: {s:?}"
                    );
                }
                assert!(mem.check_range(req.status, 1));
                if matches!(req.request_type, RequestType::In | RequestType::Out) {
                    assert!(
                        req.sector + req.data_len / SECTOR_SIZE <= CAP,
                        "case {case}"
                    );
                }
                let out = execute(&req, &mem, &mut disk, &ID);
                assert!(out.status <= 2);
                assert_eq!(mem.read_obj::<u8>(req.status).unwrap(), out.status);
            }
            Err(ParseError {
                status: Some(addr), ..
            }) => {
                errs += 1;
                assert!(mem.check_range(addr, 1), "case {case}");
            }
            Err(_) => drops += 1,
        }
    }
    // The generator must exercise every outcome.
    assert!(
        oks > 100 && errs > 100 && drops > 100,
        "ok {oks} err {errs} dropped {drops}"
    );
}
