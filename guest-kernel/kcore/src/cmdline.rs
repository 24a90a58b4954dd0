//! The kernel command line: space-separated `key=value` words and bare flags, as the loader passes them
//! (PVH `cmdline_paddr`). Only the words the kernel acts on are interpreted here.

/// One virtio-mmio window announced as `virtio_mmio.device=<size>@<addr>:<irq>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioMmioDevice {
    pub size: u64,
    pub addr: u64,
    pub irq: u32,
}

/// Iterates over the words of a command line.
pub fn words(cmdline: &str) -> impl Iterator<Item = &str> {
    cmdline.split_ascii_whitespace()
}

/// The value of the last `key=value` word for `key`, or `None`.
pub fn value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    words(cmdline)
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .last()
}

/// Parses an unsigned number: decimal, `0x` hex, with an optional K/M/G suffix.
pub fn parse_number(s: &str) -> Option<u64> {
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u64::from_str_radix(hex, 16).ok()?
    } else {
        digits.parse::<u64>().ok()?
    };
    v.checked_mul(mult)
}

/// Parses the value of one `virtio_mmio.device=` word: `<size>@<addr>:<irq>`.
pub fn parse_virtio_mmio(v: &str) -> Option<VirtioMmioDevice> {
    let (size, rest) = v.split_once('@')?;
    let (addr, irq) = rest.split_once(':')?;
    // Linux also accepts a trailing `:<id>`.
    let irq = irq.split(':').next()?;
    Some(VirtioMmioDevice {
        size: parse_number(size)?,
        addr: parse_number(addr)?,
        irq: u32::try_from(parse_number(irq)?).ok()?,
    })
}

/// All `virtio_mmio.device=` entries, in command-line order (malformed ones are skipped).
pub fn virtio_mmio_devices(cmdline: &str) -> impl Iterator<Item = VirtioMmioDevice> + '_ {
    words(cmdline)
        .filter_map(|w| w.strip_prefix("virtio_mmio.device="))
        .filter_map(parse_virtio_mmio)
}

/// The CFS tunables: the defaults, overridden by `sched_latency_ns=`, `sched_min_granularity_ns=` and
/// `sched_wakeup_granularity_ns=` (Linux's sysctl names, in nanoseconds; zero or malformed values are
/// ignored).
pub fn sched_tunables(cmdline: &str) -> crate::sched::Tunables {
    let mut t = crate::sched::Tunables::default();
    let get = |key| {
        value(cmdline, key)
            .and_then(parse_number)
            .filter(|v| *v > 0)
    };
    if let Some(v) = get("sched_latency_ns") {
        t.latency_ns = v;
    }
    if let Some(v) = get("sched_min_granularity_ns") {
        t.min_granularity_ns = v;
    }
    if let Some(v) = get("sched_wakeup_granularity_ns") {
        t.wakeup_granularity_ns = v;
    }
    t
}

/// init's arguments: the words after `--`, as on Linux, except `virtio_mmio.device=` entries, which VMMs
/// (QEMU among them) append at the very end of the line, after any `--`.
pub fn init_args(cmdline: &str) -> impl Iterator<Item = &str> {
    words(cmdline)
        .skip_while(|w| *w != "--")
        .skip(1)
        .filter(|w| !w.starts_with("virtio_mmio.device="))
}

/// A static IPv4 configuration from `ip=CLIENT:SERVER:GATEWAY:NETMASK:HOSTNAME:DEVICE:AUTOCONF` (Linux's
/// nfsroot form; only the client address, gateway, netmask and device are used).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpConfig {
    pub addr: [u8; 4],
    /// Prefix length from the netmask (24 when the netmask is empty).
    pub prefix_len: u8,
    pub gateway: Option<[u8; 4]>,
}

/// The address the guest uses without `ip=`: 10.0.0.2/24, gateway 10.0.0.1.
pub const DEFAULT_IP: IpConfig = IpConfig {
    addr: [10, 0, 0, 2],
    prefix_len: 24,
    gateway: Some([10, 0, 0, 1]),
};

/// Parses a dotted-quad IPv4 address.
pub fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for b in out.iter_mut() {
        *b = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Parses the value of `ip=`. `None` when it is malformed, names a device other than eth0, or asks for
/// autoconfiguration (dhcp, bootp, ...), which this kernel does not do; `off`/`none`/`static` or empty are
/// accepted.
pub fn parse_ip(v: &str) -> Option<IpConfig> {
    let f: [&str; 7] = {
        let mut f = [""; 7];
        let mut it = v.split(':');
        for slot in f.iter_mut() {
            *slot = it.next().unwrap_or("");
        }
        if it.next().is_some() {
            return None;
        }
        f
    };
    let addr = parse_ipv4(f[0])?;
    let gateway = match f[2] {
        "" => None,
        g => Some(parse_ipv4(g)?),
    };
    let prefix_len = match f[3] {
        "" => 24,
        m => {
            let m = u32::from_be_bytes(parse_ipv4(m)?);
            // A netmask is contiguous ones.
            if m.leading_ones() + m.trailing_zeros() != 32 {
                return None;
            }
            m.leading_ones() as u8
        }
    };
    if !matches!(f[5], "" | "eth0") || !matches!(f[6], "" | "off" | "none" | "static") {
        return None;
    }
    Some(IpConfig {
        addr,
        prefix_len,
        gateway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_numbers() {
        let c = "console=ttyS0 root=/dev/vda hz=250 quiet hz=1000";
        assert_eq!(value(c, "root"), Some("/dev/vda"));
        assert_eq!(value(c, "hz"), Some("1000"));
        assert_eq!(value(c, "quiet"), None);
        assert_eq!(parse_number("4K"), Some(4096));
        assert_eq!(parse_number("0xd0000000"), Some(0xd000_0000));
        assert_eq!(parse_number("x"), None);
    }

    #[test]
    fn init_arguments_follow_the_double_dash() {
        let c = "console=ttyS0 root=/dev/vda -- check -v virtio_mmio.device=4K@0xd0000000:5";
        assert_eq!(init_args(c).collect::<Vec<_>>(), vec!["check", "-v"]);
        assert_eq!(
            virtio_mmio_devices(c).count(),
            1,
            "still a kernel parameter"
        );
        assert_eq!(init_args("root=/dev/vda").count(), 0);
    }

    #[test]
    fn scheduler_tunables() {
        let t = sched_tunables("root=/dev/vda");
        assert_eq!(t, crate::sched::Tunables::default());
        let t = sched_tunables(
            "sched_latency_ns=24000000 sched_min_granularity_ns=3000000 sched_wakeup_granularity_ns=0",
        );
        assert_eq!(t.latency_ns, 24_000_000);
        assert_eq!(t.min_granularity_ns, 3_000_000);
        assert_eq!(t.wakeup_granularity_ns, 1_000_000, "zero is ignored");
        assert_eq!(t.nr_latency(), 8);
    }

    #[test]
    fn virtio_mmio_entries() {
        let c = "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 virtio_mmio.device=4K@0xd0001000:6 \
                 virtio_mmio.device=bad";
        let v: Vec<_> = virtio_mmio_devices(c).collect();
        assert_eq!(
            v,
            vec![
                VirtioMmioDevice {
                    size: 512,
                    addr: 0xfeb0_0e00,
                    irq: 12
                },
                VirtioMmioDevice {
                    size: 4096,
                    addr: 0xd000_1000,
                    irq: 6
                },
            ]
        );
    }

    #[test]
    fn ip_config() {
        assert_eq!(
            parse_ip("192.168.7.2::192.168.7.1:255.255.255.0::eth0:off"),
            Some(IpConfig {
                addr: [192, 168, 7, 2],
                prefix_len: 24,
                gateway: Some([192, 168, 7, 1]),
            })
        );
        assert_eq!(
            parse_ip("10.1.2.3:::255.255.0.0"),
            Some(IpConfig {
                addr: [10, 1, 2, 3],
                prefix_len: 16,
                gateway: None,
            })
        );
        assert_eq!(parse_ip("10.1.2.3").map(|c| c.prefix_len), Some(24));
        assert_eq!(parse_ip("10.1.2.3:::255.0.255.0"), None);
        assert_eq!(parse_ip("10.1.2.300::::::"), None);
        assert_eq!(parse_ip("10.1.2.3::::::dhcp"), None);
        assert_eq!(parse_ip("10.1.2.3:::::eth1:off"), None);
        assert_eq!(parse_ip("dhcp"), None);
        assert_eq!(parse_ip("1.2.3.4::::::off:x"), None);
        assert_eq!(parse_ipv4("1.2.3"), None);
        assert_eq!(parse_ipv4("1.2.3.4.5"), None);
    }
}
