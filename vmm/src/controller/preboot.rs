//! The pre-boot controller: the configuration being assembled before the VM exists.
//!
//! Every request is answered from the configuration alone (plus a check that files named can be opened
//! and TAPs exist): no KVM, no threads, so the whole state machine is unit-tested without a VM. The only
//! request it cannot answer itself is `InstanceStart`: [`PrebootAnswer::Start`] tells the caller
//! ([`crate::run`]'s pre-boot loop) to build the VM, which then answers.

use std::sync::Arc;

use crate::api::routes::Action;
use crate::api::{ApiError, ApiMetrics, Outcome, Reply};
use crate::config::VmConfig;
use devices::virtio::net::tap::Tap;

use super::{flush_metrics, info, metrics_json, to_json, version, I8042Metrics};

/// What the pre-boot controller made of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum PrebootAnswer {
    /// The answer to send.
    Reply(Outcome),
    /// `InstanceStart` with a configuration that can be tried: build and boot the VM.
    Start,
    /// `PUT /snapshot/load` before anything was configured: restore the VM from the snapshot.
    Restore(crate::persist::LoadParams),
}

/// The configuration before `InstanceStart`.
pub struct PrebootController {
    id: String,
    config: VmConfig,
    /// The configuration as given at start-up: `PUT /snapshot/load` is refused once it has changed.
    initial: VmConfig,
    api_metrics: Option<Arc<ApiMetrics>>,
}

impl PrebootController {
    /// A controller for `config`, as given by flags or a config file (the API may complete it).
    pub fn new(id: String, config: VmConfig, api_metrics: Option<Arc<ApiMetrics>>) -> Self {
        Self {
            id,
            initial: config.clone(),
            config,
            api_metrics,
        }
    }

    /// The configuration as it stands.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The API's counters, if the API is served.
    pub fn api_metrics(&self) -> Option<&Arc<ApiMetrics>> {
        self.api_metrics.as_ref()
    }

    /// Changes the configuration through `f`, if the result is valid.
    fn update(&mut self, f: impl FnOnce(&mut VmConfig)) -> Outcome {
        let mut config = self.config.clone();
        f(&mut config);
        config.validate()?;
        self.config = config;
        Ok(Reply::Empty)
    }

    /// Answers one request, or asks for the VM to be started.
    pub fn handle(&mut self, action: Action) -> PrebootAnswer {
        if action == Action::InstanceStart {
            if self
                .config
                .boot_source
                .kernel_image_path
                .as_os_str()
                .is_empty()
            {
                return PrebootAnswer::Reply(Err(ApiError::NotAllowed(
                    "no kernel: PUT /boot-source before InstanceStart".into(),
                )));
            }
            return PrebootAnswer::Start;
        }
        if let Action::LoadSnapshot(params) = action {
            // The logger and metrics sinks may be set first (as Firecracker allows).
            let mut config = self.config.clone();
            (config.logger, config.metrics) = (None, None);
            if config != self.initial {
                return PrebootAnswer::Reply(Err(ApiError::NotAllowed(
                    "a snapshot can only be loaded before anything is configured".into(),
                )));
            }
            return PrebootAnswer::Restore(params);
        }
        PrebootAnswer::Reply(self.answer(action))
    }

    fn answer(&mut self, action: Action) -> Outcome {
        match action {
            Action::GetInfo => info(&self.id, "Not started"),
            Action::GetVersion => version(),
            Action::GetMachineConfig => to_json(&self.config.machine),
            Action::GetVmConfig => to_json(&self.config),
            Action::GetMetrics => metrics_json(
                self.api_metrics.as_deref(),
                &[],
                &[],
                None,
                &I8042Metrics::default(),
            )
            .map(Reply::Json),
            Action::FlushMetrics => {
                let m = metrics_json(
                    self.api_metrics.as_deref(),
                    &[],
                    &[],
                    None,
                    &I8042Metrics::default(),
                )?;
                flush_metrics(&self.id, &self.config, m)
            }
            Action::PutLogger(l) => {
                crate::logger::configure(&self.id, &l)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                self.update(|c| c.logger = Some(l))
            }
            Action::PutMetrics(m) => {
                crate::logger::configure_metrics(&m.metrics_path)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                self.update(|c| c.metrics = Some(m))
            }
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
                    return Err(ApiError::BadRequest(e.to_string()));
                }
                Ok(Reply::Empty)
            }
            Action::PutVsock(v) => self.update(|c| c.vsock = Some(v)),
            Action::Pause | Action::Resume | Action::SendCtrlAltDel => {
                let what = match action {
                    Action::Pause => "pausing",
                    Action::Resume => "resuming",
                    _ => "SendCtrlAltDel",
                };
                Err(ApiError::NotAllowed(format!(
                    "{what} needs a started VM (InstanceStart)"
                )))
            }
            Action::CreateSnapshot(_) => Err(ApiError::NotAllowed(
                "a snapshot needs a started, paused VM".into(),
            )),
            // Firecracker's rule: PATCH is for a running VM; before it, PUT the whole body again.
            Action::PatchDrive(_) | Action::PatchNetworkInterface(_) => Err(ApiError::NotAllowed(
                "PATCH is only allowed after InstanceStart (before it, PUT the drive or interface \
                 again)"
                    .into(),
            )),
            Action::Translate(_)
            | Action::ReadMemory(_)
            | Action::GuestProcesses
            | Action::PutTrace(_)
            | Action::GetTrace(_) => Err(ApiError::NotAllowed(
                "looking inside the guest needs a started VM (InstanceStart)".into(),
            )),
            Action::InstanceStart | Action::LoadSnapshot(_) => {
                unreachable!("handled by PrebootController::handle")
            }
        }
    }
}

/// Checks early (as Firecracker does) that a file named in a request can be opened.
fn openable(path: &std::path::Path, field: &str) -> Result<(), ApiError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| ApiError::BadRequest(format!("{field} {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BootSource, DriveConfig, MachineConfig, NetConfig};
    use serde_json::json;

    fn json_of(a: PrebootAnswer) -> serde_json::Value {
        match a {
            PrebootAnswer::Reply(Ok(Reply::Json(s))) => serde_json::from_str(&s).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn err(a: PrebootAnswer) -> ApiError {
        match a {
            PrebootAnswer::Reply(Err(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn configures_before_start_and_reports_state() {
        let mut c = PrebootController::new("test".into(), VmConfig::default(), None);
        let info = json_of(c.handle(Action::GetInfo));
        assert_eq!(info["state"], "Not started");
        assert_eq!(info["id"], "test");
        assert_eq!(info["app_name"], "microvm");

        let machine = MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 64,
            smt: false,
            thp: false,
            track_dirty_pages: false,
        };
        assert_eq!(
            c.handle(Action::PutMachineConfig(machine.clone())),
            PrebootAnswer::Reply(Ok(Reply::Empty))
        );
        let got = json_of(c.handle(Action::GetMachineConfig));
        assert_eq!(
            got,
            json!({"vcpu_count": 2, "mem_size_mib": 64, "smt": false, "track_dirty_pages": false,
                   "huge_pages": "None"})
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
            let e = err(c.handle(Action::PutMachineConfig(bad)));
            assert_eq!(e.status(), 400);
            assert!(matches!(e, ApiError::Config(_)), "{e:?}");
        }
        assert_eq!(c.config.machine, machine);

        // Files must exist.
        let missing = BootSource {
            kernel_image_path: "/nonexistent/kernel".into(),
            ..Default::default()
        };
        let e = err(c.handle(Action::PutBootSource(missing)));
        assert!(e
            .to_string()
            .contains("kernel_image_path /nonexistent/kernel"));
        let exe = std::env::current_exe().unwrap();
        let drive = |id: &str, root: bool| DriveConfig {
            is_root_device: root,
            is_read_only: true,
            ..DriveConfig::new(id, exe.clone())
        };
        assert_eq!(
            c.handle(Action::PutDrive(drive("a", true))),
            PrebootAnswer::Reply(Ok(Reply::Empty))
        );
        assert_eq!(
            c.handle(Action::PutDrive(drive("a", true))),
            PrebootAnswer::Reply(Ok(Reply::Empty))
        );
        assert_eq!(c.config.drives.len(), 1, "same id replaces");
        assert_eq!(
            err(c.handle(Action::PutDrive(drive("b", true)))).status(),
            400,
            "two root devices"
        );
        let net = NetConfig {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: Some("zz".into()),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        };
        assert_eq!(
            err(c.handle(Action::PutNetworkInterface(net))).status(),
            400
        );
        let config = json_of(c.handle(Action::GetVmConfig));
        assert_eq!(config["drives"][0]["drive_id"], "a");
        assert_eq!(config["machine-config"]["vcpu_count"], 2);

        // Not allowed before start.
        for a in [Action::Pause, Action::Resume, Action::SendCtrlAltDel] {
            assert_eq!(err(c.handle(a)).status(), 400);
        }
        let e = err(c.handle(Action::InstanceStart));
        assert!(e.to_string().contains("PUT /boot-source"), "{e}");
        assert_eq!(
            c.handle(Action::FlushMetrics),
            PrebootAnswer::Reply(Ok(Reply::Empty))
        );
        let metrics = json_of(c.handle(Action::GetMetrics));
        assert_eq!(metrics["i8042"]["ctrl_alt_del"], 0);

        // With a kernel, InstanceStart is the caller's to carry out.
        c.config.boot_source.kernel_image_path = exe;
        assert_eq!(c.handle(Action::InstanceStart), PrebootAnswer::Start);
    }
}
