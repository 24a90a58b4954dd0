//! Fuzzes the virtio-blk request parser and executor: the input is a descriptor table (16 bytes per
//! descriptor, up to 16), followed by bytes copied into guest memory where headers and data live.
#![no_main]

use devices::disk::test_utils::MemDisk;
use devices::virtio::block::request::{execute, parse_request};
use devices::GuestMemoryMmap;
use libfuzzer_sys::fuzz_target;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueOwnedT};
use vm_memory::{Address, ByteValued, Bytes, GuestAddress};

const MEM: usize = 2 << 20;

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let q = MockSplitQueue::new(&mem, 16);
    let n = (data.len() / 16).min(16);
    for i in 0..n {
        let mut d = RawDescriptor::default();
        d.as_mut_slice().copy_from_slice(&data[i * 16..i * 16 + 16]);
        q.desc_table().store(i as u16, d).unwrap();
    }
    let rest = &data[n * 16..];
    let _ = mem.write_slice(&rest[..rest.len().min(0x1000)], GuestAddress(0x10_0000));
    mem.write_obj(0u16, q.avail_addr().unchecked_add(4)).unwrap();
    mem.write_obj(1u16, q.avail_addr().unchecked_add(2)).unwrap();
    let mut queue: Queue = q.create_queue().unwrap();
    let Some(chain) = queue.iter(&mem).unwrap().next() else {
        return;
    };
    let mut disk = MemDisk::new(1 << 20, false);
    if let Ok(req) = parse_request(&mem, chain, 16, 2048) {
        execute(&req, &mem, &mut disk, &[0; 20]);
    }
});
