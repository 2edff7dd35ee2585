// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Loading a Linux kernel, its initrd and command line, and writing what its boot
//! protocol hands it: the zero page (64-bit boot protocol) or `hvm_start_info` (PVH).

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use kvmkit_memory::x86;
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, KernelLoader, KernelLoaderResult};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, ReadVolatile};

use crate::layout::PhysicalLayout;
use crate::{write_acpi_tables, write_mp_table, BootError, BootFile, BootStructure, LayoutError};
use crate::{BootEntry, BootImage, EntryProtocol};

/// The oldest boot protocol with the 64-bit entry point (`xloadflags`): 2.12.
const MIN_BOOT_PROTOCOL: u16 = 0x020c;
/// `xloadflags` bit: the kernel has the 64-bit entry point at load address + 0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// The 64-bit entry point's offset from where a bzImage's protected-mode code loads.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// The setup header's magic "HdrS".
const HDR_MAGIC: u32 = 0x5372_6448;
/// The boot sector's signature.
const BOOT_FLAG: u16 = 0xaa55;
/// "Undefined" boot loader id.
const LOADER_UNDEFINED: u8 = 0xff;
/// `loadflags`: the protected-mode code loads at 1 MiB.
const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags`: `heap_end_ptr` is valid.
const CAN_USE_HEAP: u8 = 1 << 7;
/// The kernel's own command-line limit when the image does not say (ELF, PVH, and
/// boot protocols before 2.06): x86's `COMMAND_LINE_SIZE`.
const DEFAULT_CMDLINE_SIZE: usize = 2048;
/// Where the kernel may place an initrd when the image does not say.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
/// The PVH start info's magic ("xEn3" with the high bit set).
const PVH_MAGIC: u32 = 0x336e_c578;
/// Alignment of a relocatable kernel when the image does not say: 2 MiB.
const DEFAULT_KERNEL_ALIGNMENT: u32 = 0x20_0000;
/// The most e820 entries a zero page holds.
const E820_MAX: usize = 128;

/// The kernel image formats [`LinuxBoot`] loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KernelFormat {
    /// A bzImage, entered through its 64-bit entry point.
    BzImage,
    /// An ELF `vmlinux`, entered at its (physical) ELF entry in long mode.
    Elf,
    /// An ELF `vmlinux` with a PVH entry note, entered in 32-bit protected mode.
    Pvh,
}

/// Where the kernel image (or the initrd) comes from.
#[derive(Debug, Clone)]
enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

impl Source {
    /// Opens the source to be read from where it is (a file is streamed into guest
    /// memory, never read whole into the VMM's): `file` names it in errors.
    fn open(&self, file: BootFile) -> Result<Reader<'_>, BootError> {
        match self {
            Source::Bytes(bytes) => Ok(Reader {
                inner: Inner::Bytes(Cursor::new(bytes)),
                path: "(bytes in memory)".into(),
            }),
            Source::Path(path) => {
                let opened = File::open(path);
                // Quoted and escaped: a path can hold any byte but NUL, control
                // characters (a terminal's escapes) included.
                let path = format!("{path:?}");
                match opened {
                    Ok(opened) => Ok(Reader {
                        inner: Inner::File(opened),
                        path,
                    }),
                    Err(source) => Err(BootError::Read { file, path, source }),
                }
            }
        }
    }
}

/// A kernel image or initrd as the loaders read it: a file, or bytes in memory, and
/// its path for errors.
struct Reader<'a> {
    inner: Inner<'a>,
    path: String,
}

enum Inner<'a> {
    File(File),
    Bytes(Cursor<&'a [u8]>),
}

impl Reader<'_> {
    /// Its length in bytes.
    fn len(&mut self) -> std::io::Result<u64> {
        let len = self.seek(SeekFrom::End(0))?;
        self.rewind()?;
        Ok(len)
    }

    /// Its first `max` bytes (fewer if it is shorter).
    fn head(&mut self, max: u64) -> std::io::Result<Vec<u8>> {
        self.rewind()?;
        let mut head = Vec::new();
        self.by_ref().take(max).read_to_end(&mut head)?;
        Ok(head)
    }

    /// Where it comes from.
    fn path(&self) -> String {
        self.path.clone()
    }
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.inner {
            Inner::File(file) => file.read(buf),
            Inner::Bytes(bytes) => bytes.read(buf),
        }
    }
}

impl Seek for Reader<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match &mut self.inner {
            Inner::File(file) => file.seek(pos),
            Inner::Bytes(bytes) => bytes.seek(pos),
        }
    }
}

impl ReadVolatile for Reader<'_> {
    fn read_volatile<B: vm_memory::bitmap::BitmapSlice>(
        &mut self,
        buf: &mut vm_memory::VolatileSlice<B>,
    ) -> Result<usize, vm_memory::VolatileMemoryError> {
        match &mut self.inner {
            Inner::File(file) => file.read_volatile(buf),
            Inner::Bytes(bytes) => bytes.read_volatile(buf),
        }
    }
}

/// Bytes of the image's start read to tell its format and its setup header.
const HEAD_BYTES: u64 = 0x1000;

/// A Linux kernel with its initrd and command line, ready to load into guest memory.
///
/// ```no_run
/// use kvmkit_boot::{BootImage, LinuxBoot, PhysicalLayout};
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
///
/// let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 256 << 20)]).unwrap();
/// let layout = PhysicalLayout::new(&[(0, 256 << 20)]).unwrap();
/// let entry = LinuxBoot::new("/boot/vmlinuz")
///     .initrd("/boot/initrd.img")
///     .cmdline("console=ttyS0 panic=1")
///     .load(&memory, &layout, 2)
///     .unwrap();
/// println!("enter at {:#x}", entry.entry);
/// ```
#[derive(Debug, Clone)]
pub struct LinuxBoot {
    kernel: Source,
    initrd: Option<Source>,
    cmdline: String,
    pvh: bool,
    mp_table: bool,
}

impl LinuxBoot {
    /// The kernel at `path` (a bzImage or an ELF `vmlinux`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_kernel(Source::Path(path.into()))
    }

    /// A kernel image already in memory.
    pub fn from_bytes(image: impl Into<Vec<u8>>) -> Self {
        Self::with_kernel(Source::Bytes(image.into()))
    }

    fn with_kernel(kernel: Source) -> Self {
        LinuxBoot {
            kernel,
            initrd: None,
            cmdline: String::new(),
            pvh: true,
            mp_table: true,
        }
    }

    /// The initrd (initramfs) at `path`.
    pub fn initrd(mut self, path: impl AsRef<Path>) -> Self {
        self.initrd = Some(Source::Path(path.as_ref().to_path_buf()));
        self
    }

    /// An initrd already in memory.
    pub fn initrd_bytes(mut self, initrd: impl Into<Vec<u8>>) -> Self {
        self.initrd = Some(Source::Bytes(initrd.into()));
        self
    }

    /// The kernel command line.
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cmdline = cmdline.into();
        self
    }

    /// Whether an ELF kernel with a PVH note is entered through it (the default) or
    /// through its 64-bit ELF entry.
    pub fn prefer_pvh(mut self, pvh: bool) -> Self {
        self.pvh = pvh;
        self
    }

    /// Whether to write an MP table too (the default), for `acpi=off`.
    pub fn mp_table(mut self, enabled: bool) -> Self {
        self.mp_table = enabled;
        self
    }

    /// The command line.
    pub fn cmdline_str(&self) -> &str {
        &self.cmdline
    }

    fn load_kernel<M: GuestMemoryBackend>(
        &self,
        memory: &M,
        layout: &PhysicalLayout,
        rsdp: u64,
    ) -> Result<BootEntry, BootError> {
        let mut image = self.kernel.open(BootFile::Kernel)?;
        let mut initrd = match &self.initrd {
            Some(source) => Some(source.open(BootFile::Initrd)?),
            None => None,
        };
        let kernel = load_kernel(memory, &mut image, self.pvh)?;
        fits_in_low_ram(layout, &kernel, initrd.as_mut())?;
        let limits = kernel.limits();
        let cmdline = self.checked_cmdline(limits.cmdline_size)?;
        load_cmdline(memory, GuestAddress(x86::CMDLINE.start), &cmdline)
            .map_err(BootError::write(BootStructure::CommandLine))?;
        let ramdisk = match &mut initrd {
            Some(reader) => Some(place_initrd(memory, layout, reader, &kernel, &limits)?),
            None => None,
        };
        // checked_cmdline kept it within the command line's 64 KiB.
        let cmdline_len = u32::try_from(self.cmdline.len()).unwrap_or(u32::MAX);
        match kernel.format {
            KernelFormat::Pvh => {
                let start_info = write_start_info(memory, layout, ramdisk, rsdp)?;
                Ok(BootEntry {
                    protocol: EntryProtocol::Pvh { start_info },
                    entry: kernel.entry,
                    stack_top: x86::BOOT_STACK_TOP,
                })
            }
            KernelFormat::BzImage | KernelFormat::Elf => {
                let header = kernel.header.unwrap_or_else(elf_setup_header);
                write_zero_page(memory, layout, header, cmdline_len, ramdisk, rsdp)?;
                Ok(BootEntry {
                    protocol: EntryProtocol::Linux64 {
                        zero_page: x86::ZERO_PAGE.start,
                    },
                    entry: kernel.entry,
                    stack_top: x86::BOOT_STACK_TOP,
                })
            }
        }
    }

    fn checked_cmdline(&self, limit: usize) -> Result<Cmdline, BootError> {
        // The limit counts the terminating NUL.
        let limit = limit.min(usize::try_from(x86::CMDLINE.size).unwrap_or(usize::MAX));
        if self.cmdline.len() + 1 > limit {
            return Err(BootError::CmdlineTooLong {
                len: self.cmdline.len(),
                limit: limit - 1,
            });
        }
        let mut cmdline = Cmdline::new(limit).map_err(BootError::Cmdline)?;
        if !self.cmdline.is_empty() {
            cmdline
                .insert_str(&self.cmdline)
                .map_err(BootError::Cmdline)?;
        }
        Ok(cmdline)
    }
}

impl BootImage for LinuxBoot {
    /// Loads the kernel, the initrd and the command line, writes the ACPI tables (and
    /// the MP table) for `vcpus` vCPUs and the devices of `layout`, and the boot
    /// protocol's structures with `layout`'s e820 map; returns how to enter the kernel.
    /// Every check (format, protocol version, sizes, room) is made here, before the VM
    /// would start.
    fn load<M: GuestMemoryBackend>(
        &self,
        memory: &M,
        layout: &PhysicalLayout,
        vcpus: u32,
    ) -> Result<BootEntry, BootError> {
        let rsdp = write_acpi_tables(memory, layout, vcpus)?;
        if self.mp_table {
            write_mp_table(memory, vcpus)?;
        }
        self.load_kernel(memory, layout, rsdp)
    }
}

/// A kernel loaded into guest memory.
struct LoadedKernel {
    format: KernelFormat,
    entry: u64,
    /// The bzImage's setup header (with what the loader filled in).
    header: Option<setup_header>,
    /// The first byte past what the kernel needs (its image, or for a bzImage the
    /// room it decompresses into).
    end: u64,
}

/// What the kernel image says it accepts.
struct Limits {
    cmdline_size: usize,
    initrd_addr_max: u64,
}

impl LoadedKernel {
    fn limits(&self) -> Limits {
        match &self.header {
            Some(header) => Limits {
                cmdline_size: if header.version >= 0x0206 && header.cmdline_size > 0 {
                    header.cmdline_size as usize + 1
                } else {
                    256
                },
                initrd_addr_max: if header.initrd_addr_max > 0 {
                    u64::from(header.initrd_addr_max)
                } else {
                    DEFAULT_INITRD_ADDR_MAX
                },
            },
            None => Limits {
                cmdline_size: DEFAULT_CMDLINE_SIZE,
                initrd_addr_max: DEFAULT_INITRD_ADDR_MAX,
            },
        }
    }
}

/// Which format `image` is, from its first bytes: ELF by its magic, a bzImage by the
/// setup header's "HdrS".
pub fn detect_format(image: &[u8]) -> Result<KernelFormat, BootError> {
    if image.starts_with(b"\x7fELF") {
        return Ok(KernelFormat::Elf);
    }
    let magic = image
        .get(0x202..0x206)
        .map(|bytes| u32::from_le_bytes(bytes.try_into().expect("4 bytes")));
    match magic {
        Some(HDR_MAGIC) => Ok(KernelFormat::BzImage),
        _ if image.len() < 0x206 => Err(BootError::NotAKernel(format!(
            "{} bytes are too few for a kernel image",
            image.len()
        ))),
        _ => Err(BootError::NotAKernel(
            "neither an ELF file nor a bzImage (no \"HdrS\" setup header)".into(),
        )),
    }
}

fn load_kernel<M: GuestMemoryBackend>(
    memory: &M,
    image: &mut Reader<'_>,
    prefer_pvh: bool,
) -> Result<LoadedKernel, BootError> {
    let head = image.head(HEAD_BYTES).map_err(|source| BootError::Read {
        file: BootFile::Kernel,
        path: image.path(),
        source,
    })?;
    match detect_format(&head)? {
        KernelFormat::BzImage => load_bzimage(memory, &head, image),
        _ => load_elf(memory, &head, image, prefer_pvh),
    }
}

fn load_bzimage<M: GuestMemoryBackend>(
    memory: &M,
    head: &[u8],
    image: &mut Reader<'_>,
) -> Result<LoadedKernel, BootError> {
    let header = read_setup_header(head)?;
    if header.version < MIN_BOOT_PROTOCOL || header.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BootError::UnsupportedKernel(format!(
            "the bzImage speaks boot protocol {}.{:02} without the 64-bit entry point; \
             2.12 with XLF_KERNEL_64 is needed",
            header.version >> 8,
            header.version & 0xff
        )));
    }
    let result =
        run_loader::<BzImage, _>(memory, image, Some(GuestAddress(x86::HIGH_MEMORY_START)))?;
    let mut header = result
        .setup_header
        .ok_or_else(|| BootError::NotAKernel("the bzImage has no setup header".into()))?;
    let load = result.kernel_load.0;
    let end = decompression_start(&header, load)
        .checked_add(u64::from(header.init_size))
        .ok_or_else(|| BootError::NotAKernel("the bzImage's init_size overflows".into()))?
        .max(result.kernel_end);
    header.type_of_loader = LOADER_UNDEFINED;
    header.loadflags |= LOADED_HIGH | CAN_USE_HEAP;
    header.heap_end_ptr = 0xfe00;
    header.vid_mode = 0xffff;
    Ok(LoadedKernel {
        format: KernelFormat::BzImage,
        entry: load + BZIMAGE_64BIT_ENTRY_OFFSET,
        header: Some(header),
        end,
    })
}

/// Where a bzImage loaded at `load` and entered at its 64-bit entry point decompresses
/// itself, using `init_size` bytes from there (arch/x86/boot/compressed/head_64.S):
/// a relocatable kernel at its load address aligned up to `kernel_alignment`, but
/// never below its preferred address (`pref_address`, `LOAD_PHYSICAL_ADDR`: 16 MiB for
/// distribution kernels); a kernel that is not relocatable at its preferred address.
fn decompression_start(header: &setup_header, load: u64) -> u64 {
    let preferred = header.pref_address;
    if header.relocatable_kernel == 0 {
        return preferred.max(load);
    }
    let alignment = match u64::from(header.kernel_alignment) {
        0 => u64::from(DEFAULT_KERNEL_ALIGNMENT),
        alignment => alignment,
    };
    load.div_ceil(alignment)
        .saturating_mul(alignment)
        .max(preferred)
}

fn read_setup_header(image: &[u8]) -> Result<setup_header, BootError> {
    let size = std::mem::size_of::<setup_header>();
    let bytes = image.get(0x1f1..0x1f1 + size).ok_or_else(|| {
        BootError::NotAKernel("the bzImage is cut short in its setup header".into())
    })?;
    let mut header = setup_header::default();
    // `setup_header` is plain data (`ByteValued`).
    vm_memory::ByteValued::as_mut_slice(&mut header).copy_from_slice(bytes);
    Ok(header)
}

/// ELF class of 64-bit files.
const ELFCLASS64: u8 = 2;
/// ELF machine of x86-64.
const EM_X86_64: u16 = 62;

fn load_elf<M: GuestMemoryBackend>(
    memory: &M,
    head: &[u8],
    image: &mut Reader<'_>,
    prefer_pvh: bool,
) -> Result<LoadedKernel, BootError> {
    // linux-loader checks the magic, byte order and header sizes, not the machine.
    let machine = head.get(18..20).map(|b| u16::from_le_bytes([b[0], b[1]]));
    if head.get(4) != Some(&ELFCLASS64) || machine != Some(EM_X86_64) {
        return Err(BootError::UnsupportedKernel(format!(
            "the ELF file is not a 64-bit x86-64 executable (class {:?}, machine {:?})",
            head.get(4),
            machine
        )));
    }
    let result = run_loader::<Elf, _>(memory, image, None)?;
    let (format, entry) = match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) if prefer_pvh => (KernelFormat::Pvh, entry.0),
        _ => (KernelFormat::Elf, result.kernel_load.0),
    };
    // linux-loader checks the ELF entry against high memory, not the PVH note's.
    if !(x86::HIGH_MEMORY_START..result.kernel_end).contains(&entry) {
        return Err(BootError::UnsupportedKernel(format!(
            "the entry point {entry:#x} is not in the kernel loaded at {:#x}..{:#x}",
            x86::HIGH_MEMORY_START,
            result.kernel_end
        )));
    }
    Ok(LoadedKernel {
        format,
        entry,
        header: None,
        end: result.kernel_end,
    })
}

/// Runs linux-loader's `L` on `image` (at `offset`, if the format takes one), with
/// nothing loaded below 1 MiB, naming what went wrong.
fn run_loader<L: KernelLoader, M: GuestMemoryBackend>(
    memory: &M,
    image: &mut Reader<'_>,
    offset: Option<GuestAddress>,
) -> Result<KernelLoaderResult, BootError> {
    let highmem = Some(GuestAddress(x86::HIGH_MEMORY_START));
    L::load(memory, offset, image, highmem).map_err(BootError::KernelLoad)
}

/// Checks that the kernel's decompression area, and the initrd above it, fit in the RAM
/// below the MMIO hole: a guest too small for them fails before it runs, naming the
/// size it needs, instead of corrupting its initrd while it decompresses.
fn fits_in_low_ram(
    layout: &PhysicalLayout,
    kernel: &LoadedKernel,
    initrd: Option<&mut Reader<'_>>,
) -> Result<(), BootError> {
    let initrd = match initrd {
        Some(reader) => reader.len().map_err(|source| BootError::Read {
            file: BootFile::Initrd,
            path: reader.path(),
            source,
        })?,
        None => 0,
    };
    let needs = kernel
        .end
        .saturating_add(initrd.saturating_add(0xfff) & !0xfff);
    let has = layout.low_ram_end();
    if needs > has {
        return Err(BootError::RamTooSmallForKernel {
            needs_mib: needs.div_ceil(1 << 20),
            has_mib: has >> 20,
            initrd: initrd > 0,
        });
    }
    Ok(())
}

/// Copies the initrd to the highest page-aligned address below both the kernel's
/// `initrd_addr_max` and the top of low RAM, above the kernel.
fn place_initrd<M: GuestMemoryBackend>(
    memory: &M,
    layout: &PhysicalLayout,
    initrd: &mut Reader<'_>,
    kernel: &LoadedKernel,
    limits: &Limits,
) -> Result<(u64, u64), BootError> {
    let size = initrd.len().map_err(|source| BootError::Read {
        file: BootFile::Initrd,
        path: initrd.path(),
        source,
    })?;
    let top = layout
        .low_ram_end()
        .min(limits.initrd_addr_max.saturating_add(1));
    let room = top.saturating_sub(kernel.end);
    let start = top.checked_sub(size).map(|start| start & !0xfff);
    let Some(start) = start.filter(|&start| start >= kernel.end) else {
        return Err(BootError::InitrdTooLarge { size, room });
    };
    let len = usize::try_from(size).map_err(|_| BootError::InitrdTooLarge { size, room })?;
    memory
        .read_exact_volatile_from(GuestAddress(start), initrd, len)
        .map_err(BootError::write(BootStructure::Initrd))?;
    Ok((start, size))
}

/// The setup header an ELF kernel gets in its zero page (it has none of its own).
fn elf_setup_header() -> setup_header {
    setup_header {
        boot_flag: BOOT_FLAG,
        header: HDR_MAGIC,
        type_of_loader: LOADER_UNDEFINED,
        kernel_alignment: DEFAULT_KERNEL_ALIGNMENT,
        ..Default::default()
    }
}

fn write_zero_page<M: GuestMemoryBackend>(
    memory: &M,
    layout: &PhysicalLayout,
    mut header: setup_header,
    cmdline_len: u32,
    ramdisk: Option<(u64, u64)>,
    rsdp: u64,
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    header.cmd_line_ptr = x86::CMDLINE.start_u32();
    header.cmdline_size = cmdline_len;
    if let Some((start, size)) = ramdisk {
        // place_initrd put it below initrd_addr_max, a 32-bit address.
        let too_large = |_| BootError::InitrdTooLarge {
            size,
            room: u64::from(u32::MAX),
        };
        header.ramdisk_image = u32::try_from(start).map_err(too_large)?;
        header.ramdisk_size = u32::try_from(size).map_err(too_large)?;
    }
    params.hdr = header;
    params.acpi_rsdp_addr = rsdp;
    let e820 = layout.e820();
    if e820.len() > E820_MAX {
        return Err(LayoutError::TooManyE820Entries {
            entries: e820.len(),
            max: E820_MAX,
        }
        .into());
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(&e820) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    // At most E820_MAX, checked above.
    params.e820_entries = u8::try_from(e820.len()).unwrap_or(u8::MAX);
    LinuxBootConfigurator::write_bootparams::<M>(
        &BootParams::new::<boot_params>(&params, GuestAddress(x86::ZERO_PAGE.start)),
        memory,
    )
    .map_err(BootError::write(BootStructure::ZeroPage))
}

fn write_start_info<M: GuestMemoryBackend>(
    memory: &M,
    layout: &PhysicalLayout,
    ramdisk: Option<(u64, u64)>,
    rsdp: u64,
) -> Result<u64, BootError> {
    let memmap: Vec<hvm_memmap_table_entry> = layout
        .e820()
        .iter()
        .map(|entry| hvm_memmap_table_entry {
            addr: entry.addr,
            size: entry.size,
            type_: entry.kind,
            reserved: 0,
        })
        .collect();
    let mut start_info = hvm_start_info {
        magic: PVH_MAGIC,
        version: 1,
        cmdline_paddr: x86::CMDLINE.start,
        rsdp_paddr: rsdp,
        memmap_paddr: x86::PVH_MEMMAP.start,
        memmap_entries: u32::try_from(memmap.len()).unwrap_or(u32::MAX),
        ..Default::default()
    };
    let module_addr = x86::PVH_START_INFO.start + std::mem::size_of::<hvm_start_info>() as u64;
    let mut params = BootParams::new(&start_info, GuestAddress(x86::PVH_START_INFO.start));
    if let Some((start, size)) = ramdisk {
        start_info.nr_modules = 1;
        start_info.modlist_paddr = module_addr;
        params = BootParams::new(&start_info, GuestAddress(x86::PVH_START_INFO.start));
        let module = linux_loader::loader::elf::start_info::hvm_modlist_entry {
            paddr: start,
            size,
            ..Default::default()
        };
        params.set_modules(&[module], GuestAddress(module_addr));
    }
    params.set_sections(&memmap, GuestAddress(x86::PVH_MEMMAP.start));
    PvhBootConfigurator::write_bootparams::<M>(&params, memory)
        .map_err(BootError::write(BootStructure::PvhStartInfo))?;
    Ok(x86::PVH_START_INFO.start)
}
