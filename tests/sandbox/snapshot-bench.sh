#!/usr/bin/env bash
# Snapshot and restore on hardware-assisted KVM, kvmkit beside Firecracker and Cloud
# Hypervisor (../shared/anchors, or KVMKIT_ANCHORS), measured in one L1 sandbox run
# (see run.sh and l1-snapshot-bench), rounds interleaved. Prints the BENCH-SNAPSHOT
# lines and, per VMM, the median and largest of each figure.
#
#   tests/sandbox/snapshot-bench.sh      # BENCH_ROUNDS=3 by default
#
# BENCH_SETTLE=S: each restore starts S seconds after the VMM before it ended (0 by
# default), for every VMM alike: L1 has one vCPU, and right after a VMM ends it is
# still freeing what that VMM held.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="${SANDBOX_WORK:-$root/target/sandbox}"
. "$here/bench-lib.sh"
anchors=$(anchors_dir "$root")
command -v curl >/dev/null || { echo "curl missing: apt-get install curl" >&2; exit 1; }
rounds="${BENCH_ROUNDS:-3}"
mkdir -p "$work"
{ echo "BENCH_ROUNDS=$rounds BENCH_SETTLE=${BENCH_SETTLE:-0}"; cat "$here/l1-snapshot-bench"; } > "$work/l1-snapshot-bench.sh"
export SANDBOX_EXTRA="$work/l1-snapshot-bench.sh"
export SANDBOX_EXTRA_FILES="$anchors/firecracker:/bin/firecracker \
$anchors/cloud-hypervisor:/bin/cloud-hypervisor $(command -v curl):/bin/curl"
# BENCH_KVMKIT_B=PATH: another kvmkit runner (an earlier build) restores each kvmkit
# snapshot too, interleaved, its figures on BENCH-SNAPSHOT kvmkit-b lines.
if [ -n "${BENCH_KVMKIT_B:-}" ]; then
    SANDBOX_EXTRA_FILES="$SANDBOX_EXTRA_FILES $BENCH_KVMKIT_B:/bin/kvmkit-b"
fi
export SANDBOX_TIMEOUT="${SANDBOX_TIMEOUT:-2400}"
"$here/run.sh"
log="$work/console.log"
tr -d '\r' < "$log" | grep '^BENCH' | tee "$work/snapshot-bench.txt"
medians "$work/snapshot-bench.txt" BENCH-SNAPSHOT \
    "kvmkit kvmkit-b firecracker cloud-hypervisor" \
    "boot_to_count_s snapshot_s snapshot_kib_on_disk restore_to_count_s first-kvm-run first-console-byte"
