# What the sandbox benches share (sourced by bench.sh, netdisk-bench.sh and
# snapshot-bench.sh): where the anchors are, the files QEMU's microvm needs in L1, and
# the medians of the BENCH lines.

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
