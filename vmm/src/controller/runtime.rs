//! The run-time controller: the VM once it exists ("Running", "Paused").
//!
//! [`RuntimeController::start`] builds the VM from the pre-boot configuration ([`build_vm`]), adds its
//! devices and the VMM thread's own events to the event manager and starts one thread per vCPU. From then
//! on the API reaches it through [`RuntimeApi`], a subscriber of the same event manager that takes the
//! requests off the API's channel when its EventFd fires and answers each at once: pause parks every vCPU
//! between two `KVM_RUN`s, resume lets them go on; the configuration is fixed.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::timerfd::TimerFd;

use crate::api::routes::CreateSnapshot;
use crate::api::routes::{Action, PatchDrive, PatchNetworkInterface};
use crate::api::{ApiChannel, ApiError, ApiMetrics, Outcome, Reply};
use crate::builder::{build_vm, restore_vm, Vm};
use crate::config::{SerialMode, VmConfig};
use crate::event_loop::VmmEvents;
use crate::persist::{self, LoadParams, PersistError, SnapshotKind};
use crate::{introspect, terminal, vstate};
use devices::disk::{open_disk, DiskOptions};
use devices::virtio::block::BlockMetrics;
use devices::virtio::{Block, NetMetrics, VsockMetrics};

use super::vcpu_threads::VcpuThreads;
use super::{
    flush_metrics, info, metrics_json, to_json, version, I8042Metrics, Manager, StartError,
};

/// How long to wait for vCPU threads to leave `KVM_RUN` once asked to stop.
const VCPU_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a vCPU that has not left `KVM_RUN` is kicked again while stopping (a kick that lands just
/// before the thread enters `KVM_RUN` is lost).
const VCPU_KICK_INTERVAL: Duration = Duration::from_millis(10);
/// How long to wait for every vCPU to park on a pause.
const VCPU_PAUSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Firecracker writes a metrics line this often while a metrics sink is configured.
pub const METRICS_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// The started VM.
pub struct RuntimeController {
    id: String,
    config: VmConfig,
    vm: Vm,
    threads: Vec<JoinHandle<()>>,
    events: Arc<Mutex<VmmEvents>>,
    /// Block device counters, by drive id.
    blocks: Vec<(String, Arc<BlockMetrics>)>,
    /// Block devices, by drive id (`PATCH /drives`).
    block_devs: Vec<(String, Arc<Mutex<Block>>)>,
    /// Network device counters, by interface id.
    nets: Vec<(String, Arc<NetMetrics>)>,
    /// The vsock device's counters.
    vsock: Option<Arc<VsockMetrics>>,
    api_metrics: Option<Arc<ApiMetrics>>,
    i8042: I8042Metrics,
    paused: bool,
    /// Duplicates of the vCPUs' descriptors for `GET /vm/translate`.
    inspector: introspect::Inspector,
    /// Guest RAM is mapped from a memory file (a restore, or after a Full snapshot): a Diff can be taken.
    has_mem_base: bool,
    /// The periodic metrics flush's timer, made before the seccomp filter (which has no
    /// timerfd_create) and handed to [`MetricsFlusher`].
    metrics_timer: Option<TimerFd>,
    /// The API subscriber's timer for `GET /guest/processes` (created before the seccomp filter).
    answer_timer: Option<TimerFd>,
    _raw: terminal::RawMode,
}

impl RuntimeController {
    /// Builds the VM described by `config` and starts its vCPUs. `start` is when the process started.
    pub fn start(
        id: String,
        config: VmConfig,
        api_metrics: Option<Arc<ApiMetrics>>,
        start: Instant,
        manager: &mut Manager,
    ) -> Result<Self, StartError> {
        let threads =
            VcpuThreads::spawn(config.machine.vcpu_count).map_err(StartError::SpawnVcpu)?;
        let vm = build_vm(&config, start)?;
        Self::run_vm(id, config, vm, threads, api_metrics, manager, false)
    }

    /// Restores the VM of a snapshot ([`persist::load`], [`restore_vm`]) and starts its vCPUs, parked
    /// unless `params.resume_vm`. Any error leaves nothing running.
    pub fn restore(
        id: String,
        params: &LoadParams,
        boot_timer: bool,
        api_metrics: Option<Arc<ApiMetrics>>,
        start: Instant,
        manager: &mut Manager,
    ) -> Result<Self, StartError> {
        let t0 = Instant::now();
        let (mut config, mut snapshot, mem) = persist::load(params)?;
        config.boot_timer = boot_timer;
        // The vCPU threads start, and install their filters, while the VM is restored.
        let threads =
            VcpuThreads::spawn(config.machine.vcpu_count).map_err(StartError::SpawnVcpu)?;
        let t1 = Instant::now();
        let vm = restore_vm(&config, mem, &snapshot, start)?;
        let host_input = std::mem::take(&mut snapshot.devices.host_input);
        drop(snapshot);
        let t2 = Instant::now();
        let mut ctl = Self::run_vm(
            id,
            config,
            vm,
            threads,
            api_metrics,
            manager,
            !params.resume_vm,
        )?;
        ctl.has_mem_base = true;
        if !host_input.is_empty() {
            ctl.events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restore_pending_input(&host_input);
        }
        log::info!(
            target: "snapshot",
            "snapshot {:?} restored in {} us (files read and mapped {} us, VM and devices {} us, \
             vCPU threads started {} us)",
            params.snapshot_path,
            t0.elapsed().as_micros(),
            (t1 - t0).as_micros(),
            (t2 - t1).as_micros(),
            t2.elapsed().as_micros()
        );
        Ok(ctl)
    }

    /// Wires a built VM into the event manager and hands each vCPU to its thread (parked if `paused`).
    fn run_vm(
        id: String,
        config: VmConfig,
        mut vm: Vm,
        vcpu_threads: VcpuThreads,
        api_metrics: Option<Arc<ApiMetrics>>,
        manager: &mut Manager,
        paused: bool,
    ) -> Result<Self, StartError> {
        if paused {
            vm.pause.set_paused(true);
        }
        let mut events = VmmEvents::new(
            vm.serial.clone(),
            vm.serial_drained.try_clone().map_err(StartError::Events)?,
            vm.exit.clone(),
        )
        .map_err(StartError::Events)?;
        if let Some(console) = vm.devices.console() {
            events.set_virtio_console(console.clone());
        }
        if config.serial == SerialMode::Off {
            events.set_serial_input(false);
        }
        let events = Arc::new(Mutex::new(events));
        manager.add_subscriber(events.clone());
        for device in vm.devices.subscribers() {
            manager.add_subscriber(device);
        }
        let block_devs: Vec<(String, Arc<Mutex<Block>>)> = config
            .ordered_drives()
            .into_iter()
            .zip(vm.devices.blocks())
            .map(|(d, b)| (d.drive_id, b.clone()))
            .collect();
        let blocks = block_devs
            .iter()
            .map(|(id, b)| {
                let m = b.lock().unwrap_or_else(|e| e.into_inner()).metrics();
                (id.clone(), m)
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
        let vsock = vm
            .devices
            .vsock()
            .map(|v| v.lock().unwrap_or_else(|e| e.into_inner()).metrics());

        let inspector = introspect::Inspector::new(vm.vcpus.iter().map(|v| &v.fd))
            .map_err(StartError::Introspect)?;
        let metrics_timer = match &config.metrics {
            Some(_) => Some(TimerFd::new().map_err(|e| StartError::Events(e.into()))?),
            None => None,
        };
        let answer_timer = Some(TimerFd::new().map_err(|e| StartError::Events(e.into()))?);
        let raw = terminal::RawMode::enter();
        // Each vCPU thread has installed its seccomp filter (or is about to) and waits for its vCPU; the
        // VMM thread installs its own once they all have, before the event loop runs.
        vcpu_threads.wait_filtered()?;
        let threads = vcpu_threads.run(vm.vcpus.drain(..).collect());
        if let Err(e) = crate::seccomp::apply(crate::seccomp::ThreadKind::Vmm) {
            stop_vcpus(&vm, threads);
            return Err(StartError::Seccomp(e));
        }
        Ok(Self {
            id,
            config,
            vm,
            threads,
            events,
            blocks,
            block_devs,
            nets,
            vsock,
            api_metrics,
            i8042: I8042Metrics::default(),
            paused,
            inspector,
            has_mem_base: false,
            metrics_timer,
            answer_timer,
            _raw: raw,
        })
    }

    /// The exit status, once the VM (or the VMM) is to end.
    pub fn outcome(&self) -> Option<i32> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .outcome
    }

    /// Stops the vCPUs, flushes the disks and, with a metrics sink, writes a last metrics line (as
    /// Firecracker does at exit).
    pub fn shutdown(&mut self) {
        stop_vcpus(&self.vm, std::mem::take(&mut self.threads));
        self.vm.devices.flush_disks();
        self.flush_metrics_to_sink();
    }

    /// The periodic flush's timer (once), when a metrics sink is configured.
    pub fn take_metrics_timer(&mut self) -> Option<TimerFd> {
        self.metrics_timer.take()
    }

    /// The API subscriber's answer timer (once).
    pub fn take_answer_timer(&mut self) -> Option<TimerFd> {
        self.answer_timer.take()
    }

    /// Writes a metrics line to the sink, if one is configured (the periodic and the exit flush).
    pub fn flush_metrics_to_sink(&self) {
        if self.config.metrics.is_none() {
            return;
        }
        match self.metrics() {
            Ok(line) => {
                if let Err(e) = flush_metrics(&self.id, &self.config, line) {
                    log::error!("metrics: cannot flush: {e}");
                }
            }
            Err(e) => log::error!("metrics: cannot flush: {e}"),
        }
    }

    fn metrics(&self) -> Result<String, ApiError> {
        metrics_json(
            self.api_metrics.as_deref(),
            &self.blocks,
            &self.nets,
            self.vsock.as_deref(),
            &self.i8042,
        )
    }

    /// Answers one API request.
    pub fn handle(&mut self, action: Action) -> Outcome {
        match action {
            Action::GetInfo => info(&self.id, if self.paused { "Paused" } else { "Running" }),
            Action::GetVersion => version(),
            Action::GetMachineConfig => to_json(&self.config.machine),
            Action::GetVmConfig => to_json(&self.config),
            Action::GetMetrics => self.metrics().map(Reply::Json),
            Action::FlushMetrics => flush_metrics(&self.id, &self.config, self.metrics()?),
            Action::PutLogger(_) | Action::PutMetrics(_) => Err(ApiError::NotAllowed(
                "the logger and metrics are configured before InstanceStart".into(),
            )),
            Action::PutMachineConfig(_)
            | Action::PutBootSource(_)
            | Action::PutDrive(_)
            | Action::PutNetworkInterface(_)
            | Action::PutVsock(_) => Err(ApiError::NotAllowed(
                "the configuration cannot change after InstanceStart".into(),
            )),
            Action::InstanceStart => Err(ApiError::NotAllowed("the VM is already started".into())),
            Action::LoadSnapshot(_) => Err(ApiError::NotAllowed(
                "a snapshot can only be loaded before anything is configured".into(),
            )),
            Action::CreateSnapshot(c) => self.create_snapshot(&c),
            Action::PatchDrive(p) => self.patch_drive(&p),
            Action::PatchNetworkInterface(p) => self.patch_net(&p),
            Action::SendCtrlAltDel => {
                self.vm
                    .i8042
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .trigger_ctrl_alt_del()
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                self.i8042.ctrl_alt_del.fetch_add(1, Ordering::Relaxed);
                Ok(Reply::Empty)
            }
            Action::Pause => {
                if !self.paused {
                    self.pause_vcpus()?;
                }
                Ok(Reply::Empty)
            }
            Action::Resume => {
                self.vm.pause.set_paused(false);
                self.paused = false;
                Ok(Reply::Empty)
            }
            Action::Translate(q) => self.translate(&q),
            // Answered when the guest's reply arrives (RuntimeApi), not here.
            Action::GuestProcesses => Err(ApiError::Internal(
                "GET /guest/processes is answered by the API's subscriber".into(),
            )),
            Action::PutTrace(set) => {
                let from = self.vm.tracer.configure(&set).map_err(introspect_error)?;
                to_json(&serde_json::json!({ "from": from }))
            }
            Action::GetTrace(q) => to_json(&self.vm.tracer.read(&q).map_err(introspect_error)?),
            Action::ReadMemory(q) => {
                to_json(&introspect::read_memory(&self.vm.mem, &q).map_err(introspect_error)?)
            }
        }
    }

    /// `GET /vm/translate`: parks the vCPUs (unless paused already) for the vCPU's registers and
    /// `KVM_TRANSLATE`, then lets them go on.
    fn translate(&mut self, q: &introspect::TranslateQuery) -> Outcome {
        self.inspector
            .check_vcpu(q.vcpu)
            .map_err(introspect_error)?;
        let was_paused = self.paused;
        if !was_paused {
            self.pause_vcpus()?;
        }
        let t = self.inspector.translate(&self.vm.mem, q);
        if !was_paused {
            self.vm.pause.set_paused(false);
            self.paused = false;
        }
        to_json(&t.map_err(introspect_error)?)
    }

    /// `PATCH /drives/{id}`: a new backing file (reopened with the drive's format, cache mode and
    /// read-only flag; the guest gets a config-change interrupt and the new capacity) and/or new rate
    /// limiter buckets. The configuration follows, so `GET /vm/config` and a snapshot see the change.
    fn patch_drive(&mut self, p: &PatchDrive) -> Outcome {
        let id = &p.drive_id;
        let (Some(i), Some(block)) = (
            self.config.drives.iter().position(|d| &d.drive_id == id),
            self.block_devs
                .iter()
                .find(|(d, _)| d == id)
                .map(|(_, b)| b.clone()),
        ) else {
            return Err(ApiError::BadRequest(format!(
                "no drive with drive_id {id:?}"
            )));
        };
        let mut dev = block.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &p.path_on_host {
            let drive = &self.config.drives[i];
            let opts = DiskOptions {
                read_only: drive.is_read_only,
                format: drive.format,
                cache: drive.cache_type,
            };
            // The same file again (grown in place, say): its lock is held by the open we replace.
            let same = same_file(&drive.path_on_host, path);
            if let Err(e) = dev.replace_disk(same, || open_disk(path, &opts)) {
                if same {
                    let old = drive.path_on_host.clone();
                    if let Err(e) = dev.replace_disk(false, || open_disk(&old, &opts)) {
                        log::error!(
                            "drive {id:?}: cannot reopen {old:?} either ({e}); no disk now"
                        );
                    }
                }
                return Err(ApiError::BadRequest(format!(
                    "drive {id:?}: cannot use {path:?}: {e}"
                )));
            }
            log::info!(
                "drive {id:?}: now backed by {path:?}, {} sectors",
                dev.capacity()
            );
            self.config.drives[i].path_on_host = path.clone();
        }
        if let Some(r) = &p.rate_limiter {
            dev.update_rate_limiter(r)
                .map_err(|e| ApiError::BadRequest(format!("drive {id:?}: {e}")))?;
            let now = dev.rate_limiter_config();
            self.config.drives[i].rate_limiter = now.is_limited().then_some(now);
        }
        Ok(Reply::Empty)
    }

    /// `PATCH /network-interfaces/{id}`: new rate limiter buckets.
    fn patch_net(&mut self, p: &PatchNetworkInterface) -> Outcome {
        let id = &p.iface_id;
        let (Some(i), Some(net)) = (
            self.config
                .network_interfaces
                .iter()
                .position(|n| &n.iface_id == id),
            self.vm
                .devices
                .nets()
                .iter()
                .find(|(n, _)| n == id)
                .map(|(_, n)| n.clone()),
        ) else {
            return Err(ApiError::BadRequest(format!(
                "no network interface with iface_id {id:?}"
            )));
        };
        let mut dev = net.lock().unwrap_or_else(|e| e.into_inner());
        dev.update_rate_limiters(p.rx_rate_limiter.as_ref(), p.tx_rate_limiter.as_ref())
            .map_err(|e| ApiError::BadRequest(format!("network interface {id:?}: {e}")))?;
        let (rx, tx) = dev.rate_limiter_configs();
        let iface = &mut self.config.network_interfaces[i];
        iface.rx_rate_limiter = rx.is_limited().then_some(rx);
        iface.tx_rate_limiter = tx.is_limited().then_some(tx);
        Ok(Reply::Empty)
    }

    /// `PUT /snapshot/create`: a full snapshot of the paused VM.
    fn create_snapshot(&mut self, c: &CreateSnapshot) -> Outcome {
        if !self.paused {
            return Err(ApiError::NotAllowed(
                "pause the VM (PATCH /vm {\"state\": \"Paused\"}) before creating a snapshot"
                    .into(),
            ));
        }
        let kind = if c.diff {
            if !self.has_mem_base {
                return Err(ApiError::BadRequest(PersistError::NoDiffBase.to_string()));
            }
            SnapshotKind::Diff
        } else {
            SnapshotKind::Full
        };
        let t0 = Instant::now();
        let host_input = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending_input();
        let bytes = persist::create(
            &self.vm,
            &self.config,
            self.threads.len(),
            &c.snapshot_path,
            &c.mem_file_path,
            kind,
            host_input,
        )
        .map_err(|e| match e {
            PersistError::Io { .. } | PersistError::Memory(_) => {
                ApiError::BadRequest(e.to_string())
            }
            e => ApiError::Internal(e.to_string()),
        })?;
        if kind == SnapshotKind::Full {
            self.has_mem_base = true;
        }
        log::info!(
            target: "snapshot",
            "{kind:?} snapshot {:?} created in {} us, {bytes} bytes of memory written",
            c.snapshot_path,
            t0.elapsed().as_micros()
        );
        Ok(Reply::Empty)
    }

    /// Parks every live vCPU thread, kicking them out of `KVM_RUN` until they are.
    fn pause_vcpus(&mut self) -> Result<(), ApiError> {
        let pause = &self.vm.pause;
        pause.set_paused(true);
        let deadline = Instant::now() + VCPU_PAUSE_TIMEOUT;
        loop {
            let live: Vec<_> = self.threads.iter().filter(|t| !t.is_finished()).collect();
            if pause.parked() >= live.len() {
                self.paused = true;
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
}

/// Firecracker's periodic metrics flush: a timerfd on the VMM thread's event loop that fires every
/// `interval` and runs `flush` (the controller's [`RuntimeController::flush_metrics_to_sink`]).
pub struct MetricsFlusher {
    timer: TimerFd,
    flush: Box<dyn FnMut() + Send>,
}

impl MetricsFlusher {
    const TICK: u32 = 1;

    /// Arms `timer` to fire every `interval`.
    pub fn new(
        mut timer: TimerFd,
        interval: Duration,
        flush: Box<dyn FnMut() + Send>,
    ) -> std::io::Result<Self> {
        timer.reset(interval, Some(interval))?;
        Ok(Self { timer, flush })
    }
}

impl MutEventSubscriber for MetricsFlusher {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.data() != Self::TICK {
            return;
        }
        // Readable, so this does not block: the number of expirations, which do not matter.
        let _ = self.timer.wait();
        (self.flush)();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(&self.timer, Self::TICK, EventSet::IN)) {
            log::error!("metrics: cannot watch the flush timer: {e:?}");
        }
    }
}

/// The API at run time: a subscriber that answers each request as it arrives, on the VMM thread.
/// `GET /guest/processes` is the exception: the guest is asked (an IRQ) and the request waits in
/// `pending` until the guest's answer (its eventfd) or the timeout (a timerfd), while the loop serves
/// everything else; requests that arrive meanwhile share the same answer.
pub struct RuntimeApi {
    channel: ApiChannel,
    ctl: Arc<Mutex<RuntimeController>>,
    guest: Arc<introspect::channel::GuestChannel>,
    pending: Vec<crate::api::ApiRequest>,
    timer: TimerFd,
}

impl RuntimeApi {
    const REQUEST: u32 = 1;
    const ANSWER: u32 = 2;
    const TIMEOUT: u32 = 3;

    /// The subscriber of `ctl`'s API; `None` when its answer timer was taken already.
    pub fn new(channel: ApiChannel, ctl: Arc<Mutex<RuntimeController>>) -> Option<Self> {
        let (guest, timer) = {
            let mut c = ctl.lock().unwrap_or_else(|e| e.into_inner());
            (c.vm.guest_channel.clone(), c.take_answer_timer()?)
        };
        Some(Self {
            channel,
            ctl,
            guest,
            pending: Vec::new(),
            timer,
        })
    }

    /// Starts a `GET /guest/processes` (or joins the one under way).
    fn ask_guest(&mut self, req: crate::api::ApiRequest) {
        if self.pending.is_empty() {
            if let Err(e) = self.guest.request() {
                req.respond(Err(introspect_error(e)));
                return;
            }
            if let Err(e) = self.timer.reset(introspect::channel::ANSWER_TIMEOUT, None) {
                req.respond(Err(ApiError::Internal(format!(
                    "cannot arm the answer timer: {e}"
                ))));
                return;
            }
        }
        self.pending.push(req);
    }

    fn answer_pending(&mut self, outcome: impl Fn() -> Outcome) {
        let _ = self.timer.clear();
        for req in self.pending.drain(..) {
            req.respond(outcome());
        }
    }
}

impl MutEventSubscriber for RuntimeApi {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            Self::REQUEST => {
                // The EventFd cleared first, so that no request is missed.
                let _ = self.channel.eventfd().read();
                while let Some(req) = self.channel.try_next() {
                    if req.action == Action::GuestProcesses {
                        self.ask_guest(req);
                        continue;
                    }
                    let outcome = self
                        .ctl
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .handle(req.action.clone());
                    req.respond(outcome);
                }
            }
            Self::ANSWER => {
                let _ = self.guest.answered().read();
                if self.pending.is_empty() {
                    return; // a late answer to a request that timed out
                }
                let list = {
                    let ctl = self.ctl.lock().unwrap_or_else(|e| e.into_inner());
                    self.guest.answer(&ctl.vm.mem)
                };
                match list {
                    // A newer answer is being written: its doorbell will come.
                    Ok(None) => {}
                    Ok(Some(l)) => {
                        let json = to_json(&l);
                        self.answer_pending(|| json.clone());
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        self.answer_pending(|| Err(ApiError::BadRequest(msg.clone())));
                    }
                }
            }
            Self::TIMEOUT => {
                let _ = self.timer.wait();
                let msg = introspect::channel::timeout_error().to_string();
                self.answer_pending(|| Err(ApiError::BadRequest(msg.clone())));
            }
            t => log::warn!("unexpected API event token {t}"),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let watched = [
            (self.channel.eventfd().as_raw_fd(), Self::REQUEST),
            (self.guest.answered().as_raw_fd(), Self::ANSWER),
            (self.timer.as_raw_fd(), Self::TIMEOUT),
        ];
        for (fd, token) in watched {
            if let Err(e) = ops.add(Events::with_data_raw(fd, token, EventSet::IN)) {
                log::error!("cannot watch the API's event {token}: {e:?}");
            }
        }
    }
}

/// Whether two paths name the same file (device and inode); false when either cannot be looked up.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn introspect_error(e: introspect::IntrospectError) -> ApiError {
    if e.is_bad_input() {
        ApiError::BadRequest(e.to_string())
    } else {
        ApiError::Internal(e.to_string())
    }
}

fn kick(t: &JoinHandle<()>) {
    // SAFETY: the caller checked that the thread has not finished, and its handle is held, so the pthread_t
    // is valid.
    unsafe { libc::pthread_kill(t.as_pthread_t() as _, vstate::vcpu::kick_signal()) };
}

/// Asks every vCPU thread to stop (waking parked ones), kicking it out of `KVM_RUN`, and sleeps until
/// every thread has exited (each says so through [`vstate::vcpu::PauseControl::thread_exited`]), kicking
/// again only if one has not after [`VCPU_KICK_INTERVAL`].
fn stop_vcpus(vm: &Vm, threads: Vec<JoinHandle<()>>) {
    vm.stop.store(true, Ordering::Release);
    vm.pause.wake_all();
    let deadline = Instant::now() + VCPU_STOP_TIMEOUT;
    loop {
        for t in threads.iter().filter(|t| !t.is_finished()) {
            kick(t);
        }
        if vm.pause.wait_exited(threads.len(), VCPU_KICK_INTERVAL) || Instant::now() >= deadline {
            break;
        }
    }
    for t in threads {
        if t.is_finished() || Instant::now() < deadline {
            let _ = t.join();
        } else {
            log::warn!("a vCPU thread did not stop in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn the_metrics_flusher_flushes_every_interval() {
        let mut manager = Manager::new().unwrap();
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        let flusher = MetricsFlusher::new(
            TimerFd::new().unwrap(),
            Duration::from_millis(20),
            Box::new(move || {
                c.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .unwrap();
        manager.add_subscriber(Arc::new(Mutex::new(flusher)));
        let t0 = Instant::now();
        while count.load(Ordering::Relaxed) < 3 && t0.elapsed() < Duration::from_secs(10) {
            manager.run_with_timeout(100).unwrap();
        }
        assert_eq!(count.load(Ordering::Relaxed), 3);
        assert!(
            t0.elapsed() >= Duration::from_millis(55),
            "{:?}",
            t0.elapsed()
        );
    }
}
