//! Loading a program (a static, position-independent ELF executable) into an
//! address space, with `xmas-elf` reading the file.
//!
//! Each `PT_LOAD` segment's pages get fresh zeroed frames, filled from the
//! file through the kernel's physical-memory mapping before anything is
//! mapped; a page shared by two segments gets the rights of both — unless
//! that makes it writable and executable, which is refused. The dynamic
//! relocations of a static PIE are all `R_X86_64_RELATIVE` (add the load
//! base); they are applied to the frames, `PT_GNU_RELRO` pages then lose write
//! access, and only then is the image mapped. A program that needs a dynamic
//! linker, thread-local storage or another relocation type is refused.

use x86_64::structures::paging::PhysFrame;
use xmas_elf::ElfFile;
use xmas_elf::dynamic::Tag;
use xmas_elf::header::{Class, Machine, Type as ElfType};
use xmas_elf::program::{SegmentData, Type};

use crate::mm::aspace::{AddressSpace, Kind, MapError, Prot};
use crate::mm::{PAGE_SIZE, frame, phys_to_virt};

/// Where position-independent programs are loaded.
pub const IMAGE_BASE: u64 = 0x40_0000;
/// Largest image span.
const MAX_IMAGE: u64 = 64 << 20;

const R_X86_64_NONE: u64 = 0;
const R_X86_64_RELATIVE: u64 = 8;

/// A loaded program.
#[derive(Debug, Clone, Copy)]
pub struct Image {
    /// Its entry point.
    pub entry: u64,
}

/// Why a program could not be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadError {
    /// Not a program Wyvern can run; why.
    Format(&'static str),
    /// Out of memory.
    NoMemory,
}

struct PageOf {
    frame: PhysFrame,
    write: bool,
    exec: bool,
}

/// The frames of an image being built; freed if loading fails.
struct Pages(super::vecmap::VecMap<u64, PageOf>);

impl Drop for Pages {
    fn drop(&mut self) {
        self.0.retain(|_, p| {
            frame::free(p.frame);
            false
        });
    }
}

impl Pages {
    fn bytes(&mut self, page: u64) -> Option<&mut [u8; PAGE_SIZE as usize]> {
        let f = self.0.get(&page)?.frame;
        // SAFETY: the frame is ours (allocated for this image, not mapped
        // anywhere yet) and the physical mapping maps it writable.
        Some(unsafe { &mut *phys_to_virt(f.start_address()).as_mut_ptr::<[u8; 4096]>() })
    }

    /// Writes `data` at image offset `at` (any alignment, across pages).
    fn write(&mut self, at: u64, mut data: &[u8]) -> Result<(), LoadError> {
        let mut a = at;
        while !data.is_empty() {
            let off = (a % PAGE_SIZE) as usize;
            let n = data.len().min(PAGE_SIZE as usize - off);
            let page = self
                .bytes(a - off as u64)
                .ok_or(LoadError::Format("write outside the image"))?;
            page[off..off + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            a += n as u64;
        }
        Ok(())
    }
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Loads `elf` into `space` at `base` (for a position-independent program;
/// a fixed-address one goes where it says). The space must be empty where the
/// image goes.
pub fn load(space: &AddressSpace, elf: &[u8], base: u64) -> Result<Image, LoadError> {
    // xmas-elf reads its structures in place and needs them aligned; cpio
    // aligns file data to 4 bytes only.
    let mut aligned: alloc::vec::Vec<u64> = alloc::vec::Vec::new();
    aligned
        .try_reserve_exact(elf.len().div_ceil(8))
        .map_err(|_| LoadError::NoMemory)?;
    aligned.resize(elf.len().div_ceil(8), 0);
    for (w, chunk) in aligned.iter_mut().zip(elf.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
    // SAFETY: a `[u64]` is readable as bytes; the length stays within it.
    let elf: &[u8] =
        unsafe { core::slice::from_raw_parts(aligned.as_ptr().cast::<u8>(), elf.len()) };
    let file = ElfFile::new(elf).map_err(LoadError::Format)?;
    if file.header.pt1.class() != Class::SixtyFour {
        return Err(LoadError::Format("not a 64-bit ELF file"));
    }
    if file.header.pt2.machine().as_machine() != Machine::X86_64 {
        return Err(LoadError::Format("not an x86_64 program"));
    }
    let base = match file.header.pt2.type_().as_type() {
        ElfType::SharedObject => base,
        ElfType::Executable => 0,
        _ => return Err(LoadError::Format("not an executable")),
    };
    struct Seg {
        vaddr: u64,
        file: u64,
        offset: u64,
    }
    let mut segs = alloc::vec::Vec::new();
    let mut relro = None;
    let mut dynamic = None;
    let mut pages = Pages(super::vecmap::VecMap::new());
    for ph in file.program_iter() {
        match ph.get_type().map_err(LoadError::Format)? {
            Type::Load => {
                let (vaddr, mem, filesz) = (ph.virtual_addr(), ph.mem_size(), ph.file_size());
                if filesz > mem
                    || ph
                        .offset()
                        .checked_add(filesz)
                        .is_none_or(|e| e > elf.len() as u64)
                {
                    return Err(LoadError::Format("segment larger than the file"));
                }
                let end = vaddr
                    .checked_add(mem)
                    .ok_or(LoadError::Format("segment wraps"))?;
                if end > MAX_IMAGE {
                    return Err(LoadError::Format("image too large"));
                }
                let f = ph.flags();
                let mut page = vaddr & !(PAGE_SIZE - 1);
                while page < end {
                    if pages.0.get(&page).is_none() {
                        let frame = frame::alloc_zeroed().ok_or(LoadError::NoMemory)?;
                        let new = PageOf {
                            frame,
                            write: false,
                            exec: false,
                        };
                        if let Err(p) = pages.0.try_insert(page, new) {
                            frame::free(p.frame);
                            return Err(LoadError::NoMemory);
                        }
                    }
                    let e = pages.0.get_mut(&page).expect("inserted above");
                    e.write |= f.is_write();
                    e.exec |= f.is_execute();
                    if e.write && e.exec {
                        return Err(LoadError::Format("a page both writable and executable"));
                    }
                    page += PAGE_SIZE;
                }
                segs.try_reserve(1).map_err(|_| LoadError::NoMemory)?;
                segs.push(Seg {
                    vaddr,
                    file: filesz,
                    offset: ph.offset(),
                });
            }
            Type::Interp => return Err(LoadError::Format("needs a dynamic linker")),
            Type::Tls => return Err(LoadError::Format("uses thread-local storage")),
            Type::GnuRelro => relro = Some((ph.virtual_addr(), ph.mem_size())),
            Type::Dynamic => dynamic = Some(ph),
            _ => {}
        }
    }
    if segs.is_empty() {
        return Err(LoadError::Format("nothing to load"));
    }
    for s in &segs {
        let data = &elf[s.offset as usize..(s.offset + s.file) as usize];
        pages.write(s.vaddr, data)?;
    }
    // Relocations: DT_RELA/DT_RELASZ from the dynamic segment, read from the
    // file bytes of the segment that holds them.
    if let Some(ph) = dynamic {
        let (mut rela, mut relasz, mut relaent) = (None, 0u64, 24u64);
        if let Ok(SegmentData::Dynamic64(entries)) = ph.get_data(&file) {
            for d in entries {
                match d.get_tag() {
                    Ok(Tag::Rela) => rela = d.get_ptr().ok(),
                    Ok(Tag::RelaSize) => relasz = d.get_val().unwrap_or(0),
                    Ok(Tag::RelaEnt) => relaent = d.get_val().unwrap_or(24),
                    Ok(Tag::Rel) | Ok(Tag::JmpRel) => {
                        return Err(LoadError::Format("relocations other than RELA"));
                    }
                    _ => {}
                }
            }
        }
        if let Some(rela) = rela {
            if relaent != 24 {
                return Err(LoadError::Format("unexpected RELA entry size"));
            }
            let seg = segs
                .iter()
                .find(|s| rela >= s.vaddr && rela + relasz <= s.vaddr + s.file)
                .ok_or(LoadError::Format("relocations outside the file"))?;
            let at = (seg.offset + (rela - seg.vaddr)) as usize;
            let table = &elf[at..at + relasz as usize];
            for e in table.as_chunks::<24>().0 {
                let (off, info, addend) = (
                    read_u64(e, 0).unwrap_or(0),
                    read_u64(e, 8).unwrap_or(0),
                    read_u64(e, 16).unwrap_or(0),
                );
                match info & 0xffff_ffff {
                    R_X86_64_NONE => {}
                    R_X86_64_RELATIVE => {
                        pages.write(off, &base.wrapping_add(addend).to_le_bytes())?;
                    }
                    _ => return Err(LoadError::Format("unsupported relocation type")),
                }
            }
        }
    }
    if let Some((start, len)) = relro {
        let (lo, hi) = (
            start.next_multiple_of(PAGE_SIZE),
            (start + len) & !(PAGE_SIZE - 1),
        );
        pages.0.retain(|&page, p| {
            if (lo..hi).contains(&page) {
                p.write = false;
            }
            true
        });
    }
    let entry_rel = file.header.pt2.entry_point();
    if !pages
        .0
        .get(&(entry_rel & !(PAGE_SIZE - 1)))
        .is_some_and(|p| p.exec)
    {
        return Err(LoadError::Format("entry point not in executable code"));
    }
    // Map runs of consecutive pages with equal rights, one region each.
    while let Some((&first, p)) = pages.0.first_key_value() {
        let prot = Prot {
            write: p.write,
            exec: p.exec,
        };
        let mut end = first + PAGE_SIZE;
        while pages
            .0
            .get(&end)
            .is_some_and(|q| q.write == prot.write && q.exec == prot.exec)
        {
            end += PAGE_SIZE;
        }
        let r = space.map_with(base + first, end - first, prot, Kind::Image, |va| {
            pages.0.remove(&(va - base)).map(|p| p.frame)
        });
        match r {
            Ok(()) => {}
            Err(MapError::NoMemory | MapError::Limit) => return Err(LoadError::NoMemory),
            Err(MapError::Busy) => {
                return Err(LoadError::Format("image overlaps the address space"));
            }
        }
    }
    Ok(Image {
        entry: base + entry_rel,
    })
}
