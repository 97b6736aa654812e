//! Trimming an `.eh_frame` section to the entries some addresses need (for
//! recordings): the other entries are zeroed in place, so the section keeps
//! its layout (and `.eh_frame_hdr`'s offsets stay right) while compressing
//! to almost nothing; the lookup table is cut to the kept entries.

use gimli::{BaseAddresses, CieOrFde, EhFrame, LittleEndian, UnwindSection};

/// Zeroes every FDE of `data` (an `.eh_frame` at file address
/// `svma`) that covers none of `keep` (file addresses); CIEs stay whole.
/// Returns the offsets of the FDEs kept.
pub fn zero_unneeded(data: &mut [u8], svma: u64, keep: &[u64]) -> Vec<u64> {
    let mut zero = Vec::new();
    let mut kept = Vec::new();
    {
        let mut eh = EhFrame::new(&*data, LittleEndian);
        eh.set_address_size(8);
        let bases = BaseAddresses::default().set_eh_frame(svma);
        let mut entries = eh.entries(&bases);
        while let Ok(Some(entry)) = entries.next() {
            let CieOrFde::Fde(partial) = entry else {
                continue;
            };
            let Ok(fde) =
                partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset))
            else {
                continue;
            };
            let (start, end) = (fde.initial_address(), fde.initial_address() + fde.len());
            if keep.iter().any(|&a| start <= a && a < end) {
                kept.push(fde.offset() as u64);
                continue;
            }
            // The whole entry: what finds the kept ones is the lookup table
            // (see `trim_hdr`), which no longer points here.
            zero.push(fde.offset()..fde.offset() + 4 + fde.entry_len());
        }
    }
    for r in zero {
        if let Some(bytes) = data.get_mut(r) {
            bytes.fill(0);
        }
    }
    kept
}

/// Keeps, in `hdr` (an `.eh_frame_hdr`), only the lookup entries whose
/// FDE lies at one of `fde_offsets` (offsets in `.eh_frame`, which is at
/// `eh_frame_svma`; `hdr` is at `hdr_svma`). Only the layout every GNU
/// linker writes is rewritten (table of `datarel | sdata4` pairs, count
/// `udata4`); anything else is left whole. Returns whether it was
/// rewritten.
pub fn trim_hdr(hdr: &mut Vec<u8>, hdr_svma: u64, eh_frame_svma: u64, fde_offsets: &[u64]) -> bool {
    const UDATA4: u8 = 0x03;
    const SDATA4: u8 = 0x0b;
    const PCREL: u8 = 0x10;
    const DATAREL: u8 = 0x30;
    if hdr.len() < 12 || hdr[0] != 1 || hdr[1] != (PCREL | SDATA4) || hdr[2] != UDATA4 {
        return false;
    }
    if hdr[3] != (DATAREL | SDATA4) {
        return false;
    }
    let count = u32::from_le_bytes(hdr[8..12].try_into().expect("4 bytes")) as usize;
    let table = &hdr[12..];
    if table.len() < count * 8 {
        return false;
    }
    let mut kept = Vec::new();
    for pair in table[..count * 8].chunks_exact(8) {
        let fde = i32::from_le_bytes(pair[4..8].try_into().expect("4 bytes")) as i64;
        let fde_svma = (hdr_svma as i64 + fde) as u64;
        if fde_offsets.contains(&fde_svma.wrapping_sub(eh_frame_svma)) {
            kept.extend_from_slice(pair);
        }
    }
    let n = (kept.len() / 8) as u32;
    hdr.truncate(12);
    hdr[8..12].copy_from_slice(&n.to_le_bytes());
    hdr.extend_from_slice(&kept);
    true
}

/// Whether an `.eh_frame_hdr` at `hdr_svma` can be handed to the unwinder
/// with `.eh_frame` at `eh_frame_svma`: the layout every GNU linker
/// writes (version 1, a `pcrel | sdata4` pointer to `.eh_frame`, a
/// `udata4` count, a table of `datarel | sdata4` pairs that fits), with
/// every entry's FDE inside `.eh_frame`. gimli computes an entry's offset
/// in `.eh_frame` by subtracting, unchecked: an entry before it (a damaged
/// file, or an input made up by the fuzzer) would overflow. Such a header
/// is left out, and the unwind ends at a frame of that module (framehop
/// looks FDEs up through the header; a release build, where the
/// subtraction wraps, found no FDE there either).
pub fn hdr_is_sound(hdr: &[u8], hdr_svma: u64, eh_frame_svma: &std::ops::Range<u64>) -> bool {
    const UDATA4: u8 = 0x03;
    const SDATA4: u8 = 0x0b;
    const PCREL: u8 = 0x10;
    const DATAREL: u8 = 0x30;
    if hdr.len() < 12
        || hdr[0] != 1
        || hdr[1] != (PCREL | SDATA4)
        || hdr[2] != UDATA4
        || hdr[3] != (DATAREL | SDATA4)
    {
        return false;
    }
    let word = |at: usize| {
        i64::from(i32::from_le_bytes(
            hdr[at..at + 4].try_into().expect("4 bytes"),
        ))
    };
    let Some(ptr) = hdr_svma.checked_add_signed(4 + word(4)) else {
        return false;
    };
    if ptr != eh_frame_svma.start {
        return false;
    }
    let count = u32::from_le_bytes(hdr[8..12].try_into().expect("4 bytes")) as usize;
    let Some(table) = count.checked_mul(8).and_then(|n| hdr.get(12..12 + n)) else {
        return false;
    };
    table.chunks_exact(8).all(|pair| {
        let fde = i64::from(i32::from_le_bytes(pair[4..8].try_into().expect("4 bytes")));
        hdr_svma
            .checked_add_signed(fde)
            .is_some_and(|at| eh_frame_svma.contains(&at))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSection};

    #[test]
    fn a_header_pointing_before_eh_frame_is_not_sound() {
        let exe = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        let file = object::File::parse(&*exe).expect("elf");
        let eh = file.section_by_name(".eh_frame").expect(".eh_frame");
        let hdr = file
            .section_by_name(".eh_frame_hdr")
            .expect(".eh_frame_hdr");
        let eh_range = eh.address()..eh.address() + eh.size();
        let mut bytes = hdr.data().expect("data").to_vec();
        assert!(hdr_is_sound(&bytes, hdr.address(), &eh_range));
        // The first entry's FDE moved before .eh_frame (gimli subtracted and
        // overflowed on such an input, found by the fuzzer).
        let before = (eh.address() as i64 - 64 - hdr.address() as i64) as i32;
        bytes[16..20].copy_from_slice(&before.to_le_bytes());
        assert!(!hdr_is_sound(&bytes, hdr.address(), &eh_range));
        // A count larger than the table, a table encoding of another kind.
        let mut long = hdr.data().expect("data").to_vec();
        long[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!hdr_is_sound(&long, hdr.address(), &eh_range));
        let mut other = hdr.data().expect("data").to_vec();
        other[3] = 0x1b;
        assert!(!hdr_is_sound(&other, hdr.address(), &eh_range));
    }

    #[test]
    fn only_the_entries_asked_for_survive() {
        let exe = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        let file = object::File::parse(&*exe).expect("elf");
        let section = file.section_by_name(".eh_frame").expect(".eh_frame");
        let mut data = section.data().expect("data").to_vec();
        let before = data.iter().filter(|&&b| b != 0).count();
        let here = only_the_entries_asked_for_survive as *const () as u64;
        // This test's own address, as a file address: the executable is
        // mapped with a bias, found from the module map.
        let map = crate::modules::ModuleMap::new(std::process::id()).expect("map");
        let me = map.module_at(here).expect("module");
        let kept = zero_unneeded(&mut data, section.address(), &[here - me.bias]);
        assert_eq!(kept.len(), 1);
        // The lookup table keeps that entry only.
        let hdr_section = file.section_by_name(".eh_frame_hdr").expect("hdr");
        let mut hdr = hdr_section.data().expect("data").to_vec();
        assert!(trim_hdr(
            &mut hdr,
            hdr_section.address(),
            section.address(),
            &kept
        ));
        assert_eq!(hdr.len(), 12 + 8);
        let after = data.iter().filter(|&&b| b != 0).count();
        // What is left: the CIEs and the one FDE.
        assert!(after * 20 < before, "{after} of {before} bytes left");
    }
}
