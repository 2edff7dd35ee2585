#!/usr/bin/env bash
# Boot time, peak RSS and exit latency on hardware-assisted KVM, measured in one L1
# sandbox run (see run.sh and l1-bench): kvmkit (bzImage and PVH), Firecracker and
# Cloud Hypervisor (PVH; ../shared/anchors, or KVMKIT_ANCHORS) and QEMU's microvm
# machine booting the same kernel, initramfs and command line, rounds interleaved
# (BENCH_RUNS=5, BENCH_CPUS=2), each guest's own timeline, and the exit-latency table.
# Prints the BENCH lines and their medians. BENCH_NETDISK=1 runs netdisk-bench.sh's
# disk and network part in the same L1 run, after it (BENCH_SECONDS, BENCH_NETDISK_RUNS:
# its rounds, 3 by default).
#
#   tests/sandbox/bench.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="${SANDBOX_WORK:-$root/target/sandbox}"
mkdir -p "$work"

rm -rf "$work/l2-bench" && mkdir -p "$work/l2-bench"/{bin,dev,proc}
cp /bin/busybox "$work/l2-bench/bin/"
cat > "$work/l2-bench/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t proc proc /proc
echo "L2-BENCH-INIT uptime=$(/bin/busybox cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0
cmdline=" $(/bin/busybox cat /proc/cmdline) "
case "$cmdline" in *" kvmkit.boot_timer "*)
    # Boot complete, on Firecracker's boot timer (kvmkit's --stats timeline).
    /bin/busybox devmem 0xc0000000 8 123 ;;
esac
case "$cmdline" in *" kvmkit.dmesg "*)
    # The kernel's own timeline: its slowest initcalls (initcall_debug) and milestones.
    /bin/busybox dmesg | /bin/busybox awk '/initcall .* returned/ {
            for (i = 1; i <= NF; i++) if ($i == "after") print $(i + 1), $0 }' \
        | /bin/busybox sort -n | /bin/busybox tail -n 15 \
        | /bin/busybox sed 's/^/L2-SLOW /' > /dev/ttyS0
    /bin/busybox dmesg | /bin/busybox grep -E 'tsc:|clocksource:|Calibrating|smpboot|smp: |x86: Booting|APIC|Freeing unused|Run /init|ACPI: .*tables|PCI|Memory:' \
        | /bin/busybox sed 's/^/L2-DMESG /' > /dev/ttyS0 ;;
esac
case "$cmdline" in
*" kvmkit.bench_reboot "*) /bin/busybox reboot -f ;;
*) /bin/busybox poweroff -f ;;
esac
INIT
chmod +x "$work/l2-bench/init"
(cd "$work/l2-bench" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/l2-bench.cpio.gz"

(cd "$root" && cargo build --release --locked --example exit_latency --quiet)

. "$here/bench-lib.sh"
anchors=$(anchors_dir "$root")
{ echo "BENCH_RUNS=${BENCH_RUNS:-5}; BENCH_CPUS=${BENCH_CPUS:-2}"; cat "$here/l1-bench"; } \
    > "$work/l1-bench.sh"
part_files=""
if [ -n "${BENCH_NETDISK:-}" ]; then
    part_files=$(BENCH_RUNS="${BENCH_NETDISK_RUNS:-3}" \
        netdisk_part "$here" "$work" "$work/l1-bench.sh")
fi
export SANDBOX_EXTRA="$work/l1-bench.sh"
# run.sh puts the vmlinux ELF (for PVH) at /l2/vmlinux.
export SANDBOX_EXTRA_FILES="$work/l2-bench.cpio.gz:/l2/bench.cpio.gz $part_files \
$root/target/release/examples/exit_latency:/bin/exit_latency \
$anchors/firecracker:/bin/firecracker $anchors/cloud-hypervisor:/bin/cloud-hypervisor \
$QEMU_FILES"
export SANDBOX_TIMEOUT="${SANDBOX_TIMEOUT:-2400}"
"$here/run.sh"
log="$work/console.log"
tr -d '\r' < "$log" | grep '^BENCH' | tee "$work/bench.txt"
medians "$work/bench.txt" BENCH \
    "kvmkit-bzimage kvmkit-pvh firecracker-pvh cloud-hypervisor-pvh qemu-microvm" \
    "boot_ms peak_rss_kib guest_uptime_ms"
[ -z "${BENCH_NETDISK:-}" ] || netdisk_medians "$work/bench.txt"
