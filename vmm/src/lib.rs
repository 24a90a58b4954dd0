//! `microvm`: a KVM-based virtual machine monitor.
//!
//! Flow: the CLI (or later the API) produces a [`config::VmConfig`]; [`builder::build_vm`] turns it into a
//! [`builder::Vm`] (memory, kernel, KVM VM, devices, vCPUs); [`run`] starts one thread per vCPU and runs the
//! VMM thread's event loop until the VM ends, then stops the vCPUs and returns the exit status.

pub mod arch;
pub mod boot;
pub mod builder;
pub mod config;
pub mod device_manager;
pub mod event_loop;
pub mod terminal;
pub mod vstate;

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};

use builder::{build_vm, BuildError};
use config::VmConfig;
use event_loop::VmmEvents;

/// Why the VMM could not run a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot set up the event loop: {0}")]
    EventLoop(String),
    #[error("cannot install the vCPU kick signal handler: {0}")]
    KickHandler(#[source] vmm_sys_util::errno::Error),
    #[error("cannot start a vCPU thread: {0}")]
    SpawnVcpu(#[source] std::io::Error),
}

/// How long to wait for vCPU threads to leave `KVM_RUN` once asked.
const VCPU_STOP_TIMEOUT: Duration = Duration::from_secs(2);

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: delivery alone makes KVM_RUN return EINTR.
}

/// Builds and runs the VM described by `config` until it ends; returns the exit status for `microvm`.
/// `start` is when the process started.
pub fn run(config: &VmConfig, start: Instant) -> Result<i32, Error> {
    let mut vm = build_vm(config, start)?;

    vmm_sys_util::signal::register_signal_handler(vstate::vcpu::kick_signal(), kick_handler)
        .map_err(Error::KickHandler)?;
    let events = Arc::new(Mutex::new(
        VmmEvents::new(
            vm.serial.clone(),
            vm.serial_drained
                .try_clone()
                .map_err(|e| Error::EventLoop(e.to_string()))?,
            vm.exit.clone(),
        )
        .map_err(|e| Error::EventLoop(e.to_string()))?,
    ));
    let mut manager: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().map_err(|e| Error::EventLoop(format!("{e:?}")))?;
    manager.add_subscriber(events.clone());
    if let Some(console) = vm.devices.console() {
        events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_virtio_console(console.clone());
    }
    for device in vm.devices.subscribers() {
        manager.add_subscriber(device);
    }

    let _raw = terminal::RawMode::enter();
    let mut threads = Vec::new();
    let vcpus: Vec<_> = vm.vcpus.drain(..).collect();
    for vcpu in vcpus {
        let name = format!("vcpu{}", vcpu.id);
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || vcpu.run());
        match handle {
            Ok(h) => threads.push(h),
            Err(e) => {
                stop_vcpus(&vm, threads);
                return Err(Error::SpawnVcpu(e));
            }
        }
    }

    let code = loop {
        if let Err(e) = manager.run() {
            log::error!("event loop failed: {e:?}");
            break vstate::vcpu::GUEST_CRASH_EXIT_CODE;
        }
        if let Some(code) = events.lock().unwrap_or_else(|e| e.into_inner()).outcome {
            break code;
        }
    };
    stop_vcpus(&vm, threads);
    vm.devices.flush_disks();
    Ok(code)
}

/// Asks every vCPU thread to stop, kicking it out of `KVM_RUN` until it does.
fn stop_vcpus(vm: &builder::Vm, threads: Vec<JoinHandle<()>>) {
    vm.stop.store(true, Ordering::Release);
    let deadline = Instant::now() + VCPU_STOP_TIMEOUT;
    for t in threads {
        while !t.is_finished() && Instant::now() < deadline {
            // SAFETY: the thread is alive (not finished) and its handle is held, so the pthread_t is valid.
            unsafe { libc::pthread_kill(t.as_pthread_t(), vstate::vcpu::kick_signal()) };
            std::thread::sleep(Duration::from_millis(1));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::warn!("a vCPU thread did not stop in time");
        }
    }
}
