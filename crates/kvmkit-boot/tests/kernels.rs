// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Loading kernels: what each boot protocol finds in guest memory, and a clear error
//! for every bad image before a VM would start.

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

mod common;

use common::{bzimage, elf, good_bzimage, memory, put, RAM};
use kvmkit_boot::x86;
use kvmkit_boot::{
    BootError, BootFile, BootImage, EntryProtocol, LayoutError, LinuxBoot, PhysicalLayout,
};
use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress};

fn layout() -> PhysicalLayout {
    PhysicalLayout::new(&[(0, RAM)]).unwrap()
}

fn load(boot: &LinuxBoot) -> Result<(kvmkit_boot::BootEntry, common::Memory), BootError> {
    let memory = memory();
    let entry = boot.load(&memory, &layout(), 2)?;
    Ok((entry, memory))
}

fn cstring_at(memory: &common::Memory, addr: u64) -> String {
    let mut bytes = vec![0u8; 256];
    memory.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
    let end = bytes.iter().position(|b| *b == 0).unwrap();
    String::from_utf8(bytes[..end].to_vec()).unwrap()
}

#[test]
fn a_bzimage_is_entered_64_bit_with_its_zero_page_filled_in() {
    let image = good_bzimage();
    let initrd = vec![0x5a; 10_000];
    let boot = LinuxBoot::from_bytes(image.clone())
        .initrd_bytes(initrd.clone())
        .cmdline("console=ttyS0 panic=1");

    let (entry, memory) = load(&boot).unwrap();

    assert_eq!(entry.entry, x86::HIGH_MEMORY_START + 0x200);
    assert_eq!(
        entry.protocol,
        EntryProtocol::Linux64 {
            zero_page: x86::ZERO_PAGE.start
        }
    );
    let params: boot_params = memory.read_obj(GuestAddress(x86::ZERO_PAGE.start)).unwrap();
    let hdr = params.hdr;
    assert_eq!(hdr.type_of_loader, 0xff);
    assert_eq!({ hdr.cmd_line_ptr }, x86::CMDLINE.start as u32);
    assert_eq!(
        cstring_at(&memory, x86::CMDLINE.start),
        "console=ttyS0 panic=1"
    );
    assert_eq!({ params.acpi_rsdp_addr }, x86::ACPI_TABLES.start);
    let e820 = layout().e820();
    assert_eq!(usize::from(params.e820_entries), e820.len());
    for (written, expected) in params.e820_table.iter().zip(&e820) {
        assert_eq!(
            ({ written.addr }, { written.size }, { written.r#type }),
            (expected.addr, expected.size, expected.kind)
        );
    }
    // The protected-mode code (after the two setup sectors) is at 1 MiB.
    let mut loaded = vec![0u8; 4096];
    memory
        .read_slice(&mut loaded, GuestAddress(x86::HIGH_MEMORY_START))
        .unwrap();
    assert_eq!(&loaded[..], &image[1024..]);
    // The initrd: page-aligned, at the top of RAM, above what the kernel decompresses into.
    let (start, size) = (u64::from(hdr.ramdisk_image), u64::from(hdr.ramdisk_size));
    assert_eq!(size, initrd.len() as u64);
    assert_eq!(start % 4096, 0);
    assert!(start + size <= RAM && start + size > RAM - 4096);
    assert!(start >= x86::HIGH_MEMORY_START + (16 << 20));
    let mut copied = vec![0u8; initrd.len()];
    memory.read_slice(&mut copied, GuestAddress(start)).unwrap();
    assert_eq!(copied, initrd);
}

#[test]
fn an_elf_kernel_without_a_pvh_note_is_entered_at_its_elf_entry() {
    let image = elf(0x100_0000, &[0xf4; 64], None);

    let (entry, memory) = load(&LinuxBoot::from_bytes(image)).unwrap();

    assert_eq!(entry.entry, 0x100_0000);
    assert_eq!(
        entry.protocol,
        EntryProtocol::Linux64 {
            zero_page: x86::ZERO_PAGE.start
        }
    );
    let params: boot_params = memory.read_obj(GuestAddress(x86::ZERO_PAGE.start)).unwrap();
    assert_eq!(
        { params.hdr.header },
        0x5372_6448,
        "a setup header is made for it"
    );
    assert_eq!({ params.hdr.boot_flag }, 0xaa55);
}

#[test]
fn an_elf_kernel_with_a_pvh_note_is_entered_through_pvh_with_its_start_info() {
    let image = elf(0x100_0000, &[0xf4; 64], Some(0x100_0020));
    let boot = LinuxBoot::from_bytes(image)
        .initrd_bytes(vec![1u8; 5000])
        .cmdline("quiet");

    let (entry, memory) = load(&boot).unwrap();

    assert_eq!(entry.entry, 0x100_0020);
    assert_eq!(
        entry.protocol,
        EntryProtocol::Pvh {
            start_info: x86::PVH_START_INFO.start
        }
    );
    let info: hvm_start_info = memory
        .read_obj(GuestAddress(x86::PVH_START_INFO.start))
        .unwrap();
    assert_eq!(info.magic, 0x336e_c578);
    assert_eq!(info.cmdline_paddr, x86::CMDLINE.start);
    assert_eq!(info.rsdp_paddr, x86::ACPI_TABLES.start);
    assert_eq!(info.nr_modules, 1);
    let module: hvm_modlist_entry = memory.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
    assert_eq!(module.size, 5000);
    let e820 = layout().e820();
    assert_eq!(info.memmap_entries as usize, e820.len());
    let last: hvm_memmap_table_entry = memory
        .read_obj(GuestAddress(
            info.memmap_paddr + 24 * (e820.len() as u64 - 1),
        ))
        .unwrap();
    assert_eq!((last.addr, last.size), (e820[2].addr, e820[2].size));
}

#[test]
fn pvh_can_be_declined_for_the_64_bit_elf_entry() {
    let image = elf(0x100_0000, &[0xf4; 64], Some(0x100_0040));

    let (entry, _) = load(&LinuxBoot::from_bytes(image).prefer_pvh(false)).unwrap();

    assert_eq!(entry.entry, 0x100_0000);
    assert!(matches!(entry.protocol, EntryProtocol::Linux64 { .. }));
}

fn load_error(boot: LinuxBoot) -> BootError {
    load(&boot).map(|_| ()).unwrap_err()
}

#[test]
fn files_that_are_not_kernels_are_refused_by_name() {
    for image in [
        vec![],
        vec![0u8; 100],
        vec![0x90; 8192],
        b"#!/bin/sh\necho hi\n".to_vec(),
    ] {
        let error = load_error(LinuxBoot::from_bytes(image.clone()));

        assert!(
            matches!(error, BootError::NotAKernel(_)),
            "{} bytes: {error}",
            image.len()
        );
    }
}

#[test]
fn a_bzimage_too_old_for_the_64_bit_entry_is_refused() {
    for (version, xloadflags) in [(0x0206, 1), (0x020b, 1), (0x020f, 0)] {
        let error = load_error(LinuxBoot::from_bytes(bzimage(version, xloadflags, 4096)));

        assert!(
            matches!(error, BootError::UnsupportedKernel(_)) && error.to_string().contains("2.12"),
            "{version:#x}/{xloadflags}: {error}"
        );
    }
}

#[test]
fn a_truncated_bzimage_is_refused() {
    let mut image = good_bzimage();
    image[0x1f1] = 40; // 40 setup sectors claimed, 1 present
    let error = load_error(LinuxBoot::from_bytes(image));
    assert!(matches!(error, BootError::KernelLoad(_)), "{error}");

    let cut = good_bzimage()[..0x210].to_vec();
    let error = load_error(LinuxBoot::from_bytes(cut));
    assert!(matches!(error, BootError::NotAKernel(_)), "{error}");
}

#[test]
fn an_elf_without_a_usable_entry_or_cut_short_is_refused() {
    let low = elf(0x1000, &[0xf4; 16], None);
    let error = load_error(LinuxBoot::from_bytes(low));
    assert!(
        matches!(error, BootError::KernelLoad(_)),
        "entry below 1 MiB: {error}"
    );

    let mut image = elf(0x100_0000, &[0xf4; 4096], None);
    image.truncate(image.len() - 2048);
    let error = load_error(LinuxBoot::from_bytes(image));
    assert!(
        matches!(error, BootError::KernelLoad(_)),
        "segment past the end of the file: {error}"
    );

    let mut wrong_machine = elf(0x100_0000, &[0xf4; 16], None);
    put(&mut wrong_machine, 18, &183u16.to_le_bytes()); // EM_AARCH64
    let error = load_error(LinuxBoot::from_bytes(wrong_machine));
    assert!(
        matches!(error, BootError::UnsupportedKernel(_)),
        "an arm64 ELF: {error}"
    );
}

#[test]
fn a_pvh_entry_outside_the_loaded_kernel_is_refused() {
    // Found by the `elf` fuzz target: a PVH note naming 0x40 was entered there.
    for pvh_entry in [0x40, 0x100_0000 + 64, 0xffff_fff0] {
        let image = elf(0x100_0000, &[0xf4; 64], Some(pvh_entry));

        let error = load_error(LinuxBoot::from_bytes(image));

        assert!(
            matches!(error, BootError::UnsupportedKernel(_)),
            "{pvh_entry:#x}: {error}"
        );
    }
}

#[test]
fn an_initrd_larger_than_the_room_below_the_top_of_ram_is_refused() {
    let boot =
        LinuxBoot::from_bytes(good_bzimage()).initrd_bytes(vec![0u8; (RAM - (8 << 20)) as usize]);

    let error = load_error(boot);

    assert!(
        matches!(error, BootError::RamTooSmallForKernel { initrd: true, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("give it at least"), "{error}");
}

/// A relocatable bzImage as distributions build them: 2 MiB alignment, preferred
/// address (LOAD_PHYSICAL_ADDR) 16 MiB, `init_size` 16 MiB: loaded at 1 MiB, it
/// decompresses into 16..32 MiB.
fn relocatable_bzimage() -> Vec<u8> {
    let mut image = good_bzimage();
    image[0x234] = 1; // relocatable_kernel
    put(&mut image, 0x258, &(16u64 << 20).to_le_bytes()); // pref_address
    image
}

/// Loads `boot` into `ram` bytes of guest memory.
fn load_in(boot: &LinuxBoot, ram: u64) -> Result<common::Memory, BootError> {
    let memory =
        vm_memory::GuestMemoryMmap::from_ranges(&[(GuestAddress(0), ram as usize)]).unwrap();
    let layout = PhysicalLayout::new(&[(0, ram)]).unwrap();
    boot.load(&memory, &layout, 1)?;
    Ok(memory)
}

#[test]
fn the_initrd_goes_above_where_a_relocatable_kernel_decompresses_not_above_its_load_address() {
    let boot = LinuxBoot::from_bytes(relocatable_bzimage()).initrd_bytes(vec![0xab; 6 << 20]);

    let memory = load_in(&boot, 40 << 20).unwrap();

    let params: boot_params = memory.read_obj(GuestAddress(x86::ZERO_PAGE.start)).unwrap();
    let start = u64::from(params.hdr.ramdisk_image);
    assert!(
        start >= 32 << 20,
        "the initrd at {start:#x} is inside the decompression area 16..32 MiB"
    );
}

#[test]
fn memory_the_kernel_cannot_decompress_into_is_refused_naming_the_size_it_needs() {
    // 36 MiB: the initrd would have gone at 30 MiB, where the kernel decompresses.
    let with_initrd = LinuxBoot::from_bytes(relocatable_bzimage()).initrd_bytes(vec![0; 6 << 20]);
    let without = LinuxBoot::from_bytes(relocatable_bzimage());

    let error = load_in(&with_initrd, 36 << 20).unwrap_err();
    let bare = load_in(&without, 24 << 20).unwrap_err();

    assert!(
        matches!(
            error,
            BootError::RamTooSmallForKernel {
                needs_mib: 38,
                has_mib: 36,
                initrd: true
            }
        ),
        "{error}"
    );
    assert!(
        matches!(
            bare,
            BootError::RamTooSmallForKernel {
                needs_mib: 32,
                initrd: false,
                ..
            }
        ),
        "{bare}"
    );
    assert!(bare.to_string().contains("at least 32 MiB"), "{bare}");
}

#[test]
fn a_command_line_past_the_kernels_limit_is_refused() {
    let boot = LinuxBoot::from_bytes(good_bzimage()).cmdline("x".repeat(2048));

    let error = load_error(boot);

    assert!(
        matches!(
            error,
            BootError::CmdlineTooLong {
                len: 2048,
                limit: 2047
            }
        ),
        "{error}"
    );
    let at_limit = LinuxBoot::from_bytes(good_bzimage()).cmdline("x".repeat(2047));
    assert!(load(&at_limit).is_ok());
}

#[test]
fn a_command_line_with_a_nul_is_refused() {
    let error = load_error(LinuxBoot::from_bytes(good_bzimage()).cmdline("a\0b"));

    assert!(matches!(error, BootError::Cmdline(_)), "{error}");
}

#[test]
fn a_missing_kernel_file_is_named() {
    let error = load_error(LinuxBoot::new("/nonexistent/vmlinuz"));

    assert!(
        matches!(
            error,
            BootError::Read {
                file: BootFile::Kernel,
                ..
            }
        ) && error.to_string().contains("/nonexistent/vmlinuz"),
        "{error}"
    );
}

#[test]
fn a_kernel_and_initrd_from_files_are_streamed_into_guest_memory() {
    let dir = std::env::temp_dir().join(format!("kvmkit-boot-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (kernel, initrd) = (dir.join("bzImage"), dir.join("initrd"));
    std::fs::write(&kernel, good_bzimage()).unwrap();
    let contents: Vec<u8> = (0..300_000u32).map(|n| (n % 251) as u8).collect();
    std::fs::write(&initrd, &contents).unwrap();

    let (entry, memory) = load(&LinuxBoot::new(&kernel).initrd(&initrd)).unwrap();

    assert!(matches!(entry.protocol, EntryProtocol::Linux64 { .. }));
    let params: boot_params = memory.read_obj(GuestAddress(x86::ZERO_PAGE.start)).unwrap();
    let (start, size) = (params.hdr.ramdisk_image, params.hdr.ramdisk_size);
    assert_eq!(size as usize, contents.len());
    let mut copied = vec![0u8; contents.len()];
    memory
        .read_slice(&mut copied, GuestAddress(u64::from(start)))
        .unwrap();
    assert_eq!(copied, contents);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_missing_initrd_file_is_named_as_the_initrd() {
    let boot = LinuxBoot::from_bytes(good_bzimage()).initrd("/nonexistent/initrd.img");

    let error = load_error(boot);

    assert!(
        matches!(
            error,
            BootError::Read {
                file: BootFile::Initrd,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn ram_that_ends_below_1_mib_is_a_layout_error_naming_its_size() {
    let error = PhysicalLayout::new(&[(0, 1 << 20)]).unwrap_err();

    assert!(
        matches!(
            error,
            BootError::Layout(LayoutError::RamTooSmall { size: 0x10_0000 })
        ),
        "{error}"
    );
}
