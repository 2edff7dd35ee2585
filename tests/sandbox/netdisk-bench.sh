#!/usr/bin/env bash
# Disk and network inside a real guest, measured in one L1 sandbox run (see run.sh and
# l1-netdisk-bench): kvmkit, Firecracker and Cloud Hypervisor (../shared/anchors, or
# KVMKIT_ANCHORS) and QEMU's microvm machine each boot the L2 Linux with one disk and
# one tap, and guest-bench (guest-bench.c, static) measures, inside it: O_DIRECT 1 MiB
# sequential reads and writes, 4 KiB random reads at queue depth 1 and 32, TCP from L2
# to L1 and back, and 1-byte TCP round trips; rounds interleaved (BENCH_RUNS=3,
# BENCH_SECONDS=5 per measurement). Prints the BENCH lines and their medians.
# BENCH_NO_OFFLOAD=1 adds kvmkit with offload_csum=off; BENCH_KVMKIT_B=PATH adds
# another kvmkit build (kvmkit-b), A/B; BENCH_CMDLINE adds to every guest's command
# line (kvmkit.napi_tx=0: the guest frees transmitted skbs without waiting for the
# device).
#
#   tests/sandbox/netdisk-bench.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="${SANDBOX_WORK:-$root/target/sandbox}"
mkdir -p "$work"

. "$here/bench-lib.sh"
anchors=$(anchors_dir "$root")
: > "$work/l1-netdisk-bench.sh"
part_files=$(netdisk_part "$here" "$work" "$work/l1-netdisk-bench.sh")
b_build=""
[ -z "${BENCH_KVMKIT_B:-}" ] || b_build="$BENCH_KVMKIT_B:/bin/kvmkit-b"
export SANDBOX_EXTRA="$work/l1-netdisk-bench.sh" SANDBOX_EXTRA_ONLY=1
# The L2 initramfs is the tier's (/l2/initrd.gz, its virtio modules) with this on top.
export SANDBOX_EXTRA_FILES="$part_files $b_build \
$anchors/firecracker:/bin/firecracker $anchors/cloud-hypervisor:/bin/cloud-hypervisor \
$QEMU_FILES"
export SANDBOX_TIMEOUT="${SANDBOX_TIMEOUT:-2400}"
"$here/run.sh"
log="$work/console.log"
tr -d '\r' < "$log" | grep '^BENCH' | tee "$work/netdisk.txt"
netdisk_medians "$work/netdisk.txt"
