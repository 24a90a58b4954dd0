#!/usr/bin/env bash
# Builds the guest root filesystem: the rootfs crate's programs linked statically, staged with
# rootfs/files/ into a tree, made into ext2 with `mke2fs -d`, converted to build/rootfs.qcow2.
#   scripts/build-rootfs.sh [--raw]    (--raw also keeps build/rootfs.ext2)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/build"
stage="$out/rootfs-stage"
target=x86_64-unknown-linux-gnu
mkdir -p "$out"

for tool in mke2fs qemu-img; do
    if ! command -v "$tool" >/dev/null; then
        echo "installing $tool" >&2
        apt-get update -qq && apt-get install -y -qq e2fsprogs qemu-utils >/dev/null
    fi
done

# Static executables (glibc static-pie); a separate --target dir keeps the workspace's own builds intact.
(cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --quiet -p rootfs --target "$target")
bindir="$root/target/$target/release"
# The same programs as static non-PIE (ET_EXEC) executables, so both kinds the loader takes get booted
# (/sbin/init-nopie; boot it with init=/sbin/init-nopie).
(cd "$root" && RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
    cargo build --release --quiet -p rootfs --target "$target" --target-dir "$root/target/rootfs-nopie")
nopie="$root/target/rootfs-nopie/$target/release"
# forkloop: a tiny no_std executable (a few pages; the fork/exit/wait leak test), built by plain rustc.
mkdir -p "$root/target/rootfs-tiny"
rustc --edition 2021 -C panic=abort -C opt-level=2 -C relocation-model=static \
    -C link-arg=-nostartfiles -C link-arg=-nostdlib -C link-arg=-static -C link-arg=-no-pie \
    -o "$root/target/rootfs-tiny/forkloop" "$root/rootfs/tiny/forkloop.rs"
# execloop: the same kind of executable, for the fork/exec/exit frame-reuse test (it execs itself).
rustc --edition 2021 -C panic=abort -C opt-level=2 -C relocation-model=static \
    -C link-arg=-nostartfiles -C link-arg=-nostdlib -C link-arg=-static -C link-arg=-no-pie \
    -o "$root/target/rootfs-tiny/execloop" "$root/rootfs/tiny/execloop.rs"

# The C test programs (rootfs/c/*.c), each static with glibc (NAME-glibc) and with musl (NAME-musl), so
# both libcs' threads, mprotect and mmap use is run (tests/tests/guest_threads.rs). rootfs/c/common.h (SAY,
# err(): a result as "N" or "-1 ENAME") is included by them from beside the source, not built itself.
if ! command -v musl-gcc >/dev/null; then
    "$root/scripts/install-deps.sh"
fi
cbin="$root/target/rootfs-c"
mkdir -p "$cbin"
for src in "$root"/rootfs/c/*.c; do
    name="$(basename "$src" .c)"
    gcc -static -O2 -Wall -Werror -pthread -o "$cbin/$name-glibc" "$src"
    musl-gcc -static -O2 -Wall -Werror -pthread -o "$cbin/$name-musl" "$src"
done

rm -rf "$stage"
mkdir -p "$stage"/{sbin,bin,etc,dev,proc,tmp,root,mnt,run}
# busybox mount/df read the mount table from /etc/mtab, as on Linux a link to /proc/mounts.
ln -s /proc/mounts "$stage/etc/mtab"
cp -a "$root/rootfs/files/." "$stage/"
install -m 0755 "$bindir/init" "$stage/sbin/init"
install -m 0755 "$nopie/init" "$stage/sbin/init-nopie"
install -m 0755 "$bindir/proctest" "$stage/bin/proctest"
install -m 0755 "$bindir/memtest" "$stage/bin/memtest"
install -m 0755 "$bindir/toolbox" "$stage/bin/toolbox"
install -m 0755 "$root/target/rootfs-tiny/forkloop" "$stage/bin/forkloop"
install -m 0755 "$root/target/rootfs-tiny/execloop" "$stage/bin/execloop"
for prog in udp-echo httpd tcp-cat tcp-backlog; do
    install -m 0755 "$bindir/$prog" "$stage/bin/$prog"
done
for prog in "$cbin"/*; do
    install -m 0755 "$prog" "$stage/bin/$(basename "$prog")"
    strip "$stage/bin/$(basename "$prog")"
done
# httpd's files: what rootfs/files/srv holds, plus a generated 4 MiB file of random bytes (the tests
# compare what they fetch with build/rootfs-stage/srv/big.bin).
mkdir -p "$stage/srv"
head -c $((4 << 20)) /dev/urandom > "$stage/srv/big.bin"
install -m 0755 "$bindir/cfs-share" "$stage/bin/cfs-share"
install -m 0755 "$bindir/rthreads" "$stage/bin/rthreads"
install -m 0755 "$bindir/wakeup-latency" "$stage/bin/wakeup-latency"
# The few small commands busybox has no applet for are one executable, chosen by the name it runs as
# (`toolbox schedps` and `toolbox cpuinfo` need no link).
for cmd in zombie forkbomb nice; do
    ln -s toolbox "$stage/bin/$cmd"
done
strip "$stage/sbin/init" "$stage/sbin/init-nopie" "$stage/bin/proctest" "$stage/bin/memtest" "$stage/bin/toolbox" "$stage/bin/forkloop" "$stage/bin/execloop" \
    "$stage/bin/udp-echo" "$stage/bin/httpd" "$stage/bin/tcp-cat" "$stage/bin/tcp-backlog" "$stage/bin/cfs-share" "$stage/bin/wakeup-latency" "$stage/bin/rthreads" \
    2>/dev/null || true

# Debian's busybox-static (installed by scripts/install-deps.sh) is the userland: /bin/busybox and a link
# for each applet (`busybox --list-full`: /bin/sh is its ash, ls, ps, kill, poweroff...) unless the rootfs
# has a program of that name in any of the PATH directories (its own httpd and nice stay what they are
# whatever the PATH order).
busybox=/bin/busybox
if ! [[ -x "$busybox" ]] || ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
    "$root/scripts/install-deps.sh"
fi
install -m 0755 "$busybox" "$stage/bin/busybox"
for applet in $("$busybox" --list-full); do
    dir="$(dirname "$applet")"
    mkdir -p "$stage/$dir"
    name="$(basename "$applet")"
    taken=0
    for d in bin sbin usr/bin usr/sbin; do
        if [[ -e "$stage/$d/$name" || -L "$stage/$d/$name" ]]; then
            taken=1
        fi
    done
    if ((taken == 0)); then
        ln -s /bin/busybox "$stage/$applet"
    fi
done

img="$out/rootfs.ext2"
rm -f "$img"
# 64 MiB: the tree is ~36 MiB (busybox and the static glibc/musl test programs); the file-system
# tests write a few MiB into copies of it (40 MiB left fstest ENOSPC once the tree passed 36 MiB).
mke2fs -q -F -t ext2 -b 4096 -L rootfs -d "$stage" "$img" 64M
e2fsck -fn "$img" >/dev/null
qemu-img convert -f raw -O qcow2 "$img" "$out/rootfs.qcow2"
[[ "${1:-}" == "--raw" ]] || rm -f "$img"
echo "built $out/rootfs.qcow2"
