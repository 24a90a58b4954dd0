#!/usr/bin/env bash
# Installs the host tools the project needs, when missing: a C toolchain (test guests), musl-gcc (the
# rootfs's C test programs, also built against musl), e2fsprogs (rootfs),
# qemu-utils (qcow2 images, interop tests), qemu-system-x86 (second VMM for the guest kernel and benchmarks),
# curl (API tests), util-linux (unshare, setpriv), iproute2 and ping (virtio-net tests and benchmarks in
# network namespaces), busybox-static (the guest's userland), strace (the trace tests). Safe to run repeatedly: it does nothing
# when everything is there.
set -euo pipefail
need=()
command -v gcc >/dev/null || need+=(gcc)
# libFuzzer (C++) for the fuzz targets, built by scripts/test.sh and scripts/fuzz.sh.
command -v g++ >/dev/null || need+=(g++)
command -v musl-gcc >/dev/null || need+=(musl-tools)
command -v objcopy >/dev/null || need+=(binutils)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v curl >/dev/null || need+=(curl)
command -v unshare >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
# strace: the host side of the syscall-trace comparison (tests/tests/introspect.rs).
command -v strace >/dev/null || need+=(strace)
# Debian's static busybox: the guest's shell and tools (copied into the rootfs), and the host side of the
# differential busybox tests (tests/tests/guest_busybox.rs).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The microvm binaries are built static against musl (scripts/build.sh; README "Building"): Rust's
# standard library for that target, from rustup.
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    echo "installing: rust-std for x86_64-unknown-linux-musl"
    rustup target add x86_64-unknown-linux-musl
fi
