#!/usr/bin/env bash
# Prepares this host for kvmkit's tests and examples (run as root; idempotent):
# a 2 MiB hugepage pool of 1024 pages, up to two 1 GiB pages when the host can find
# them, a 2 MiB hugetlbfs mount at /dev/hugepages, KSM scanning on, and the Debian
# packages of the hardware-assisted sandbox tier (tests/sandbox/run.sh): QEMU, the
# cloud kernel L1 and L2 boot, busybox and cpio for their initramfs, lz4 to unpack
# the kernel's ELF image.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "prepare-host: run as root (hugepage pools, mounts and KSM are root's)" >&2
    exit 1
fi
if [ ! -c /dev/kvm ]; then
    echo "prepare-host: /dev/kvm is missing: kvmkit runs real VMs and needs KVM" >&2
    exit 1
fi

pool_2m=/sys/kernel/mm/hugepages/hugepages-2048kB
pool_1g=/sys/kernel/mm/hugepages/hugepages-1048576kB
if [ "$(cat "$pool_2m/nr_hugepages")" -lt 1024 ]; then
    echo 1024 > "$pool_2m/nr_hugepages"
fi
if [ -d "$pool_1g" ] && [ "$(cat "$pool_1g/nr_hugepages")" -lt 2 ]; then
    # 1 GiB pages need contiguous free memory; the tests report it when there is none.
    echo 2 > "$pool_1g/nr_hugepages" || true
fi
for pool in /sys/kernel/mm/hugepages/hugepages-*; do
    echo "prepare-host: $(basename "$pool"): $(cat "$pool/nr_hugepages") pages, $(cat "$pool/free_hugepages") free"
done

if ! grep -qs ' /dev/hugepages hugetlbfs ' /proc/mounts; then
    mkdir -p /dev/hugepages
    mount -t hugetlbfs -o pagesize=2M none /dev/hugepages
fi
echo "prepare-host: hugetlbfs at /dev/hugepages"

echo 1 > /sys/kernel/mm/ksm/run
echo "prepare-host: KSM run=$(cat /sys/kernel/mm/ksm/run)"

# curl drives the runner's API in its tests (as ch-remote does).
sandbox_packages=(qemu-system-x86 linux-image-cloud-amd64 busybox-static cpio lz4 curl)
if ! dpkg -s "${sandbox_packages[@]}" >/dev/null 2>&1; then
    echo "prepare-host: installing ${sandbox_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${sandbox_packages[@]}" >/dev/null
fi
echo "prepare-host: sandbox kernel $(ls -1 /boot/vmlinuz-*-cloud-amd64 | sort -V | tail -1)"
