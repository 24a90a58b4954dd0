//! The `microvm` command: parses flags (or a Firecracker-style config file) into a [`VmConfig`], runs the
//! VM, optionally serving the API on a Unix socket, and exits with its status. Without `--kernel` or
//! `--config-file`, `--api-sock` waits for the API to configure and start the VM. Every failure is one line on
//! stderr and exit status 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use vmm::config::{
    BootProtocol, BootSource, ConsoleKind, DriveConfig, MachineConfig, NetConfig, SerialMode,
    VmConfig, VsockConfig, DEFAULT_MEM_MIB, DEFAULT_VCPUS,
};
use vmm::controller::DEFAULT_INSTANCE_ID;
use vmm::RunOptions;

/// A switch on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// A KVM-based microVM monitor.
#[derive(Parser, Debug)]
#[command(name = "microvm", version, about)]
struct Cli {
    /// Kernel to boot: an ELF (PVH note or 64-bit entry) or a bzImage. Optional with --api-sock (the API
    /// then configures and starts the VM) or --config-file.
    #[arg(long, value_name = "PATH", required_unless_present_any = ["api_sock", "config_file", "restore"])]
    kernel: Option<PathBuf>,
    /// Restore the VM of a snapshot's state file (from `PUT /snapshot/create`) instead of booting; needs
    /// --mem-file. The VM stays paused unless --resume.
    #[arg(long, value_name = "STATE", requires = "mem_file", conflicts_with_all = ["kernel", "config_file", "initrd", "cmdline", "mem", "vcpus", "disks", "nets", "vsock"])]
    restore: Option<PathBuf>,
    /// The snapshot's memory file (with --restore).
    #[arg(long, value_name = "MEM", requires = "restore")]
    mem_file: Option<PathBuf>,
    /// Run the restored VM at once (with --restore); otherwise it waits paused for `PATCH /vm`.
    #[arg(long, requires = "restore")]
    resume: bool,
    /// Open a drive of the snapshot from another file (with --restore): ID=PATH, repeatable.
    #[arg(long = "drive-override", value_name = "ID=PATH", requires = "restore", value_parser = parse_drive_override)]
    drive_overrides: Vec<vmm::persist::DriveOverride>,
    /// Attach a network interface of the snapshot to another TAP (with --restore): ID=TAP, repeatable.
    #[arg(long = "net-override", value_name = "ID=TAP", requires = "restore", value_parser = parse_net_override)]
    net_overrides: Vec<vmm::persist::NetworkOverride>,
    /// Listen for the snapshot's vsock device on another Unix socket (with --restore).
    #[arg(long = "vsock-override", value_name = "UDS_PATH", requires = "restore")]
    vsock_override: Option<PathBuf>,
    /// Serve the HTTP API (Firecracker's paths) on this Unix socket, created mode 0600, removed on exit.
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// Boot from a JSON config file in Firecracker's schema (boot-source, machine-config, drives,
    /// network-interfaces) instead of the VM flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kernel", "initrd", "cmdline", "mem", "thp", "vcpus", "boot", "disks", "nets", "vsock"])]
    config_file: Option<PathBuf>,
    /// The instance id reported by the API's GET /.
    #[arg(long, value_name = "ID", default_value = DEFAULT_INSTANCE_ID)]
    id: String,
    /// Initial ramdisk, loaded at the top of low memory.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line [default: "console=ttyS0 reboot=k panic=1"].
    #[arg(long, value_name = "STR")]
    cmdline: Option<String>,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MEM_MIB)]
    mem: u64,
    /// Back guest memory with transparent huge pages (madvise MADV_HUGEPAGE).
    #[arg(long, value_enum, value_name = "on|off", default_value_t = OnOff::On)]
    thp: OnOff,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_VCPUS)]
    vcpus: u8,
    /// Force the boot protocol instead of detecting it from the kernel file.
    #[arg(long, value_enum)]
    boot: Option<BootProtocol>,
    /// Log the time from process start to the guest's boot-time marker write.
    #[arg(long)]
    boot_timer: bool,
    /// A virtio-blk disk: PATH[,ro][,id=ID][,format=raw|qcow2][,io_engine=sync|async|threads]
    /// [,cache_type=writeback|direct]. Repeatable; the first is /dev/vda.
    /// The format is detected from the file's magic unless given.
    #[arg(long = "disk", value_name = "SPEC", value_parser = DriveConfig::parse)]
    disks: Vec<DriveConfig>,
    /// A virtio-net device on an existing host TAP: tap=NAME[,mac=MAC][,id=ID]. Repeatable; without
    /// mac= a fixed address is derived from the TAP's name.
    #[arg(long = "net", value_name = "SPEC", value_parser = NetConfig::parse)]
    nets: Vec<NetConfig>,
    /// A virtio-vsock device: cid=N,uds=PATH (the guest's CID, 3 or more; host clients connect to PATH
    /// and write `CONNECT <port>`, guest connections to CID 2 port P reach PATH_P).
    #[arg(long, value_name = "SPEC", value_parser = VsockConfig::parse)]
    vsock: Option<VsockConfig>,
    /// The guest console: the 8250 UART (ttyS0) or a virtio console (hvc0) on stdin/stdout.
    #[arg(long, value_enum, default_value_t = ConsoleKind::Serial)]
    console: ConsoleKind,
    /// What the 8250 UART is connected to.
    #[arg(long, value_enum, default_value_t = SerialMode::Stdio)]
    serial: SerialMode,
    /// Run without seccomp filters.
    #[arg(long, conflicts_with = "seccomp_filter")]
    no_seccomp: bool,
    /// Install the seccomp filters of this JSON file (the built-in table's format: one filter for each of
    /// the thread kinds vmm, api, vcpu and blk_io) instead of the built-in ones.
    #[arg(long, value_name = "FILE")]
    seccomp_filter: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "warn")]
    log_level: log::LevelFilter,
}

impl Cli {
    /// The configuration from the config file, or from the flags (with no kernel yet if none was given).
    fn config(&mut self) -> Result<VmConfig, String> {
        if let Some(path) = &self.config_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("config file {}: {e}", path.display()))?;
            let mut config = VmConfig::from_json(&text)
                .map_err(|e| format!("config file {}: {e}", path.display()))?;
            config.boot_timer = self.boot_timer;
            return Ok(config);
        }
        Ok(VmConfig {
            boot_source: BootSource {
                kernel_image_path: self.kernel.clone().unwrap_or_default(),
                initrd_path: self.initrd.clone(),
                boot_args: self.cmdline.clone(),
                boot_protocol: self.boot,
            },
            machine: MachineConfig {
                vcpu_count: self.vcpus,
                mem_size_mib: self.mem,
                smt: false,
                thp: self.thp == OnOff::On,
                track_dirty_pages: false,
            },
            drives: std::mem::take(&mut self.disks)
                .into_iter()
                .enumerate()
                .map(|(i, mut d)| {
                    if d.drive_id.is_empty() {
                        d.drive_id = format!("drive{i}");
                    }
                    d
                })
                .collect(),
            network_interfaces: std::mem::take(&mut self.nets)
                .into_iter()
                .enumerate()
                .map(|(i, mut n)| {
                    if n.iface_id.is_empty() {
                        n.iface_id = format!("net{i}");
                    }
                    n
                })
                .collect(),
            vsock: self.vsock.take(),
            logger: None,
            metrics: None,
            console: self.console,
            serial: self.serial,
            boot_timer: self.boot_timer,
        })
    }
}

fn init_logging(level: log::LevelFilter, boot_timer: bool) {
    let info_modules = if boot_timer {
        vec!["boot_timer"]
    } else {
        vec![]
    };
    vmm::logger::init(level, info_modules);
}

fn split_override(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((id, v)) if !id.is_empty() && !v.is_empty() => Ok((id.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not ID=VALUE")),
    }
}

fn parse_drive_override(s: &str) -> Result<vmm::persist::DriveOverride, String> {
    let (drive_id, path) = split_override(s)?;
    Ok(vmm::persist::DriveOverride {
        drive_id,
        path_on_host: path.into(),
    })
}

fn parse_net_override(s: &str) -> Result<vmm::persist::NetworkOverride, String> {
    let (iface_id, host_dev_name) = split_override(s)?;
    Ok(vmm::persist::NetworkOverride {
        iface_id,
        host_dev_name,
    })
}

/// `microvm translate|memory|ps ...`: a client of a running microvm's API socket.
#[derive(Parser, Debug)]
#[command(
    name = "microvm",
    about = "Look inside a running microvm through its API socket"
)]
struct ClientCli {
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ClientCommand {
    /// Translate a guest-virtual address through the guest's page tables (from a vCPU's CR3) to
    /// guest-physical, host-virtual and host-physical (GET /vm/translate).
    Translate {
        /// The microvm's API socket.
        #[arg(long, value_name = "PATH")]
        api_sock: PathBuf,
        /// The vCPU whose page tables are walked.
        #[arg(long, value_name = "N", default_value_t = 0)]
        vcpu: u64,
        /// Print the API's JSON answer instead of the report.
        #[arg(long)]
        json: bool,
        /// The guest-virtual address (hex with 0x, or decimal).
        #[arg(value_name = "GVA")]
        gva: String,
    },
    /// Print guest-physical memory as xxd does (GET /vm/memory, at most 4096 bytes).
    Memory {
        /// The microvm's API socket.
        #[arg(long, value_name = "PATH")]
        api_sock: PathBuf,
        /// How many bytes.
        #[arg(long, value_name = "N", default_value = "256")]
        len: String,
        /// Print the API's JSON answer instead of the dump.
        #[arg(long)]
        json: bool,
        /// The guest-physical address (hex with 0x, or decimal).
        #[arg(value_name = "GPA")]
        gpa: String,
    },
    /// List the guest's processes and threads as its kernel knows them (GET /guest/processes).
    Ps {
        /// The microvm's API socket.
        #[arg(long, value_name = "PATH")]
        api_sock: PathBuf,
        /// Print the API's JSON answer instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Print the guest's system calls as strace does, until Ctrl-C or --duration (PUT and
    /// GET /guest/trace); tracing is off again when it ends.
    Trace {
        /// The microvm's API socket.
        #[arg(long, value_name = "PATH")]
        api_sock: PathBuf,
        /// Only this process (repeatable, at most 16).
        #[arg(short = 'p', long = "pid", value_name = "PID")]
        pids: Vec<u32>,
        /// Also its children (as they start).
        #[arg(short = 'f')]
        follow: bool,
        /// Only these calls: trace=NAME[,NAME...].
        #[arg(short = 'e', value_name = "trace=NAMES")]
        expr: Option<String>,
        /// Prefix each line with the time of day (UTC).
        #[arg(short = 't')]
        time: bool,
        /// Show the time spent in each call.
        #[arg(short = 'T')]
        durations: bool,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Print the API's events as JSON, one a line.
        #[arg(long)]
        json: bool,
    },
}

/// The subcommands that make `microvm` a client; any other first argument is the VMM's flags.
const CLIENT_COMMANDS: [&str; 4] = ["translate", "memory", "ps", "trace"];

/// Runs a client subcommand.
fn client_main() -> ExitCode {
    let cli = match ClientCli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_failure(e),
    };
    if let ClientCommand::Trace {
        api_sock,
        pids,
        follow,
        expr,
        time,
        durations,
        duration,
        json,
    } = &cli.command
    {
        return trace_main(
            api_sock,
            vmm::client::TraceOptions {
                pids: pids.clone(),
                follow: *follow,
                syscalls: Vec::new(),
                time: *time,
                durations: *durations,
                json: *json,
                duration: None,
            },
            expr.as_deref(),
            *duration,
        );
    }
    let (sock, path, json, kind) = match &cli.command {
        ClientCommand::Translate {
            api_sock,
            vcpu,
            json,
            gva,
        } => (
            api_sock,
            format!("/vm/translate?gva={gva}&vcpu={vcpu}"),
            *json,
            "translate",
        ),
        ClientCommand::Memory {
            api_sock,
            len,
            json,
            gpa,
        } => (
            api_sock,
            format!("/vm/memory?gpa={gpa}&len={len}"),
            *json,
            "memory",
        ),
        ClientCommand::Ps { api_sock, json } => {
            (api_sock, "/guest/processes".to_owned(), *json, "ps")
        }
        ClientCommand::Trace { .. } => unreachable!("handled above"),
    };
    // The numbers go into the query string as given (the VMM parses and checks them): only letters,
    // digits and '_' may pass.
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_=&".contains(c);
    if !query.chars().all(plain) {
        eprintln!(
            "microvm: {query:?}: addresses and lengths are numbers (decimal, or hex with 0x)"
        );
        return ExitCode::from(1);
    }
    let answer = vmm::client::get(sock, &path).and_then(|v| {
        if json {
            Ok(format!("{v}\n"))
        } else {
            match kind {
                "memory" => vmm::client::format_memory(&v),
                "ps" => Ok(vmm::client::format_processes(&v)),
                _ => Ok(vmm::client::format_translation(&v)),
            }
        }
    });
    match answer {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("microvm: {e}");
            ExitCode::from(1)
        }
    }
}

/// Set by SIGINT/SIGTERM while `microvm trace` runs.
static TRACE_STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn trace_stop(_: libc::c_int) {
    TRACE_STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `microvm trace`: the filters checked, SIGINT/SIGTERM stop it (tracing is turned off on the way out).
fn trace_main(
    sock: &std::path::Path,
    mut opts: vmm::client::TraceOptions,
    expr: Option<&str>,
    duration: Option<f64>,
) -> ExitCode {
    if let Some(e) = expr {
        let Some(names) = e.strip_prefix("trace=") else {
            eprintln!("microvm: -e {e:?}: only trace=NAME[,NAME...] is understood");
            return ExitCode::from(1);
        };
        opts.syscalls = names
            .split(',')
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect();
    }
    if let Some(d) = duration {
        if !(d.is_finite() && d > 0.0) {
            eprintln!("microvm: --duration {d}: a positive number of seconds");
            return ExitCode::from(1);
        }
        opts.duration = Some(std::time::Duration::from_secs_f64(d));
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, trace_stop as *const () as libc::sighandler_t) };
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match vmm::client::trace(sock, &opts, &TRACE_STOP, &mut out) {
        Ok(summary) => {
            eprintln!("microvm trace: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("microvm: {e}");
            ExitCode::from(1)
        }
    }
}

/// Reports a command-line error of clap on one line (status 1), or prints --help/--version (status 0).
fn clap_failure(e: clap::Error) -> ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
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
    ExitCode::from(1)
}

fn main() -> ExitCode {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| CLIENT_COMMANDS.contains(&a.as_str()))
    {
        return client_main();
    }
    let start = Instant::now();
    // Before any thread exists, so that every thread inherits the mask and only the event loop sees them.
    vmm::event_loop::block_stop_signals();
    // KVM's slowest set-up step, started now so that it overlaps parsing and loading.
    // Not for a restore (`--restore`): its vCPUs take their CPUID from the snapshot.
    if !std::env::args_os().any(|a| a == "--restore") {
        vmm::builder::prefetch_kvm();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_failure(e),
    };
    let mut cli = cli;
    init_logging(cli.log_level, cli.boot_timer);
    let filters = match (&cli.seccomp_filter, cli.no_seccomp) {
        (_, true) => vmm::seccomp::FilterSource::Disabled,
        (Some(path), false) => vmm::seccomp::FilterSource::File(path.clone()),
        (None, false) => vmm::seccomp::FilterSource::Default,
    };
    if let Err(e) = vmm::seccomp::init(&filters) {
        eprintln!("microvm: {e}");
        return ExitCode::from(1);
    }
    let config = match cli.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("microvm: {e}");
            return ExitCode::from(1);
        }
    };
    let restore = cli.restore.take().map(|state| vmm::persist::LoadParams {
        snapshot_path: state,
        mem_file_path: cli.mem_file.take().unwrap_or_default(),
        resume_vm: cli.resume,
        network_overrides: std::mem::take(&mut cli.net_overrides),
        vsock_override: cli.vsock_override.take(),
        drive_overrides: std::mem::take(&mut cli.drive_overrides),
    });
    let opts = RunOptions {
        config,
        restore,
        boot_now: cli.kernel.is_some() || cli.config_file.is_some(),
        api_sock: cli.api_sock,
        id: cli.id,
        start,
    };
    match vmm::run(opts) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            vmm::terminal::restore();
            eprintln!("microvm: {e}");
            ExitCode::from(1)
        }
    }
}
