// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest memory and small kernel images built by hand, for the boot tests.

#![allow(dead_code)]
// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

use vm_memory::{GuestAddress, GuestMemoryMmap};

pub type Memory = GuestMemoryMmap<()>;

pub const RAM: u64 = 256 << 20;

pub fn memory() -> Memory {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap()
}

/// Offset of the setup header in a bzImage.
const HEADER: usize = 0x1f1;

/// A bzImage: one setup sector, the setup header of boot protocol `version` with
/// `xloadflags`, and `payload` bytes of protected-mode code.
pub fn bzimage(version: u16, xloadflags: u16, payload: usize) -> Vec<u8> {
    let mut image = vec![0u8; 2 * 512 + payload];
    image[HEADER] = 1; // setup_sects
    put(&mut image, 0x1fe, &0xaa55u16.to_le_bytes()); // boot_flag
    put(&mut image, 0x202, b"HdrS");
    put(&mut image, 0x206, &version.to_le_bytes());
    image[0x211] = 1; // loadflags: LOADED_HIGH
    put(&mut image, 0x214, &0x10_0000u32.to_le_bytes()); // code32_start
    put(&mut image, 0x22c, &0x37ff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(&mut image, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    put(&mut image, 0x236, &xloadflags.to_le_bytes());
    put(&mut image, 0x238, &2047u32.to_le_bytes()); // cmdline_size
    put(&mut image, 0x260, &(16u32 << 20).to_le_bytes()); // init_size
    for (n, byte) in image[1024..].iter_mut().enumerate() {
        *byte = n as u8;
    }
    image
}

/// A bzImage a 64-bit loader takes: protocol 2.15 with XLF_KERNEL_64.
pub fn good_bzimage() -> Vec<u8> {
    bzimage(0x020f, 1, 4096)
}

pub fn put(image: &mut [u8], offset: usize, bytes: &[u8]) {
    image[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// An ELF64 x86-64 executable with one loadable segment of `code` at physical
/// `paddr` (also its entry), and with a PVH note naming `pvh_entry` if given.
pub fn elf(paddr: u64, code: &[u8], pvh_entry: Option<u32>) -> Vec<u8> {
    let phnum: u16 = if pvh_entry.is_some() { 2 } else { 1 };
    let phoff = 64u64;
    let data = phoff + 56 * u64::from(phnum);
    let note = {
        let mut note = Vec::new();
        if let Some(entry) = pvh_entry {
            note.extend_from_slice(&4u32.to_le_bytes()); // namesz "Xen\0"
            note.extend_from_slice(&4u32.to_le_bytes()); // descsz
            note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
            note.extend_from_slice(b"Xen\0");
            note.extend_from_slice(&entry.to_le_bytes());
        }
        note
    };
    let code_offset = data + note.len() as u64;
    let mut image = vec![0u8; code_offset as usize];
    put(&mut image, 0, b"\x7fELF");
    image[4] = 2; // 64-bit
    image[5] = 1; // little-endian
    image[6] = 1; // version
    put(&mut image, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut image, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut image, 20, &1u32.to_le_bytes());
    put(&mut image, 24, &paddr.to_le_bytes()); // e_entry
    put(&mut image, 32, &phoff.to_le_bytes());
    put(&mut image, 52, &64u16.to_le_bytes()); // e_ehsize
    put(&mut image, 54, &56u16.to_le_bytes()); // e_phentsize
    put(&mut image, 56, &phnum.to_le_bytes());
    let mut phdr = |index: u64, kind: u32, offset: u64, addr: u64, size: u64| {
        let at = (phoff + 56 * index) as usize;
        put(&mut image, at, &kind.to_le_bytes());
        put(&mut image, at + 4, &5u32.to_le_bytes()); // R+X
        put(&mut image, at + 8, &offset.to_le_bytes());
        put(&mut image, at + 16, &addr.to_le_bytes());
        put(&mut image, at + 24, &addr.to_le_bytes());
        put(&mut image, at + 32, &size.to_le_bytes());
        put(&mut image, at + 40, &size.to_le_bytes());
        put(&mut image, at + 48, &4u64.to_le_bytes());
    };
    phdr(0, 1, code_offset, paddr, code.len() as u64); // PT_LOAD
    if pvh_entry.is_some() {
        phdr(1, 4, data, 0, note.len() as u64); // PT_NOTE
    }
    image[data as usize..].copy_from_slice(&note);
    image.extend_from_slice(code);
    image
}
