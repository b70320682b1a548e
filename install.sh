#!/bin/sh
# Installs what vmrun needs, then vmrun, on Debian bookworm and Ubuntu 22.04 / 24.04:
#   ./install.sh               packages (apt-get, with sudo when not root), then
#                              `cargo install --locked --path` this checkout
#   ./install.sh --deps-only   packages only
#
# qemu-utils is named at qemu-system-x86's own candidate version: a host may carry a newer
# qemu-utils (a backport) that Breaks the distribution's qemu-system-common, and then
# `apt-get install qemu-system-x86 qemu-utils` refuses. --allow-downgrades lets apt bring
# qemu-utils back to the version that goes with the QEMU being installed.
set -eu

deps_only=false
case "${1-}" in
  "") ;;
  --deps-only) deps_only=true ;;
  *) echo "usage: $0 [--deps-only]" >&2; exit 2 ;;
esac

sudo=
if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive

$sudo apt-get update -q
qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
if [ -z "$qemu_version" ] || [ "$qemu_version" = "(none)" ]; then
  echo "install.sh: apt knows no qemu-system-x86 package; check the apt sources" >&2
  exit 1
fi
# QEMU and its disk tool; the default isolated network (slirp4netns, ip); copying files in
# and out (rsync over ssh); the `debian:bookworm` image builder (mmdebstrap, the Debian
# archive's keys, mkfs.ext4, GRUB's BIOS modules); building vmrun (pkg-config, OpenSSL).
$sudo apt-get install -y -q --no-install-recommends --allow-downgrades \
  "qemu-system-x86=$qemu_version" "qemu-utils=$qemu_version" \
  slirp4netns iproute2 rsync openssh-client \
  mmdebstrap debian-archive-keyring e2fsprogs grub-pc-bin \
  pkg-config libssl-dev ca-certificates
qemu-system-x86_64 --version | head -n 1

if [ "$deps_only" = true ]; then
  exit 0
fi
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install.sh: the packages are installed; vmrun needs Rust 1.89 or newer to build:" >&2
  echo "  install it from https://rustup.rs, then run $0 again" >&2
  exit 1
fi
cargo install --locked --path "$(dirname "$0")"
