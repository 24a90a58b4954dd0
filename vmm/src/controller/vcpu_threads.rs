//! vCPU threads started before their VM is built.
//!
//! A vCPU thread's start (a `clone`, its stack mapped, and on a busy host the wait for a CPU) and its
//! seccomp filter (0.13 ms for the kernel to check and JIT the `vcpu` program) used to lie between the
//! VM's construction and its first `KVM_RUN`: the threads were started once the VM was built, and each
//! installed its filter before running. [`VcpuThreads::spawn`] starts them first (as soon as the number of
//! vCPUs is known), so they install their filters while the VMM thread creates the VM, restores its state
//! and builds the devices; each then waits for its [`Vcpu`] and runs it at once.
//!
//! The threads touch no guest or client input before their filter is in place (they touch none at all
//! until they receive their vCPU), and the VMM thread still installs its own filter only once every vCPU
//! thread has its own. If the VM cannot be built, dropping [`VcpuThreads`] ends the waiting threads.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::seccomp::{self, SeccompError, ThreadKind};
use crate::vstate::vcpu::Vcpu;

/// The started threads, each waiting for its vCPU.
pub struct VcpuThreads {
    waiting: Vec<(JoinHandle<()>, SyncSender<Vcpu>)>,
    /// One result per thread: whether its filter went in.
    filtered: Receiver<Result<(), SeccompError>>,
}

impl VcpuThreads {
    /// Starts `count` threads named `vcpu0`, `vcpu1`...; each installs the `vcpu` filter, then waits for
    /// its vCPU.
    pub fn spawn(count: u8) -> Result<Self, std::io::Error> {
        let (filtered_tx, filtered) = mpsc::channel();
        let mut waiting = Vec::with_capacity(usize::from(count));
        for id in 0..count {
            let (give, take) = mpsc::sync_channel::<Vcpu>(1);
            let filtered_tx = filtered_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    let r = seccomp::apply(ThreadKind::Vcpu);
                    let ok = r.is_ok();
                    let _ = filtered_tx.send(r);
                    drop(filtered_tx);
                    // Nothing comes when the VM could not be built (the sender is dropped).
                    if let (true, Ok(vcpu)) = (ok, take.recv()) {
                        let pause = vcpu.pause.clone();
                        vcpu.run();
                        pause.thread_exited();
                    }
                })?;
            waiting.push((handle, give));
        }
        Ok(VcpuThreads { waiting, filtered })
    }

    /// Waits until every thread has its filter; the first failure is returned (the threads then end
    /// when `self` is dropped).
    pub fn wait_filtered(&self) -> Result<(), SeccompError> {
        for _ in 0..self.waiting.len() {
            match self.filtered.recv() {
                Ok(r) => r?,
                // Not reached: a thread sends before it can end.
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Hands each thread its vCPU (in order: `vcpus[i]` to `vcpu{i}`); they run at once. Returns the
    /// threads' handles.
    ///
    /// # Panics
    /// If `vcpus` does not have one vCPU per thread (the caller spawned them from the same count).
    pub fn run(mut self, vcpus: Vec<Vcpu>) -> Vec<JoinHandle<()>> {
        assert_eq!(vcpus.len(), self.waiting.len(), "one vCPU per thread");
        let mut handles = Vec::with_capacity(vcpus.len());
        for ((handle, give), vcpu) in std::mem::take(&mut self.waiting).into_iter().zip(vcpus) {
            // The thread waits in `recv` (the slot is free), unless its filter failed, which the caller
            // has ruled out with `wait_filtered`.
            let _ = give.send(vcpu);
            handles.push(handle);
        }
        handles
    }
}

impl Drop for VcpuThreads {
    /// Threads that never got a vCPU: their senders dropped, they leave `recv` and end.
    fn drop(&mut self) {
        for (handle, give) in self.waiting.drain(..) {
            drop(give);
            let _ = handle.join();
        }
    }
}
