#!/usr/bin/env bash
# Builds the guest kernel (guest-kernel/, its own cargo workspace and target flags) into build/guest-kernel,
# an ELF with a PVH note and its symbol table (the VMM resolves guest RIPs to symbols with it).
#   scripts/build-guest-kernel.sh          release build
#   scripts/build-guest-kernel.sh --test   also run the host unit tests of guest-kernel/kcore
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$root/build"

(cd "$root/guest-kernel" && cargo build --release --quiet)
cp "$root/guest-kernel/target/x86_64-unknown-linux-gnu/release/guest-kernel" "$root/build/guest-kernel"
# Kernel-mode code is emulated on these hosts and SSE arithmetic cannot be: refuse a kernel that has any
# instruction on xmm registers other than plain moves.
if command -v objdump >/dev/null; then
    bad="$(objdump -d --no-show-raw-insn -M intel "$root/build/guest-kernel" |
        awk '/^[0-9a-f]+ <.*>:$/ {fn=$2} /xmm/ && $2 !~ /^(movups|movaps|movdqu|movdqa|movntps|movntdq)$/ {print fn, $2}' | sort -u)"
    if [[ -n "$bad" ]]; then
        echo "error: SSE instructions the KVM emulator cannot run in kernel mode:" >&2
        echo "$bad" >&2
        exit 1
    fi
fi
echo "built $root/build/guest-kernel ($(stat -c %s "$root/build/guest-kernel") bytes)"

if [[ "${1:-}" == "--test" ]]; then
    # Run from the repository root so guest-kernel/.cargo/config.toml (bare-metal flags) does not apply.
    (cd "$root" && cargo test --quiet --manifest-path guest-kernel/kcore/Cargo.toml)
fi
