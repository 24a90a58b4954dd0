//! virtio-console, port 0 only (no MULTIPORT, no SIZE): the guest's hvc0.
//!
//! Output: the guest fills the transmit queue (queue 1); on its notify ([`Console::PROCESS_TX`]) every
//! device-readable byte goes to the output writer (stdout in the VMM) and the chain is returned.
//! Input: the VMM pushes bytes with [`Console::enqueue_input`]; they wait in a bounded buffer and go into
//! the receive queue (queue 0) whenever the guest has posted buffers there (on enqueue, and on the receive
//! queue's notify, [`Console::PROCESS_RX`]).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{
    read_config_bytes, ready_queues, ActivateError, LogLimiter, VirtioDevice, VirtioInterrupt,
    TYPE_CONSOLE,
};
use crate::virtio::persist::{DeviceData, VirtioStateError};
use crate::GuestMemoryMmap;

/// Queue size we offer for both queues.
pub const QUEUE_SIZE: u16 = 256;
/// Input bytes kept while the guest has no receive buffers; more are dropped.
pub const MAX_PENDING_INPUT: usize = 64 * 1024;
/// Receive queue index.
const RX: usize = 0;
/// Transmit queue index.
const TX: usize = 1;
/// Guest output is copied to the output in pieces of this size.
const TX_CHUNK: usize = 4096;

struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<VirtioInterrupt>,
    rx: Queue,
    tx: Queue,
}

/// A virtio console with one port.
pub struct Console {
    out: Box<dyn Write + Send>,
    input: VecDeque<u8>,
    acked_features: u64,
    queue_evts: [EventFd; 2],
    active: Option<Active>,
    warn: LogLimiter,
}

impl Console {
    /// Event token of the receive queue's notify EventFd.
    pub const PROCESS_RX: u32 = 0;
    /// Event token of the transmit queue's notify EventFd.
    pub const PROCESS_TX: u32 = 1;

    /// A console writing guest output to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> io::Result<Self> {
        Ok(Self {
            out,
            input: VecDeque::new(),
            acked_features: 0,
            queue_evts: [EventFd::new(EFD_NONBLOCK)?, EventFd::new(EFD_NONBLOCK)?],
            active: None,
            warn: LogLimiter::default(),
        })
    }

    /// Queues input for the guest and delivers what fits now. Returns how many bytes were accepted (the
    /// rest did not fit in [`MAX_PENDING_INPUT`]).
    pub fn enqueue_input(&mut self, data: &[u8]) -> usize {
        let room = MAX_PENDING_INPUT.saturating_sub(self.input.len());
        let n = room.min(data.len());
        self.input.extend(&data[..n]);
        if n < data.len() {
            self.warn.warn(format_args!(
                "virtio-console: guest is not reading input; dropped {} bytes",
                data.len() - n
            ));
        }
        self.process_rx();
        n
    }

    /// Bytes waiting for receive buffers.
    pub fn pending_input(&self) -> usize {
        self.input.len()
    }

    /// Moves pending input into the guest's receive buffers.
    pub fn process_rx(&mut self) -> usize {
        let Some(a) = self.active.as_mut() else {
            return 0;
        };
        let mut used = 0;
        while !self.input.is_empty() {
            let chain = match a.rx.iter(&a.mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    self.warn
                        .warn(format_args!("virtio-console: receive queue unusable: {e}"));
                    break;
                }
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let mut written = 0u32;
            for desc in chain.filter(|d| d.is_write_only()) {
                if self.input.is_empty() {
                    break;
                }
                let n = (desc.len() as usize).min(self.input.len());
                let bytes: Vec<u8> = self.input.iter().take(n).copied().collect();
                if a.mem.write_slice(&bytes, desc.addr()).is_err() {
                    self.warn.warn(format_args!(
                        "virtio-console: receive buffer {:#x}+{:#x} outside guest memory",
                        desc.addr().0,
                        desc.len()
                    ));
                    break;
                }
                self.input.drain(..n);
                written += n as u32;
            }
            if a.rx.add_used(&a.mem, head, written).is_err() {
                break;
            }
            used += 1;
        }
        if used > 0 {
            a.interrupt.signal_used_queue();
        }
        used
    }

    /// Writes everything the guest transmitted to the output.
    pub fn process_tx(&mut self) -> usize {
        let Some(a) = self.active.as_mut() else {
            return 0;
        };
        let mut used = 0;
        loop {
            let chain = match a.tx.iter(&a.mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    self.warn
                        .warn(format_args!("virtio-console: transmit queue unusable: {e}"));
                    break;
                }
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            for desc in chain.filter(|d| !d.is_write_only()) {
                let len = desc.len() as usize;
                if !a.mem.check_range(desc.addr(), len) {
                    self.warn.warn(format_args!(
                        "virtio-console: transmit buffer {:#x}+{len:#x} outside guest memory",
                        desc.addr().0
                    ));
                    continue;
                }
                // Copied through a fixed buffer: the length is the guest's (up to 4 GiB), so it never
                // sizes an allocation (a fuzzer found the VMM allocating 3 GB for one descriptor).
                let mut buf = [0u8; TX_CHUNK];
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(TX_CHUNK);
                    let at = desc.addr().unchecked_add(done as u64);
                    if a.mem.read_slice(&mut buf[..n], at).is_err() {
                        break;
                    }
                    if let Err(e) = self.out.write_all(&buf[..n]) {
                        self.warn
                            .warn(format_args!("virtio-console: output failed: {e}"));
                        break;
                    }
                    done += n;
                }
            }
            if a.tx.add_used(&a.mem, head, 0).is_err() {
                break;
            }
            used += 1;
        }
        if used > 0 {
            let _ = self.out.flush();
            a.interrupt.signal_used_queue();
        }
        used
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        TYPE_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        0
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols, rows, max_nr_ports, emerg_wr: meaningless without SIZE / MULTIPORT / EMERG_WRITE.
        read_config_bytes(&[0u8; 12], offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        self.warn.warn(format_args!(
            "virtio-console: config write at {offset:#x} ignored"
        ));
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let [rx, tx] = ready_queues::<2>(queues)?;
        self.active = Some(Active {
            mem,
            interrupt,
            rx,
            tx,
        });
        self.process_tx();
        self.process_rx();
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn saved_queues(&self) -> Vec<crate::virtio::persist::QueueState> {
        use crate::virtio::persist::QueueState;
        self.active
            .iter()
            .flat_map(|a| [QueueState::save(&a.rx), QueueState::save(&a.tx)])
            .collect()
    }

    fn save_data(&self) -> DeviceData {
        if self.input.is_empty() {
            return DeviceData::None;
        }
        DeviceData::ConsoleInput(self.input.iter().copied().collect())
    }

    fn restore_data(&mut self, data: &DeviceData) -> Result<(), VirtioStateError> {
        match data {
            DeviceData::None => self.input.clear(),
            DeviceData::ConsoleInput(b) if b.len() <= MAX_PENDING_INPUT => {
                self.input = b.iter().copied().collect();
            }
            DeviceData::ConsoleInput(b) => {
                return Err(VirtioStateError::Data(format!(
                    "{} bytes of saved console input, more than {MAX_PENDING_INPUT}",
                    b.len()
                )))
            }
            DeviceData::NetRxFrame(_) => {
                return Err(VirtioStateError::Data(
                    "virtio-console holds no received frame".into(),
                ))
            }
        }
        Ok(())
    }
}

impl MutEventSubscriber for Console {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            Self::PROCESS_RX => {
                let _ = self.queue_evts[RX].read();
                self.process_rx();
            }
            Self::PROCESS_TX => {
                let _ = self.queue_evts[TX].read();
                self.process_tx();
            }
            other => log::warn!("virtio-console: unexpected event token {other}"),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (evt, token) in self
            .queue_evts
            .iter()
            .zip([Self::PROCESS_RX, Self::PROCESS_TX])
        {
            if let Err(e) = ops.add(Events::with_data(evt, token, EventSet::IN)) {
                log::error!("virtio-console: cannot register a queue EventFd: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::mmio::MmioTransport;
    use crate::virtio::test_utils::{guest_memory, init_device, QueueLayout};
    use std::sync::Mutex;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, GuestAddress};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn layout(q: &MockSplitQueue<GuestMemoryMmap>) -> QueueLayout {
        QueueLayout {
            size: 16,
            desc: q.desc_table_addr(),
            avail: q.avail_addr(),
            used: q.used_addr(),
        }
    }

    fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
    }

    #[test]
    fn output_reaches_writer_and_input_waits_for_buffers() {
        let mem = guest_memory(4 << 20);
        let rxq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let txq = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
        let sink = Sink::default();
        let con = Arc::new(Mutex::new(Console::new(Box::new(sink.clone())).unwrap()));
        let mut t = MmioTransport::new(mem.clone(), con.clone()).unwrap();
        let s = init_device(&mut t, 0, &[layout(&rxq), layout(&txq)]);
        assert_ne!(s & crate::virtio::status::DRIVER_OK, 0);

        // Output: "hello " + "world" in a two-descriptor chain, plus a bad buffer that is skipped.
        mem.write_slice(b"hello ", GuestAddress(0x10_0000)).unwrap();
        mem.write_slice(b"world", GuestAddress(0x10_1000)).unwrap();
        txq.add_desc_chains(
            &[
                desc(0x10_0000, 6, VRING_DESC_F_NEXT, 1),
                desc(0x10_1000, 5, 0, 0),
                desc(0xffff_0000_0000, 100, 0, 0),
            ],
            0,
        )
        .unwrap();
        assert_eq!(con.lock().unwrap().process_tx(), 2);
        assert_eq!(&sink.0.lock().unwrap()[..], b"hello world");

        // Input before any receive buffer waits.
        assert_eq!(con.lock().unwrap().enqueue_input(b"abcdef"), 6);
        assert_eq!(con.lock().unwrap().pending_input(), 6);
        rxq.add_desc_chains(&[desc(0x20_0000, 4, VRING_DESC_F_WRITE, 0)], 0)
            .unwrap();
        assert_eq!(con.lock().unwrap().process_rx(), 1);
        let mut got = [0u8; 4];
        mem.read_slice(&mut got, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(&got, b"abcd");
        assert_eq!(con.lock().unwrap().pending_input(), 2);
        let used_len: u32 = mem.read_obj(rxq.used_addr().unchecked_add(8)).unwrap();
        assert_eq!(used_len, 4);
        rxq.add_desc_chains(&[desc(0x20_1000, 64, VRING_DESC_F_WRITE, 0)], 1)
            .unwrap();
        assert_eq!(con.lock().unwrap().process_rx(), 1);
        assert_eq!(con.lock().unwrap().pending_input(), 0);
        // Input is bounded.
        let big = vec![b'x'; MAX_PENDING_INPUT + 10];
        assert_eq!(con.lock().unwrap().enqueue_input(&big), MAX_PENDING_INPUT);
    }

    /// Input that waits for receive buffers when the VM is saved is saved with the device and delivered
    /// by the restored one.
    #[test]
    fn pending_input_survives_save_and_restore() {
        let mem = guest_memory(4 << 20);
        let rxq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let txq = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
        let con = Arc::new(Mutex::new(Console::new(Box::new(Sink::default())).unwrap()));
        let mut t = MmioTransport::new(mem.clone(), con.clone()).unwrap();
        init_device(&mut t, 0, &[layout(&rxq), layout(&txq)]);
        assert_eq!(con.lock().unwrap().enqueue_input(b"typed ahead"), 11);
        let state = t.save();
        assert_eq!(
            state.data,
            DeviceData::ConsoleInput(b"typed ahead".to_vec())
        );

        let con2 = Arc::new(Mutex::new(Console::new(Box::new(Sink::default())).unwrap()));
        let mut t2 = MmioTransport::new(mem.clone(), con2.clone()).unwrap();
        t2.restore(&state).unwrap();
        assert_eq!(con2.lock().unwrap().pending_input(), 11);
        rxq.add_desc_chains(&[desc(0x20_0000, 64, VRING_DESC_F_WRITE, 0)], 0)
            .unwrap();
        assert_eq!(con2.lock().unwrap().process_rx(), 1);
        let mut got = [0u8; 11];
        mem.read_slice(&mut got, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(&got, b"typed ahead");

        let mut bad = state.clone();
        bad.data = DeviceData::ConsoleInput(vec![0; MAX_PENDING_INPUT + 1]);
        let con3 = Arc::new(Mutex::new(Console::new(Box::new(Sink::default())).unwrap()));
        let mut t3 = MmioTransport::new(mem.clone(), con3).unwrap();
        assert!(matches!(t3.restore(&bad), Err(VirtioStateError::Data(_))));
    }

    /// A transmit buffer longer than guest memory is skipped, and output longer than the copy buffer
    /// arrives whole and in order. (That the guest's length never sizes an allocation, which once asked the
    /// allocator for 3 GB, is checked by the fuzz reproducer `devices/fuzz/seeds/virtio_console/crash-*`
    /// under libFuzzer's malloc limit.)
    #[test]
    fn transmit_lengths_never_size_an_allocation() {
        let mem = guest_memory(4 << 20);
        let rxq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let txq = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
        let sink = Sink::default();
        let con = Arc::new(Mutex::new(Console::new(Box::new(sink.clone())).unwrap()));
        let mut t = MmioTransport::new(mem.clone(), con.clone()).unwrap();
        init_device(&mut t, 0, &[layout(&rxq), layout(&txq)]);
        let text: Vec<u8> = (0..3 * TX_CHUNK + 123)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        mem.write_slice(&text, GuestAddress(0x10_0000)).unwrap();
        txq.add_desc_chains(
            &[
                desc(0x10_0000, 0xb5b5_b5b5, 0, 0),
                desc(0x10_0000, text.len() as u32, 0, 0),
            ],
            0,
        )
        .unwrap();
        assert_eq!(con.lock().unwrap().process_tx(), 2);
        assert!(sink.0.lock().unwrap()[..] == text[..]);
    }
}
