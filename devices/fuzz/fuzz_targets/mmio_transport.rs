//! Fuzzes the virtio-mmio transport in front of a virtio-blk device: the input is a sequence of register
//! accesses (offset, value, read/write); the device's queue is processed after every QueueNotify.
#![no_main]

use std::sync::{Arc, Mutex};

use devices::bus::BusDevice;
use devices::disk::test_utils::MemDisk;
use devices::virtio::{Block, BlockConfig, MmioTransport};
use devices::GuestMemoryMmap;
use libfuzzer_sys::fuzz_target;
use vm_memory::GuestAddress;

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let blk = Arc::new(Mutex::new(
        Block::new(Box::new(MemDisk::new(1 << 16, false)), &BlockConfig::default()).unwrap(),
    ));
    let mut t = MmioTransport::new(mem, blk.clone()).unwrap();
    for op in data.chunks_exact(6) {
        let off = u64::from(u16::from_le_bytes([op[0], op[1]])) % 0x180;
        let v = [op[2], op[3], op[4], op[5]];
        if off & 1 == 1 {
            let mut b = [0u8; 4];
            t.read(off & !3, &mut b);
        } else {
            t.write(off & !3, &v);
            if off & !3 == 0x50 {
                blk.lock().unwrap().process_queue();
            }
        }
    }
});
