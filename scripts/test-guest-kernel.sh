#!/usr/bin/env bash
# Host unit tests of the guest kernel's pure logic (guest-kernel/kcore: ext2 against mke2fs -d images, ELF
# parsing, the initial stack/auxv layout, command line, number formatting), and a check that the kernel
# itself still builds clippy-clean. The boot tests are tests/tests/guest_kernel.rs (cargo test --workspace).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# From the repository root, so guest-kernel/.cargo/config.toml (bare-metal flags) does not apply.
cd "$root"
cargo test --quiet --manifest-path guest-kernel/kcore/Cargo.toml
cargo clippy --quiet --manifest-path guest-kernel/kcore/Cargo.toml --all-targets -- -D warnings
# (rustc's warning that -sse2 will one day be an error is expected: see guest-kernel/.cargo/config.toml.)
(cd "$root/guest-kernel" && cargo clippy --quiet --release -- -D warnings)
