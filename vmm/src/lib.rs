//! `microvm`: a KVM-based virtual machine monitor.
//!
//! Flow: the CLI, a config file or the API produces a [`config::VmConfig`]; [`builder::build_vm`] turns it
//! into a [`builder::Vm`] (memory, kernel, KVM VM, devices, vCPUs); [`run`] runs the VMM thread's event loop,
//! in which the [`controller::Controller`] starts the VM (at once, or on the API's `InstanceStart`), answers
//! API requests ([`api`]), and, when the VM ends, stops the vCPUs and returns the exit status.

pub mod api;
pub mod arch;
pub mod boot;
pub mod builder;
pub mod config;
pub mod controller;
pub mod device_manager;
pub mod event_loop;
pub mod terminal;
pub mod vstate;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use event_manager::SubscriberOps;

use builder::BuildError;
use config::VmConfig;
use controller::{Controller, Manager};

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
    #[error(transparent)]
    Api(#[from] api::ServerError),
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: delivery alone makes KVM_RUN return EINTR.
}

/// How to run the VMM.
pub struct RunOptions {
    /// The configuration (from flags or a config file; the API may complete it).
    pub config: VmConfig,
    /// Boot at once; otherwise wait for the API's InstanceStart.
    pub boot_now: bool,
    /// Serve the API on this Unix socket.
    pub api_sock: Option<PathBuf>,
    /// The instance id `GET /` reports.
    pub id: String,
    /// When the process started.
    pub start: Instant,
}

/// Runs the VMM until the VM ends (or a signal arrives); returns the exit status for `microvm`.
pub fn run(opts: RunOptions) -> Result<i32, Error> {
    vmm_sys_util::signal::register_signal_handler(vstate::vcpu::kick_signal(), kick_handler)
        .map_err(Error::KickHandler)?;
    let mut manager = Manager::new().map_err(|e| Error::EventLoop(format!("{e:?}")))?;
    // The guard removes the socket file on every way out of this function.
    let (_guard, api) = match &opts.api_sock {
        Some(path) => {
            let (guard, events, metrics) = api::start(path)?;
            let events = Arc::new(Mutex::new(events));
            manager.add_subscriber(events.clone());
            (Some(guard), Some((events, metrics)))
        }
        None => (None, None),
    };
    let mut ctl = Controller::new(
        opts.id,
        opts.config,
        opts.start,
        &mut manager,
        api.as_ref().map(|(_, m)| m.clone()),
    )?;
    if opts.boot_now {
        ctl.start_vm(&mut manager)?;
    }
    let code = loop {
        if let Err(e) = manager.run() {
            log::error!("event loop failed: {e:?}");
            break vstate::vcpu::GUEST_CRASH_EXIT_CODE;
        }
        if let Some((events, _)) = &api {
            let pending = events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take_pending();
            for req in pending {
                let outcome = ctl.handle(req.action.clone(), &mut manager);
                req.respond(outcome);
            }
        }
        if let Some(code) = ctl.outcome() {
            break code;
        }
    };
    ctl.shutdown();
    Ok(code)
}
