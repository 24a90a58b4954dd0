#!/usr/bin/env bash
# Installs what the fuzz targets need: the nightly toolchain (already on the project's machines) and
# cargo-fuzz from crates.io, if missing. Called by scripts/fuzz.sh.
set -euo pipefail

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
cargo +nightly fuzz --version
