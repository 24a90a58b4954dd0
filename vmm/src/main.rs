//! The `microvm` command: parses flags into a [`VmConfig`], runs the VM, and exits with its status.
//! Every failure is one line on stderr and exit status 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use vmm::config::{
    BootProtocol, BootSource, ConsoleKind, DriveConfig, MachineConfig, SerialMode, VmConfig,
    DEFAULT_MEM_MIB, DEFAULT_VCPUS,
};

/// A KVM-based microVM monitor.
#[derive(Parser, Debug)]
#[command(name = "microvm", version, about)]
struct Cli {
    /// Kernel to boot: an ELF (PVH note or 64-bit entry) or a bzImage.
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,
    /// Initial ramdisk, loaded at the top of low memory.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line [default: "console=ttyS0 reboot=k panic=1"].
    #[arg(long, value_name = "STR")]
    cmdline: Option<String>,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MEM_MIB)]
    mem: u64,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_VCPUS)]
    vcpus: u8,
    /// Force the boot protocol instead of detecting it from the kernel file.
    #[arg(long, value_enum)]
    boot: Option<BootProtocol>,
    /// Log the time from process start to the guest's boot-time marker write.
    #[arg(long)]
    boot_timer: bool,
    /// A virtio-blk disk: PATH[,ro][,id=ID][,format=raw|qcow2]. Repeatable; the first is /dev/vda.
    /// The format is detected from the file's magic unless given.
    #[arg(long = "disk", value_name = "SPEC", value_parser = DriveConfig::parse)]
    disks: Vec<DriveConfig>,
    /// The guest console: the 8250 UART (ttyS0) or a virtio console (hvc0) on stdin/stdout.
    #[arg(long, value_enum, default_value_t = ConsoleKind::Serial)]
    console: ConsoleKind,
    /// What the 8250 UART is connected to.
    #[arg(long, value_enum, default_value_t = SerialMode::Stdio)]
    serial: SerialMode,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "warn")]
    log_level: log::LevelFilter,
}

impl Cli {
    fn into_config(self) -> VmConfig {
        VmConfig {
            boot_source: BootSource {
                kernel_image_path: self.kernel,
                initrd_path: self.initrd,
                boot_args: self.cmdline,
                boot_protocol: self.boot,
            },
            machine: MachineConfig {
                vcpu_count: self.vcpus,
                mem_size_mib: self.mem,
            },
            drives: self
                .disks
                .into_iter()
                .enumerate()
                .map(|(i, mut d)| {
                    if d.drive_id.is_empty() {
                        d.drive_id = format!("drive{i}");
                    }
                    d
                })
                .collect(),
            console: self.console,
            serial: self.serial,
            boot_timer: self.boot_timer,
        }
    }
}

fn init_logging(level: log::LevelFilter, boot_timer: bool) {
    use std::io::Write;
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level).format(|f, r| {
        writeln!(
            f,
            "microvm: {}: {}",
            r.level().as_str().to_lowercase(),
            r.args()
        )
    });
    if boot_timer {
        builder.filter_module("boot_timer", log::LevelFilter::Info);
    }
    builder.init();
}

fn main() -> ExitCode {
    let start = Instant::now();
    // Before any thread exists, so that every thread inherits the mask and only the event loop sees them.
    vmm::event_loop::block_stop_signals();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message runs over several lines (problem, usage, hint): keep the problem, on one line.
            let msg = e.to_string();
            let problem: Vec<&str> = msg
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!(
                "microvm: {}",
                problem.join(" ").trim_start_matches("error: ")
            );
            return ExitCode::from(1);
        }
    };
    init_logging(cli.log_level, cli.boot_timer);
    let config = cli.into_config();
    match vmm::run(&config, start) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            vmm::terminal::restore();
            eprintln!("microvm: {e}");
            ExitCode::from(1)
        }
    }
}
