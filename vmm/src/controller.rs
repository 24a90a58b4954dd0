//! The VMM thread's state machine: the configuration being assembled, the running VM, and the answers to
//! API requests.
//!
//! States are Firecracker's: "Not started" (the configuration may change; `InstanceStart` builds the VM with
//! [`build_vm`] and starts one thread per vCPU), "Running" and "Paused" (the configuration is fixed; pause
//! parks every vCPU between two `KVM_RUN`s, resume lets them go on). The main loop in [`crate::run`] calls
//! [`Controller::handle`] for each API request and ends when [`Controller::outcome`] has an exit status.

use std::os::fd::OwnedFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{
    EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberId, SubscriberOps,
};
use serde_json::json;

use crate::api::{routes::Action, ApiError, ApiMetrics, Outcome, Reply};
use crate::builder::{build_vm, Vm};
use crate::config::VmConfig;
use crate::event_loop::{self, read_stop_signal, VmmEvents};
use crate::{terminal, vstate, Error};
use devices::virtio::block::BlockMetrics;
use devices::virtio::net::tap::Tap;
use devices::virtio::NetMetrics;

/// The event manager of the VMM thread.
pub type Manager = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// How long to wait for vCPU threads to leave `KVM_RUN` once asked to stop.
const VCPU_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for every vCPU to park on a pause.
const VCPU_PAUSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Firecracker's default instance id.
pub const DEFAULT_INSTANCE_ID: &str = "anonymous-instance";
/// The name `GET /` reports.
pub const APP_NAME: &str = "microvm";

/// SIGINT and SIGTERM before the VM exists (afterwards [`VmmEvents`] watches them).
struct PreBootSignals {
    fd: OwnedFd,
    outcome: Option<i32>,
}

impl MutEventSubscriber for PreBootSignals {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        if let Some(code) = read_stop_signal(&self.fd) {
            self.outcome.get_or_insert(code);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(&self.fd, 0, EventSet::IN)) {
            log::error!("cannot watch signals: {e:?}");
        }
    }
}

/// A VM that has been started.
struct Running {
    vm: Vm,
    threads: Vec<JoinHandle<()>>,
    events: Arc<Mutex<VmmEvents>>,
    /// Block device counters, by drive id.
    blocks: Vec<(String, Arc<BlockMetrics>)>,
    /// Network device counters, by interface id.
    nets: Vec<(String, Arc<NetMetrics>)>,
    paused: bool,
    _raw: terminal::RawMode,
}

/// The VMM thread's state.
pub struct Controller {
    id: String,
    config: VmConfig,
    start: Instant,
    signals: Arc<Mutex<PreBootSignals>>,
    signals_id: Option<SubscriberId>,
    running: Option<Running>,
    api_metrics: Option<Arc<ApiMetrics>>,
    ctrl_alt_del: AtomicU64,
}

fn bad(msg: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(msg.to_string())
}

impl Controller {
    /// A controller for `config` (not started), watching SIGINT/SIGTERM through `manager`.
    pub fn new(
        id: String,
        config: VmConfig,
        start: Instant,
        manager: &mut Manager,
        api_metrics: Option<Arc<ApiMetrics>>,
    ) -> Result<Self, Error> {
        let fd = event_loop::signal_fd().map_err(|e| Error::EventLoop(e.to_string()))?;
        let signals = Arc::new(Mutex::new(PreBootSignals { fd, outcome: None }));
        let signals_id = Some(manager.add_subscriber(signals.clone()));
        Ok(Self {
            id,
            config,
            start,
            signals,
            signals_id,
            running: None,
            api_metrics,
            ctrl_alt_del: AtomicU64::new(0),
        })
    }

    /// The exit status, once the VM (or the VMM) is to end.
    pub fn outcome(&self) -> Option<i32> {
        match &self.running {
            Some(r) => r.events.lock().unwrap_or_else(|e| e.into_inner()).outcome,
            None => {
                self.signals
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .outcome
            }
        }
    }

    /// Firecracker's state names.
    pub fn state(&self) -> &'static str {
        match &self.running {
            None => "Not started",
            Some(r) if r.paused => "Paused",
            Some(_) => "Running",
        }
    }

    /// Builds the VM from the configuration and starts its vCPUs.
    pub fn start_vm(&mut self, manager: &mut Manager) -> Result<(), Error> {
        let mut vm = build_vm(&self.config, self.start)?;
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
        if let Some(id) = self.signals_id.take() {
            // From here on VmmEvents reads the signals; keep what arrived before.
            let _ = manager.remove_subscriber(id);
        }
        if let Some(code) = self
            .signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .outcome
        {
            events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .outcome
                .get_or_insert(code);
        }
        manager.add_subscriber(events.clone());
        if let Some(console) = vm.devices.console() {
            events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_virtio_console(console.clone());
        }
        if self.config.serial == crate::config::SerialMode::Off {
            events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_serial_input(false);
        }
        for device in vm.devices.subscribers() {
            manager.add_subscriber(device);
        }
        let blocks = self
            .config
            .ordered_drives()
            .into_iter()
            .zip(vm.devices.blocks())
            .map(|(d, b)| {
                let m = b.lock().unwrap_or_else(|e| e.into_inner()).metrics();
                (d.drive_id, m)
            })
            .collect();
        let nets = vm
            .devices
            .nets()
            .iter()
            .map(|(id, n)| {
                let m = n.lock().unwrap_or_else(|e| e.into_inner()).metrics();
                (id.clone(), m)
            })
            .collect();

        let raw = terminal::RawMode::enter();
        let mut threads = Vec::new();
        let vcpus: Vec<_> = vm.vcpus.drain(..).collect();
        for vcpu in vcpus {
            let handle = std::thread::Builder::new()
                .name(format!("vcpu{}", vcpu.id))
                .spawn(move || vcpu.run());
            match handle {
                Ok(h) => threads.push(h),
                Err(e) => {
                    stop_vcpus(&vm, threads);
                    return Err(Error::SpawnVcpu(e));
                }
            }
        }
        self.running = Some(Running {
            vm,
            threads,
            events,
            blocks,
            nets,
            paused: false,
            _raw: raw,
        });
        Ok(())
    }

    /// Stops the vCPUs and flushes the disks.
    pub fn shutdown(&mut self) {
        if let Some(r) = self.running.take() {
            stop_vcpus(&r.vm, r.threads);
            r.vm.devices.flush_disks();
        }
    }

    /// Changes the configuration through `f`, if the VM has not started and the result is valid.
    fn update(&mut self, f: impl FnOnce(&mut VmConfig)) -> Outcome {
        if self.running.is_some() {
            return Err(bad("the configuration cannot change after InstanceStart"));
        }
        let mut config = self.config.clone();
        f(&mut config);
        config.validate().map_err(bad)?;
        self.config = config;
        Ok(Reply::Empty)
    }

    fn running(&mut self, what: &str) -> Result<&mut Running, ApiError> {
        self.running
            .as_mut()
            .ok_or_else(|| bad(format!("{what} needs a started VM (InstanceStart)")))
    }

    /// Answers one API request.
    pub fn handle(&mut self, action: Action, manager: &mut Manager) -> Outcome {
        match action {
            Action::GetInfo => Ok(Reply::Json(
                json!({
                    "id": self.id,
                    "state": self.state(),
                    "vmm_version": env!("CARGO_PKG_VERSION"),
                    "app_name": APP_NAME,
                })
                .to_string(),
            )),
            Action::GetVersion => Ok(Reply::Json(
                json!({
                    "firecracker_version": env!("CARGO_PKG_VERSION"),
                    "vmm_version": env!("CARGO_PKG_VERSION"),
                })
                .to_string(),
            )),
            Action::GetMachineConfig => to_json(&self.config.machine),
            Action::GetVmConfig => to_json(&self.config),
            Action::GetMetrics => Ok(Reply::Json(self.metrics().to_string())),
            Action::PutMachineConfig(m) => self.update(|c| c.machine = m),
            Action::PutBootSource(b) => {
                openable(&b.kernel_image_path, "kernel_image_path")?;
                if let Some(p) = &b.initrd_path {
                    openable(p, "initrd_path")?;
                }
                self.update(|c| c.boot_source = b)
            }
            Action::PutDrive(d) => {
                openable(&d.path_on_host, "path_on_host")?;
                self.update(
                    |c| match c.drives.iter_mut().find(|x| x.drive_id == d.drive_id) {
                        Some(x) => *x = d,
                        None => c.drives.push(d),
                    },
                )
            }
            Action::PutNetworkInterface(n) => {
                let before = self.config.clone();
                let name = n.host_dev_name.clone();
                self.update(|c| {
                    match c
                        .network_interfaces
                        .iter_mut()
                        .find(|x| x.iface_id == n.iface_id)
                    {
                        Some(x) => *x = n,
                        None => c.network_interfaces.push(n),
                    }
                })?;
                // As for drives, a TAP that is not there is refused at once (it is attached at start).
                if let Err(e) = Tap::ensure_exists(&name) {
                    self.config = before;
                    return Err(bad(e));
                }
                Ok(Reply::Empty)
            }
            Action::InstanceStart => {
                if self.running.is_some() {
                    return Err(bad("the VM is already started"));
                }
                if self
                    .config
                    .boot_source
                    .kernel_image_path
                    .as_os_str()
                    .is_empty()
                {
                    return Err(bad("no kernel: PUT /boot-source before InstanceStart"));
                }
                self.start_vm(manager)
                    .map_err(|e| bad(format!("cannot start the VM: {e}")))?;
                Ok(Reply::Empty)
            }
            Action::SendCtrlAltDel => {
                let r = self.running("SendCtrlAltDel")?;
                r.vm.i8042
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .trigger_ctrl_alt_del()
                    .map_err(bad)?;
                self.ctrl_alt_del.fetch_add(1, Ordering::Relaxed);
                Ok(Reply::Empty)
            }
            Action::FlushMetrics => {
                log::info!("metrics: {}", self.metrics());
                Ok(Reply::Empty)
            }
            Action::Pause => {
                let r = self.running("pausing")?;
                if !r.paused {
                    pause_vcpus(r)?;
                }
                Ok(Reply::Empty)
            }
            Action::Resume => {
                let r = self.running("resuming")?;
                r.vm.pause.set_paused(false);
                r.paused = false;
                Ok(Reply::Empty)
            }
        }
    }

    /// Per-device counters.
    fn metrics(&self) -> serde_json::Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut blocks = serde_json::Map::new();
        if let Some(r) = &self.running {
            for (id, m) in &r.blocks {
                blocks.insert(
                    id.clone(),
                    json!({
                        "reads": load(&m.reads),
                        "writes": load(&m.writes),
                        "read_bytes": load(&m.read_bytes),
                        "write_bytes": load(&m.write_bytes),
                        "flushes": load(&m.flushes),
                        "errors": load(&m.errors),
                        "dropped": load(&m.dropped),
                    }),
                );
            }
        }
        let mut nets = serde_json::Map::new();
        if let Some(r) = &self.running {
            for (id, m) in &r.nets {
                nets.insert(
                    id.clone(),
                    json!({
                        "rx_packets": load(&m.rx_packets),
                        "rx_bytes": load(&m.rx_bytes),
                        "rx_dropped": load(&m.rx_dropped),
                        "rx_no_buffers": load(&m.rx_no_buffers),
                        "tx_packets": load(&m.tx_packets),
                        "tx_bytes": load(&m.tx_bytes),
                        "tx_dropped": load(&m.tx_dropped),
                        "malformed": load(&m.malformed),
                    }),
                );
            }
        }
        let api = self.api_metrics.as_ref().map(|m| {
            json!({
                "connections": load(&m.connections),
                "requests": load(&m.requests),
                "errors": load(&m.errors),
                "timeouts": load(&m.timeouts),
            })
        });
        json!({
            "api": api,
            "block": blocks,
            "net": nets,
            "i8042": { "ctrl_alt_del": load(&self.ctrl_alt_del) },
        })
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Outcome {
    serde_json::to_string(value)
        .map(Reply::Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Checks early (as Firecracker does) that a file named in a request can be opened.
fn openable(path: &std::path::Path, field: &str) -> Result<(), ApiError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| bad(format!("{field} {}: {e}", path.display())))
}

fn kick(t: &JoinHandle<()>) {
    // SAFETY: the caller checked that the thread has not finished, and its handle is held, so the pthread_t
    // is valid.
    unsafe { libc::pthread_kill(t.as_pthread_t(), vstate::vcpu::kick_signal()) };
}

/// Parks every live vCPU thread, kicking them out of `KVM_RUN` until they are.
fn pause_vcpus(r: &mut Running) -> Result<(), ApiError> {
    let pause = &r.vm.pause;
    pause.set_paused(true);
    let deadline = Instant::now() + VCPU_PAUSE_TIMEOUT;
    loop {
        let live: Vec<_> = r.threads.iter().filter(|t| !t.is_finished()).collect();
        if pause.parked() >= live.len() {
            r.paused = true;
            return Ok(());
        }
        if Instant::now() >= deadline {
            pause.set_paused(false);
            return Err(ApiError::Internal("the vCPUs did not pause in time".into()));
        }
        for t in &live {
            kick(t);
        }
        pause.wait_parked(live.len(), Duration::from_millis(1));
    }
}

/// Asks every vCPU thread to stop (waking parked ones), kicking it out of `KVM_RUN` until it does.
fn stop_vcpus(vm: &Vm, threads: Vec<JoinHandle<()>>) {
    vm.stop.store(true, Ordering::Release);
    vm.pause.wake_all();
    let deadline = Instant::now() + VCPU_STOP_TIMEOUT;
    for t in threads {
        while !t.is_finished() && Instant::now() < deadline {
            kick(&t);
            std::thread::sleep(Duration::from_millis(1));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::warn!("a vCPU thread did not stop in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BootSource, DriveConfig, MachineConfig, NetConfig};

    fn controller(manager: &mut Manager) -> Controller {
        Controller::new(
            "test".into(),
            VmConfig::default(),
            Instant::now(),
            manager,
            None,
        )
        .unwrap()
    }

    fn json_of(o: Outcome) -> serde_json::Value {
        match o {
            Ok(Reply::Json(s)) => serde_json::from_str(&s).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn configures_before_start_and_reports_state() {
        let mut m = Manager::new().unwrap();
        let mut c = controller(&mut m);
        let info = json_of(c.handle(Action::GetInfo, &mut m));
        assert_eq!(info["state"], "Not started");
        assert_eq!(info["id"], "test");
        assert_eq!(info["app_name"], "microvm");

        let machine = MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 64,
            smt: false,
            thp: false,
        };
        assert_eq!(
            c.handle(Action::PutMachineConfig(machine.clone()), &mut m),
            Ok(Reply::Empty)
        );
        let got = json_of(c.handle(Action::GetMachineConfig, &mut m));
        assert_eq!(
            got,
            json!({"vcpu_count": 2, "mem_size_mib": 64, "smt": false, "thp": false})
        );
        // Invalid values leave the configuration as it was.
        for bad in [
            MachineConfig {
                smt: true,
                ..machine.clone()
            },
            MachineConfig {
                vcpu_count: 0,
                ..machine.clone()
            },
            MachineConfig {
                mem_size_mib: 1,
                ..machine.clone()
            },
        ] {
            let e = c.handle(Action::PutMachineConfig(bad), &mut m).unwrap_err();
            assert_eq!(e.status(), 400);
        }
        assert_eq!(c.config.machine, machine);

        // Files must exist.
        let missing = BootSource {
            kernel_image_path: "/nonexistent/kernel".into(),
            ..Default::default()
        };
        let e = c
            .handle(Action::PutBootSource(missing), &mut m)
            .unwrap_err();
        assert!(e
            .to_string()
            .contains("kernel_image_path /nonexistent/kernel"));
        let exe = std::env::current_exe().unwrap();
        let drive = |id: &str, root: bool| DriveConfig {
            is_root_device: root,
            is_read_only: true,
            ..DriveConfig::new(id, exe.clone())
        };
        c.handle(Action::PutDrive(drive("a", true)), &mut m)
            .unwrap();
        c.handle(Action::PutDrive(drive("a", true)), &mut m)
            .unwrap();
        assert_eq!(c.config.drives.len(), 1, "same id replaces");
        assert_eq!(
            c.handle(Action::PutDrive(drive("b", true)), &mut m)
                .unwrap_err()
                .status(),
            400,
            "two root devices"
        );
        let net = NetConfig {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: Some("zz".into()),
        };
        assert_eq!(
            c.handle(Action::PutNetworkInterface(net), &mut m)
                .unwrap_err()
                .status(),
            400
        );
        let config = json_of(c.handle(Action::GetVmConfig, &mut m));
        assert_eq!(config["drives"][0]["drive_id"], "a");
        assert_eq!(config["machine-config"]["vcpu_count"], 2);

        // Not allowed before start.
        for a in [Action::Pause, Action::Resume, Action::SendCtrlAltDel] {
            assert_eq!(c.handle(a, &mut m).unwrap_err().status(), 400);
        }
        let e = c.handle(Action::InstanceStart, &mut m).unwrap_err();
        assert!(e.to_string().contains("PUT /boot-source"), "{e}");
        assert_eq!(c.handle(Action::FlushMetrics, &mut m), Ok(Reply::Empty));
        let metrics = json_of(c.handle(Action::GetMetrics, &mut m));
        assert_eq!(metrics["i8042"]["ctrl_alt_del"], 0);
        assert_eq!(c.outcome(), None);
    }
}
