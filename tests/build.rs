//! Builds the test guests in guests/ with the system C toolchain (gcc, binutils): a PVH ELF, a plain 64-bit
//! ELF (no PVH note) and a bzImage wrapping the same code. Their paths reach the tests as env vars.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (install gcc and binutils)"));
    assert!(status.success(), "{cmd:?} failed");
}

fn link(out: &Path, name: &str, objs: &[&str]) -> PathBuf {
    let guests = Path::new("guests");
    let elf = out.join(name);
    let mut cmd = Command::new("gcc");
    cmd.args([
        "-ffreestanding",
        "-fno-pic",
        "-no-pie",
        "-nostdlib",
        "-static",
        "-mno-red-zone",
        "-mgeneral-regs-only",
        "-fno-stack-protector",
        "-fno-asynchronous-unwind-tables",
        "-O2",
        "-Wl,--build-id=none",
        "-Wl,-z,noexecstack",
        "-Wl,--no-warn-rwx-segments",
    ])
    .arg(format!("-Wl,-T,{}", guests.join("link.ld").display()))
    .arg("-o")
    .arg(&elf);
    for o in objs {
        cmd.arg(guests.join(o));
    }
    run(&mut cmd);
    elf
}

/// A bzImage: one setup sector after the boot sector, carrying the Linux setup header, then the flat image.
fn bzimage(out: &Path, elf: &Path) -> PathBuf {
    let flat = out.join("guest.bin");
    run(Command::new("objcopy")
        .args(["-O", "binary"])
        .arg(elf)
        .arg(&flat));
    let payload = std::fs::read(&flat).unwrap();
    let mut setup = vec![0u8; 1024];
    let put = |s: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        s[off..off + bytes.len()].copy_from_slice(bytes)
    };
    put(&mut setup, 0x1f1, &[1]); // setup_sects
    put(&mut setup, 0x1fe, &0xaa55u16.to_le_bytes()); // boot_flag
    put(&mut setup, 0x202, b"HdrS");
    put(&mut setup, 0x206, &0x020fu16.to_le_bytes()); // protocol 2.15
    put(&mut setup, 0x211, &[1]); // loadflags: LOADED_HIGH
    put(&mut setup, 0x214, &0x10_0000u32.to_le_bytes()); // code32_start
    put(&mut setup, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    put(&mut setup, 0x236, &1u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    put(&mut setup, 0x238, &2047u32.to_le_bytes()); // cmdline_size
    put(
        &mut setup,
        0x260,
        &(payload.len() as u32 + 0x2_0000).to_le_bytes(),
    ); // init_size (with .bss)
    setup.extend(payload);
    let bz = out.join("guest.bzImage");
    std::fs::write(&bz, setup).unwrap();
    bz
}

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for f in [
        "entry.S",
        "pvh_note.S",
        "guest.c",
        "virtio_blk.c",
        "virtio_net.c",
        "virtio_vsock.c",
        "virtio_mmio.h",
        "link.ld",
    ] {
        println!("cargo:rerun-if-changed=guests/{f}");
    }
    let pvh = link(
        &out,
        "guest-pvh.elf",
        &[
            "entry.S",
            "pvh_note.S",
            "guest.c",
            "virtio_blk.c",
            "virtio_net.c",
            "virtio_vsock.c",
        ],
    );
    let elf64 = link(
        &out,
        "guest-elf64.elf",
        &[
            "entry.S",
            "guest.c",
            "virtio_blk.c",
            "virtio_net.c",
            "virtio_vsock.c",
        ],
    );
    let bz = bzimage(&out, &elf64);
    println!("cargo:rustc-env=GUEST_PVH={}", pvh.display());
    println!("cargo:rustc-env=GUEST_ELF64={}", elf64.display());
    println!("cargo:rustc-env=GUEST_BZIMAGE={}", bz.display());
}
