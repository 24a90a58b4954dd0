#!/usr/bin/env bash
# Installs qemu-img and qemu-io (Debian package qemu-utils) if they are missing.
# The disk interop tests (tests/tests/disk_*.rs) need both.
set -euo pipefail

if command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q qemu-utils

command -v qemu-img >/dev/null && command -v qemu-io >/dev/null
echo "qemu-utils installed: $(qemu-img --version | head -n1)"
