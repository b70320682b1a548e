#!/usr/bin/env bash
# The plain shell flow vmrun replaces, on the same baked image: a seed ISO with genisoimage,
# a qcow2 overlay with qemu-img, QEMU with a loopback SSH forward, polling ssh until the
# guest answers (pinned host key, never StrictHostKeyChecking=no), rsync of the project, the
# command, and teardown. Usage: shell_flow.sh STORE_ENTRY_DIR PROJECT_DIR ACCEL
set -euo pipefail
entry=$1 project=$2 accel=$3
work=$(mktemp -d)
qemu_pid=
cleanup() {
  if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; wait "$qemu_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

printf '#cloud-config\n{}\n' > "$work/user-data"
printf 'instance-id: shell-flow\nlocal-hostname: vm\n' > "$work/meta-data"
genisoimage -quiet -output "$work/seed.iso" -volid cidata -joliet -rock "$work/user-data" "$work/meta-data"
qemu-img create -q -f qcow2 -b "$entry/disk.qcow2" -F qcow2 "$work/disk.qcow2"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
qemu-system-x86_64 -nodefaults -no-user-config -display none -machine q35 -accel "$accel" -smp 2 -m 1024M \
  -drive "file=$work/disk.qcow2,if=virtio,format=qcow2" -drive "file=$work/seed.iso,if=virtio,format=raw,readonly=on" \
  -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=net0 \
  -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0 \
  -serial "file:$work/serial.log" &
qemu_pid=$!
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$entry/host_ed25519.pub")" > "$work/known_hosts"
ssh_opts=(-o "UserKnownHostsFile=$work/known_hosts" -o StrictHostKeyChecking=yes -o BatchMode=yes
  -o IdentitiesOnly=yes -i "$entry/client_ed25519" -p "$port" -o ConnectTimeout=2)
until ssh "${ssh_opts[@]}" vmrun@127.0.0.1 true 2>/dev/null; do sleep 0.1; done
rsync -a -e "ssh ${ssh_opts[*]}" "$project/" vmrun@127.0.0.1:project/
ssh "${ssh_opts[@]}" vmrun@127.0.0.1 'cd project && true'
