#!/usr/bin/env bash
# Boot time, peak RSS and exit latency on hardware-assisted KVM, measured in one L1
# sandbox run (see run.sh and l1-bench): kvmkit (bzImage and PVH) against QEMU's
# microvm machine booting the same kernel, initramfs and command line, 5 runs each,
# and the exit-latency table. Prints the BENCH lines and their medians.
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
echo L2-BENCH-INIT > /dev/ttyS0
/bin/busybox poweroff -f
INIT
chmod +x "$work/l2-bench/init"
(cd "$work/l2-bench" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/l2-bench.cpio.gz"

(cd "$root" && cargo build --release --locked --example exit_latency --quiet)

export SANDBOX_EXTRA="$here/l1-bench"
# run.sh puts the vmlinux ELF (for PVH) at /l2/vmlinux.
export SANDBOX_EXTRA_FILES="$work/l2-bench.cpio.gz:/l2/bench.cpio.gz \
$root/target/release/examples/exit_latency:/bin/exit_latency \
/usr/bin/qemu-system-x86_64 /usr/share/qemu/bios-microvm.bin /usr/share/qemu/qboot.rom \
/usr/share/qemu/linuxboot_dma.bin /usr/share/qemu/kvmvapic.bin /usr/share/qemu/pvh.bin"
export SANDBOX_TIMEOUT="${SANDBOX_TIMEOUT:-900}"
"$here/run.sh"
log="$work/console.log"
tr -d '\r' < "$log" | grep '^BENCH' | tee "$work/bench.txt"
for name in kvmkit-bzimage kvmkit-pvh qemu-microvm; do
    for field in boot_ms peak_rss_kib; do
        values=$(grep "^BENCH $name " "$work/bench.txt" | grep -o "$field=[0-9]*" | cut -d= -f2 | sort -n)
        count=$(wc -w <<<"$values")
        [ "$count" -gt 0 ] || continue
        median=$(sed -n "$(( (count + 1) / 2 ))p" <<<"$values")
        echo "MEDIAN $name $field=$median of $count: $(echo $values)"
    done
done
