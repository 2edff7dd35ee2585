# What the sandbox benches share (sourced by bench.sh, netdisk-bench.sh and
# snapshot-bench.sh): where the anchors are, the files QEMU's microvm needs in L1, the
# disk-and-network part's files, and the medians of the BENCH lines.

# The anchors' directory (Firecracker, Cloud Hypervisor, ch-remote): KVMKIT_ANCHORS,
# or ../shared/anchors beside the checkout.
anchors_dir() {
    local root=$1 dir="${KVMKIT_ANCHORS:-$1/../shared/anchors}"
    [ -x "$dir/firecracker" ] || dir=/work/shared/anchors
    [ -x "$dir/firecracker" ] || { echo "no anchors: set KVMKIT_ANCHORS" >&2; return 1; }
    echo "$dir"
}

# QEMU and the firmware its microvm machine loads, for SANDBOX_EXTRA_FILES.
QEMU_FILES="/usr/bin/qemu-system-x86_64 /usr/share/qemu/bios-microvm.bin \
/usr/share/qemu/qboot.rom /usr/share/qemu/linuxboot_dma.bin /usr/share/qemu/kvmvapic.bin \
/usr/share/qemu/pvh.bin"

# For each name and field, the median of the values on "PREFIX NAME ... FIELD=V" lines
# of FILE, the largest and all of them, sorted:
#   MEDIAN NAME FIELD=MEDIAN max=MAX of N: V1 V2 ...
medians() {
    local file=$1 prefix=$2 names=$3 fields=$4 name field values count median
    for name in $names; do
        for field in $fields; do
            values=$(grep "^$prefix $name " "$file" | grep -o "$field=[0-9.]*" \
                | cut -d= -f2 | sort -g || true)
            count=$(wc -w <<<"$values")
            [ "$count" -gt 0 ] || continue
            median=$(sed -n "$(( (count + 1) / 2 ))p" <<<"$values")
            echo "MEDIAN $name $field=$median max=$(tail -1 <<<"$values") of $count: $(echo $values)"
        done
    done
}

# The disk-and-network part (l1-netdisk-bench) for an L1 run: builds guest-bench and
# the L2 initramfs layer it runs from in WORK, appends the part, its settings first
# (BENCH_RUNS=3, BENCH_CPUS=2, BENCH_SECONDS=5, BENCH_NO_OFFLOAD, BENCH_CMDLINE), to
# the L1 script EXTRA, and prints the files it needs for SANDBOX_EXTRA_FILES.
netdisk_part() {
    local here=$1 work=$2 extra=$3
    cc -O2 -static -pthread -o "$work/guest-bench" "$here/guest-bench.c"
    rm -rf "$work/netdisk" && mkdir -p "$work/netdisk/bin"
    cp "$work/guest-bench" "$work/netdisk/bin/"
    cp "$here/netdisk-init" "$work/netdisk/init"
    (cd "$work/netdisk" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/netdisk.cpio.gz"
    { echo "BENCH_RUNS=${BENCH_RUNS:-3}; BENCH_CPUS=${BENCH_CPUS:-2}; BENCH_SECONDS=${BENCH_SECONDS:-5}"
      echo "BENCH_NO_OFFLOAD=${BENCH_NO_OFFLOAD:-}"
      printf 'BENCH_CMDLINE=%q\n' "${BENCH_CMDLINE:-}"
      cat "$here/l1-netdisk-bench"; } >> "$extra"
    echo "$work/netdisk.cpio.gz:/l2/netdisk.cpio.gz $work/guest-bench:/bin/guest-bench"
}

# The disk-and-network part's figures, as netdisk_medians FILE.
netdisk_medians() {
    medians "$1" BENCH \
        "kvmkit kvmkit-b kvmkit-no-offload firecracker cloud-hypervisor qemu-microvm" \
        "seq_read_mbs seq_write_mbs randread_qd1_iops randread_qd32_iops tcp_tx_mbits \
        tcp_rx_mbits tcp_rr_per_s"
}
