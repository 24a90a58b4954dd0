//! The VM's configuration: plain serde structs, filled from CLI flags (and later API bodies and config
//! files), checked once by [`VmConfig::validate`] before anything is built.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::arch::x86_64::layout;

/// Default guest memory, MiB.
pub const DEFAULT_MEM_MIB: u64 = 128;
/// Default vCPU count.
pub const DEFAULT_VCPUS: u8 = 1;
/// Default kernel command line: console on the 8250, reboot through the i8042 (which ends the VM), and
/// reboot at once on panic (which also ends the VM).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

/// How the kernel is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BootProtocol {
    /// The PVH entry point from the ELF note, in 32-bit protected mode.
    Pvh,
    /// The Linux 64-bit boot protocol: long mode with a zero page.
    Linux,
}

/// Guest CPU and memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub vcpu_count: u8,
    pub mem_size_mib: u64,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            vcpu_count: DEFAULT_VCPUS,
            mem_size_mib: DEFAULT_MEM_MIB,
        }
    }
}

/// What to boot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// Forces a boot protocol; detected from the kernel file when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_protocol: Option<BootProtocol>,
}

/// Everything needed to build and run one VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(rename = "boot-source")]
    pub boot_source: BootSource,
    #[serde(rename = "machine-config", default)]
    pub machine: MachineConfig,
    /// Log the boot-time marker.
    #[serde(skip)]
    pub boot_timer: bool,
}

/// A configuration that cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--vcpus must be at least 1")]
    NoVcpus,
    #[error("--vcpus {0} is more than microvm supports ({MAX_VCPUS})")]
    TooManyVcpus(u8),
    #[error("--mem must be at least {min} MiB, got {got}")]
    MemTooSmall { min: u64, got: u64 },
    #[error("--mem {got} MiB is too large: at most {max} MiB")]
    MemTooLarge { max: u64, got: u64 },
    #[error("kernel command line is {len} bytes; the boot protocol allows at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
}

/// Most vCPUs a VM can have: what the MP table in the EBDA can describe, rounded down (Firecracker's limit).
pub const MAX_VCPUS: u8 = 32;
/// Smallest guest: room for the boot structures below 1 MiB and a small kernel above.
pub const MIN_MEM_MIB: u64 = 2;
/// Largest guest this VMM lays out (guest physical space it maps), MiB; the host's own limit is checked
/// when memory is allocated.
pub const MAX_MEM_MIB: u64 = 1 << 20;

impl VmConfig {
    /// The kernel command line the guest gets.
    pub fn cmdline(&self) -> &str {
        self.boot_source
            .boot_args
            .as_deref()
            .unwrap_or(DEFAULT_CMDLINE)
    }

    /// Checks everything that can be checked without touching the host.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.machine.vcpu_count == 0 {
            return Err(ConfigError::NoVcpus);
        }
        if self.machine.vcpu_count > MAX_VCPUS {
            return Err(ConfigError::TooManyVcpus(self.machine.vcpu_count));
        }
        let mem = self.machine.mem_size_mib;
        if mem < MIN_MEM_MIB {
            return Err(ConfigError::MemTooSmall {
                min: MIN_MEM_MIB,
                got: mem,
            });
        }
        if mem > MAX_MEM_MIB {
            return Err(ConfigError::MemTooLarge {
                max: MAX_MEM_MIB,
                got: mem,
            });
        }
        let cmdline = self.cmdline();
        if cmdline.contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        // The devices the VMM adds later append to the command line; those are checked again then.
        if cmdline.len() >= layout::CMDLINE_MAX_SIZE {
            return Err(ConfigError::CmdlineTooLong {
                len: cmdline.len(),
                max: layout::CMDLINE_MAX_SIZE - 1,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VmConfig {
        VmConfig {
            boot_source: BootSource {
                kernel_image_path: "k".into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(c.cmdline(), DEFAULT_CMDLINE);
        assert_eq!(c.machine.mem_size_mib, 128);
        assert_eq!(c.machine.vcpu_count, 1);
    }

    #[test]
    fn rejects_bad_values() {
        let mut c = config();
        c.machine.vcpu_count = 0;
        assert_eq!(c.validate(), Err(ConfigError::NoVcpus));
        c.machine.vcpu_count = MAX_VCPUS + 1;
        assert_eq!(c.validate(), Err(ConfigError::TooManyVcpus(33)));
        c.machine.vcpu_count = MAX_VCPUS;
        c.validate().unwrap();
        let mut c = config();
        c.machine.mem_size_mib = 1;
        assert!(matches!(c.validate(), Err(ConfigError::MemTooSmall { .. })));
        c.machine.mem_size_mib = MAX_MEM_MIB + 1;
        assert!(matches!(c.validate(), Err(ConfigError::MemTooLarge { .. })));
        let mut c = config();
        c.boot_source.boot_args = Some("x".repeat(2047));
        assert_eq!(
            c.validate(),
            Err(ConfigError::CmdlineTooLong {
                len: 2047,
                max: 2047
            })
        );
        c.boot_source.boot_args = Some("x".repeat(2046));
        c.validate().unwrap();
        c.boot_source.boot_args = Some("a\0b".into());
        assert_eq!(c.validate(), Err(ConfigError::CmdlineNul));
    }

    #[test]
    fn parses_firecracker_style_json() {
        let c: VmConfig = serde_json::from_str(
            r#"{"boot-source": {"kernel_image_path": "/k", "boot_args": "console=ttyS0"},
                "machine-config": {"vcpu_count": 2, "mem_size_mib": 256}}"#,
        )
        .unwrap();
        assert_eq!(c.machine.vcpu_count, 2);
        assert_eq!(c.cmdline(), "console=ttyS0");
        assert!(serde_json::from_str::<VmConfig>(r#"{"boot-source": {}, "bogus": 1}"#).is_err());
    }
}
