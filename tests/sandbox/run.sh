#!/usr/bin/env bash
# The hardware-assisted test tier: boots a Debian cloud kernel under QEMU (TCG,
# -cpu max, which emulates AMD SVM) as L1, whose /dev/kvm is then SVM-backed KVM; in
# it, the kvmkit runner boots the same kernel as L2 with 2 vCPUs, virtio-blk, -net,
# -rng and -console, and L2's init checks each (see l2-init and l1-init); then it boots
# the vmlinux ELF inside that kernel through PVH, to its init; then the runner's ends
# (a panic, an init that ends, reboot=t, small guests); then a counting guest is
# snapshotted through the API and restored in a new VMM, then twice at once as clones
# (l1-snapshot).
#
#   tests/sandbox/run.sh            # build, boot, assert every marker
#
# Needs: qemu-system-x86, linux-image-cloud-amd64, busybox-static, cpio (.ci/run
# installs them). Every L1 run has a timeout; when it times out or a marker is
# missing, the console's tail is printed, so a sandbox failure is not mistaken for a
# kvmkit failure or the reverse. An L1 that froze (QEMU idle, the console silent: see
# boot_l1) is booted once more.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="${SANDBOX_WORK:-$root/target/sandbox}"
timeout_s="${SANDBOX_TIMEOUT:-420}"
l2_cmdline="${L2_CMDLINE:-console=ttyS0 reboot=k panic=1}"

fail() { echo "sandbox: $*" >&2; exit 1; }

kernel="$(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -1)" \
    || true
[ -n "$kernel" ] || fail "no Debian cloud kernel in /boot: apt-get install linux-image-cloud-amd64"
kver="${kernel#/boot/vmlinuz-}"
modules="/lib/modules/$kver/kernel"
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 missing: apt-get install qemu-system-x86"
[ -x /bin/busybox ] || fail "busybox missing: apt-get install busybox-static"
command -v cpio >/dev/null || fail "cpio missing: apt-get install cpio"
command -v lz4 >/dev/null || fail "lz4 missing: apt-get install lz4"

module_path() {
    local found
    found="$(find "$modules" -name "$1.ko" -o -name "$1.ko.xz" | head -1)"
    [ -n "$found" ] || fail "module $1 not found under $modules"
    echo "$found"
}

# A busybox root with the given modules in /lib/modules.
make_root() {
    local dir="$1"; shift
    rm -rf "$dir"
    mkdir -p "$dir"/{bin,dev,proc,sys,tmp,lib/modules}
    cp /bin/busybox "$dir/bin/busybox"
    for m in "$@"; do cp "$(module_path "$m")" "$dir/lib/modules/"; done
}

pack() { (cd "$1" && find . | cpio -o -H newc --quiet | gzip -1) > "$2"; }

echo "sandbox: building the kvmkit runner"
(cd "$root" && cargo build --release --locked -p kvmkit-cli --quiet)
runner="$root/target/release/kvmkit"

mkdir -p "$work"
# The ELF vmlinux inside the bzImage (LZ4, legacy frame), for the PVH entry.
offset=$(grep -obUaP '\x02\x21\x4c\x18' "$kernel" | head -1 | cut -d: -f1)
[ -n "$offset" ] || fail "no LZ4 payload in $kernel: cannot unpack its vmlinux for PVH"
tail -c +$((offset + 1)) "$kernel" | lz4 -dc > "$work/vmlinux" 2>/dev/null || true
[ "$(head -c 4 "$work/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ] \
    || fail "cannot unpack the vmlinux ELF from $kernel (is lz4 installed?)"

echo "sandbox: L2 initramfs (busybox + virtio modules), kernel $kver"
make_root "$work/l2" virtio_ring virtio virtio_mmio virtio_blk failover net_failover \
    virtio_net virtio-rng virtio_console pvpanic pvpanic-mmio button evdev \
    virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
cp "$here/l2-init" "$work/l2/init"
pack "$work/l2" "$work/l2.cpio.gz"

echo "sandbox: L1 initramfs (busybox + kvm modules + the runner + L2)"
make_root "$work/l1" irqbypass kvm kvm-amd tun
cp "$here/l1-init" "$work/l1/init"
cp "$runner" "$work/l1/bin/kvmkit"
for lib in $(ldd "$runner" | grep -o '/[^ ]*'); do
    mkdir -p "$work/l1$(dirname "$lib")"
    cp -L "$lib" "$work/l1$lib"
done
mkdir -p "$work/l1/l2"
cp "$kernel" "$work/l1/l2/vmlinuz"
cp "$work/vmlinux" "$work/l1/l2/vmlinux"
cp "$work/l2.cpio.gz" "$work/l1/l2/initrd.gz"
# Cloud Hypervisor's API client drives the snapshot scenario (l1-snapshot), as it
# drives Cloud Hypervisor: from ../shared/anchors (KVMKIT_ANCHORS says where else).
anchors="${KVMKIT_ANCHORS:-$root/../shared/anchors}"
[ -x "$anchors/ch-remote" ] || anchors=/work/shared/anchors
[ -x "$anchors/ch-remote" ] || fail "ch-remote not found: set KVMKIT_ANCHORS to the anchors' directory"
cp "$here/l1-snapshot" "$work/l1/snapshot.sh"
cp "$anchors/ch-remote" "$work/l1/bin/ch-remote"
for lib in $(ldd "$anchors/ch-remote" | grep -o '/[^ ]*'); do
    mkdir -p "$work/l1$(dirname "$lib")"
    cp -L "$lib" "$work/l1$lib"
done
printf 'L2_CMDLINE=%q\n' "$l2_cmdline" > "$work/l1/sandbox.conf"
# Extra L1 steps (bench.sh): a script run after the checks (instead of them with
# SANDBOX_EXTRA_ONLY=1), and files it needs, each "SOURCE" (copied to the same path)
# or "SOURCE:DEST"; executables bring their shared libraries.
if [ -n "${SANDBOX_EXTRA:-}" ]; then
    cp "$SANDBOX_EXTRA" "$work/l1/extra.sh"
    echo "EXTRA=/extra.sh" >> "$work/l1/sandbox.conf"
    [ -z "${SANDBOX_EXTRA_ONLY:-}" ] || echo "EXTRA_ONLY=1" >> "$work/l1/sandbox.conf"
    for item in ${SANDBOX_EXTRA_FILES:-}; do
        src="${item%%:*}"; dest="${item#*:}"
        mkdir -p "$work/l1$(dirname "$dest")"
        cp -rL "$src" "$work/l1$dest"
        if [ -f "$src" ] && [ -x "$src" ]; then
            for lib in $(ldd "$src" 2>/dev/null | grep -o '/[^ ]*'); do
                mkdir -p "$work/l1$(dirname "$lib")"
                cp -L "$lib" "$work/l1$lib"
            done
        fi
    done
fi
pack "$work/l1" "$work/l1.cpio.gz"

log="$work/console.log"
# QEMU's CPU time, in clock ticks (0 once it is gone).
qemu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# Boots L1 with its console in $log; returns QEMU's status, or 200 if L1 froze: QEMU
# TCG (7.2) now and then stops running its vCPU for good (its thread asleep, nothing
# on the console), which no guest, L1's or L2's, can cause or end. A run whose QEMU
# took under a tenth of a second of CPU and wrote nothing to the console for
# SANDBOX_FROZEN_S seconds (120) is ended as frozen. A busy L1, or one only waiting
# (for a guest, on a timer), takes far more than that: its timers alone run its shell
# loops and kernel.
boot_l1() {
    local frozen_s="${SANDBOX_FROZEN_S:-120}"
    timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 3G \
        -nic none -nographic -no-reboot -serial mon:stdio \
        -kernel "$kernel" -initrd "$work/l1.cpio.gz" \
        -append "console=ttyS0 panic=-1 quiet" </dev/null >"$log" 2>&1 &
    local watched=$! qemu="" ticks=0 size=0 still=0 hz
    hz=$(getconf CLK_TCK)
    while kill -0 "$watched" 2>/dev/null; do
        sleep 5
        [ -n "$qemu" ] || qemu=$(pgrep -P "$watched" || true)
        [ -n "$qemu" ] || continue
        local now_ticks now_size
        now_ticks=$(qemu_ticks "$qemu"); now_size=$(stat -c %s "$log")
        if [ "$now_size" -eq "$size" ] && [ $(( (now_ticks - ticks) * 10 )) -lt "$hz" ]; then
            still=$((still + 5))
        else
            still=0; ticks=$now_ticks; size=$now_size
        fi
        if [ "$still" -ge "$frozen_s" ]; then
            kill "$watched" 2>/dev/null
            wait "$watched"
            return 200
        fi
    done
    wait "$watched"
}

echo "sandbox: booting L1 (QEMU TCG, -cpu max, 1 vCPU, 3 GiB), timeout ${timeout_s}s; console in $log"
start=$(date +%s)
set +e
boot_l1
status=$?
if [ "$status" -eq 200 ]; then
    # Once: a second freeze in a row fails the run below.
    cp "$log" "$work/console-frozen.log"
    echo "sandbox: L1 FROZE after $(( $(date +%s) - start ))s (QEMU idle, the console silent; console in $work/console-frozen.log): booting it again" >&2
    start=$(date +%s)
    boot_l1
    status=$?
fi
set -e
echo "sandbox: L1 ran $(( $(date +%s) - start ))s, QEMU status $status"

markers=(L1-KVM-READY L2-INIT-STARTED
         "timeline options-parsed=.* first-kvm-run=.* guest-boot-complete=" L2-CPUS-OK L2-MEM-OK L2-BLK-READ-OK L2-BLK-WRITE-OK
         L2-NET-OK L2-RNG-OK L2-HVC-WRITE-OK L2-POWEROFF "L1-RUNNER-EXIT status=0"
         L1-DISK-OK L1-HVC-OK L2-PVH-INIT "L1-PVH-EXIT status=0"
         L2-PANICKING "L1-PANIC-EXIT status=3 kvmkit: the guest panicked"
         L2-INIT-ENDING "L1-INIT-ENDS-EXIT status=3 kvmkit: the guest panicked"
         L2-REBOOTING "L1-REBOOT-T-EXIT status=0 kvmkit: vCPU 0 triple-faulted"
         "L1-SMALL-64M-EXIT status=1 kvmkit: --memory: the kernel needs"
         L2-SMALL-INIT "L1-SMALL-96M-EXIT status=0"
         L1-REBOOTED-IN-PLACE L2-POWER-BUTTON-PRESSED "L1-POWER-BUTTON-STATE Shutdown"
         L1-SNAPSHOT-TAKEN L1-SNAPSHOT-COUNT-GOES-ON L1-SNAPSHOT-CLOCK-GOES-ON
         L1-SNAPSHOT-NET-UP-AFTER-RESTORE
         L1-SNAPSHOT-DISK-WRITTEN-AFTER-RESTORE L1-SNAPSHOT-CLONES-RUN
         "L1-SNAPSHOT-RESTORE-TIMELINE .*state-restored=.*first-console-byte="
         L1-DONE)
# A run of the extra steps alone checks only that L1 came up and finished.
[ -z "${SANDBOX_EXTRA_ONLY:-}" ] || markers=(L1-KVM-READY L1-DONE)
missing=()
for marker in "${markers[@]}"; do
    grep -q -- "$marker" "$log" || missing+=("$marker")
done
grep -E '^(L1|L2)-|kvmkit|timeline ' "$log" | tr -d '\r' | sed 's/^/  | /' || true
if [ "$status" -eq 200 ]; then
    echo "sandbox: L1 FROZE twice in a row (QEMU idle, the console silent); console tail:" >&2
    tail -n 40 "$log" | tr -d '\r' >&2
    exit 1
fi
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "sandbox: L1 TIMED OUT after ${timeout_s}s (a sandbox hang unless the markers above stop at kvmkit's step); console tail:" >&2
    tail -n 40 "$log" | tr -d '\r' >&2
    exit 1
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "sandbox: missing markers: ${missing[*]}; console tail:" >&2
    tail -n 60 "$log" | tr -d '\r' >&2
    exit 1
fi
echo "sandbox: every check passed"
