//! `microvm`: a KVM-based virtual machine monitor.
//!
//! Flow: the CLI, a config file or the API produces a [`config::VmConfig`], held by the
//! [`controller::PrebootController`] while the VM does not exist (the API may change it then, [`api`]);
//! at once, or on the API's `InstanceStart`, [`controller::RuntimeController::start`] has
//! [`builder::build_vm`] turn it into a [`builder::Vm`] (memory, kernel, KVM VM, devices, vCPUs) and starts
//! the vCPU threads; [`run`] then runs the VMM thread's event loop (devices, console, signals, and the API
//! through [`controller::RuntimeApi`]) and, when the VM ends, stops the vCPUs and returns the exit status.
//!
//! Every thread that handles guest or client input runs under its seccomp filter ([`seccomp`]: the API
//! thread from its start, each vCPU thread before its first `KVM_RUN`, the VMM thread once the vCPUs
//! run, the block I/O workers from their start).

pub mod api;
pub mod arch;
pub mod boot;
pub mod builder;
pub mod client;
pub mod config;
pub mod controller;
pub mod device_manager;
pub mod event_loop;
pub mod introspect;
pub mod logger;
pub mod persist;
pub mod seccomp;
pub mod terminal;
pub mod vstate;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use event_manager::SubscriberOps;

use api::{ApiChannel, ApiError};
use config::VmConfig;
use controller::{
    Manager, PrebootAnswer, PrebootController, RuntimeApi, RuntimeController, StartError,
};

/// Why the VMM could not run a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot set up the event loop: {0}")]
    EventLoop(String),
    #[error("cannot install the vCPU kick signal handler: {0}")]
    KickHandler(#[source] vmm_sys_util::errno::Error),
    #[error(transparent)]
    Api(#[from] api::ServerError),
    #[error(transparent)]
    Logger(#[from] logger::LoggerError),
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
    /// Restore this snapshot at once (`--restore`), instead of booting.
    pub restore: Option<persist::LoadParams>,
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
    let (_guard, api, api_metrics) = match &opts.api_sock {
        Some(path) => {
            let (guard, channel, metrics) = api::start(path)?;
            (Some(guard), Some(channel), Some(metrics))
        }
        None => (None, None, None),
    };
    // A config file's `logger` and `metrics` take effect before anything else happens.
    if let Some(l) = &opts.config.logger {
        logger::configure(&opts.id, l)?;
    }
    if let Some(m) = &opts.config.metrics {
        logger::configure_metrics(&m.metrics_path)?;
    }
    let mut preboot = PrebootController::new(opts.id, opts.config, api_metrics);
    let runtime = if let Some(params) = &opts.restore {
        RuntimeController::restore(
            preboot.id().to_owned(),
            params,
            preboot.config().boot_timer,
            preboot.api_metrics().cloned(),
            opts.start,
            &mut manager,
        )?
    } else if opts.boot_now {
        start(&preboot, opts.start, &mut manager)?
    } else {
        let Some(api) = &api else {
            return Err(Error::EventLoop(
                "nothing to boot and no API to wait on".into(),
            ));
        };
        match preboot_loop(&mut preboot, api, opts.start, &mut manager)? {
            Ok(runtime) => runtime,
            Err(code) => return Ok(code),
        }
    };
    let runtime = Arc::new(Mutex::new(runtime));
    if let Some(channel) = api {
        let api = RuntimeApi::new(channel, runtime.clone())
            .ok_or_else(|| Error::EventLoop("the API's answer timer was taken already".into()))?;
        manager.add_subscriber(Arc::new(Mutex::new(api)));
    }
    let lock = || runtime.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(timer) = lock().take_metrics_timer() {
        let ctl = runtime.clone();
        let flush = move || {
            ctl.lock()
                .unwrap_or_else(|e| e.into_inner())
                .flush_metrics_to_sink()
        };
        match controller::runtime::MetricsFlusher::new(
            timer,
            controller::runtime::METRICS_FLUSH_INTERVAL,
            Box::new(flush),
        ) {
            Ok(f) => {
                manager.add_subscriber(Arc::new(Mutex::new(f)));
            }
            Err(e) => log::error!("metrics: cannot arm the periodic flush: {e}"),
        }
    }
    let code = loop {
        if let Err(e) = manager.run() {
            log::error!("event loop failed: {e:?}");
            break vstate::vcpu::GUEST_CRASH_EXIT_CODE;
        }
        if let Some(code) = lock().outcome() {
            break code;
        }
    };
    lock().shutdown();
    Ok(code)
}

fn start(
    preboot: &PrebootController,
    start: Instant,
    manager: &mut Manager,
) -> Result<RuntimeController, StartError> {
    RuntimeController::start(
        preboot.id().to_owned(),
        preboot.config().clone(),
        preboot.api_metrics().cloned(),
        start,
        manager,
    )
}

/// Before the VM exists: answers API requests with the pre-boot controller until `InstanceStart` builds
/// the VM (`Ok(Ok(runtime))`), or a stop signal ends the VMM (`Ok(Err(exit status))`). Blocks in `poll`
/// on the API's EventFd and a signalfd for SIGINT/SIGTERM.
fn preboot_loop(
    preboot: &mut PrebootController,
    api: &ApiChannel,
    start_time: Instant,
    manager: &mut Manager,
) -> Result<Result<RuntimeController, i32>, Error> {
    let signals: OwnedFd = event_loop::signal_fd().map_err(|e| Error::EventLoop(e.to_string()))?;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: api.eventfd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfds for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::EventLoop(format!("poll: {e}")));
        }
        if let Some(code) = event_loop::read_stop_signal(&signals) {
            return Ok(Err(code));
        }
        let mut requests = api.take();
        while let Some(req) = requests.next() {
            match preboot.handle(req.action.clone()) {
                PrebootAnswer::Reply(outcome) => req.respond(outcome),
                PrebootAnswer::Restore(params) => match RuntimeController::restore(
                    preboot.id().to_owned(),
                    &params,
                    preboot.config().boot_timer,
                    preboot.api_metrics().cloned(),
                    start_time,
                    manager,
                ) {
                    Ok(runtime) => {
                        req.respond(Ok(api::Reply::Empty));
                        let mut runtime = runtime;
                        for later in requests {
                            let outcome = runtime.handle(later.action.clone());
                            later.respond(outcome);
                        }
                        return Ok(Ok(runtime));
                    }
                    Err(e) => {
                        log::warn!("snapshot load failed: {e}");
                        req.respond(Err(ApiError::from(&e)));
                    }
                },
                PrebootAnswer::Start => match start(preboot, start_time, manager) {
                    Ok(runtime) => {
                        req.respond(Ok(api::Reply::Empty));
                        // Requests that came with this one go to the run-time controller.
                        let mut runtime = runtime;
                        for later in requests {
                            let outcome = runtime.handle(later.action.clone());
                            later.respond(outcome);
                        }
                        return Ok(Ok(runtime));
                    }
                    Err(e) => {
                        log::warn!("InstanceStart failed: {e}");
                        req.respond(Err(ApiError::from(&e)));
                    }
                },
            }
        }
    }
}
