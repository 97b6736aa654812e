//! The module map of a process: every executable ELF mapping (the
//! executable, `libpython`, each shared object, the vDSO) with its unwind
//! information handed to framehop and its symbols kept for names. Kept
//! current by [`ModuleMap::refresh`], which the unwinder calls when it
//! meets an address no module covers (a library loaded later by `dlopen`).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

use framehop::x86_64::UnwinderX86_64;
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder};
use object::{Object, ObjectSection, ObjectSegment};

use crate::maps::{self, Mapping};
use crate::symbols::Symbols;

/// One loaded module.
#[derive(Debug)]
pub struct LoadedModule {
    /// Its path (or `[vdso]`).
    pub path: String,
    /// The addresses its executable mappings cover.
    pub range: Range<u64>,
    /// Load bias: a file address plus this is the address in memory.
    pub bias: u64,
    /// Its function symbols (file addresses).
    pub symbols: Symbols,
}

impl LoadedModule {
    /// The file name (the last part of the path).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// Counters of the module map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModuleStats {
    /// Modules loaded (with unwind information).
    pub loaded: u64,
    /// Executable mappings whose file could not be read or parsed.
    pub unreadable: u64,
    /// Times the map was read again.
    pub refreshes: u64,
    /// Modules whose `.eh_frame_hdr` was left out as unsound (see
    /// [`crate::ehframe::hdr_is_sound`]).
    pub unsound_headers: u64,
}

/// The modules of one process, and the framehop unwinder that knows them.
pub struct ModuleMap {
    pid: u32,
    modules: Vec<LoadedModule>,
    /// Mappings already looked at (start → path), loaded or not.
    seen: HashMap<u64, String>,
    pub(crate) unwinder: UnwinderX86_64<Vec<u8>>,
    stats: ModuleStats,
    /// The process's mappings as last read (for stack bounds).
    mappings: Vec<Mapping>,
}

impl std::fmt::Debug for ModuleMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleMap")
            .field("pid", &self.pid)
            .field("modules", &self.modules.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl ModuleMap {
    /// The module map of process `pid`, read now.
    pub fn new(pid: u32) -> std::io::Result<Self> {
        let mut map = ModuleMap {
            pid,
            modules: Vec::new(),
            seen: HashMap::new(),
            unwinder: UnwinderX86_64::new(),
            stats: ModuleStats::default(),
            mappings: Vec::new(),
        };
        map.refresh()?;
        Ok(map)
    }

    /// A module map built from modules given by hand (recorded captures).
    pub fn from_parts(parts: Vec<(LoadedModule, ExplicitModuleSectionInfo<Vec<u8>>)>) -> Self {
        let mut map = ModuleMap {
            pid: 0,
            modules: Vec::new(),
            seen: HashMap::new(),
            unwinder: UnwinderX86_64::new(),
            stats: ModuleStats::default(),
            mappings: Vec::new(),
        };
        for (m, info) in parts {
            map.add(m, info);
        }
        map
    }

    /// Reads the process's memory map again: modules mapped since are
    /// loaded, modules gone are dropped.
    pub fn refresh(&mut self) -> std::io::Result<()> {
        self.stats.refreshes += 1;
        let mappings = maps::read(self.pid)?;
        // Gone: no executable mapping starts where theirs did any more.
        let live: std::collections::HashSet<(u64, &str)> = mappings
            .iter()
            .filter(|m| m.exec)
            .map(|m| (m.start, m.path.as_str()))
            .collect();
        let mut gone = Vec::new();
        self.modules.retain(|m| {
            let keep = live.contains(&(m.range.start, m.path.as_str()));
            if !keep {
                gone.push(m.range.start);
            }
            keep
        });
        for start in gone {
            self.unwinder.remove_module(start);
            self.seen.remove(&start);
        }
        self.seen
            .retain(|start, path| live.contains(&(*start, path.as_str())));
        for m in mappings.iter().filter(|m| m.exec && m.read) {
            if self.seen.get(&m.start) == Some(&m.path) {
                continue;
            }
            self.seen.insert(m.start, m.path.clone());
            match self.load(m, &mappings) {
                Some((module, info)) => {
                    // The module covers the file's other executable
                    // mappings with the same bias too: not loaded again.
                    for other in mappings
                        .iter()
                        .filter(|o| o.exec && o.path == m.path && module.range.contains(&o.start))
                    {
                        self.seen.insert(other.start, other.path.clone());
                    }
                    self.add(module, info);
                }
                None => self.stats.unreadable += 1,
            }
        }
        self.mappings = mappings;
        Ok(())
    }

    fn add(&mut self, module: LoadedModule, mut info: ExplicitModuleSectionInfo<Vec<u8>>) {
        let sound = match (
            &info.eh_frame_hdr,
            &info.eh_frame_hdr_svma,
            &info.eh_frame_svma,
        ) {
            (Some(hdr), Some(hdr_svma), Some(eh)) => {
                crate::ehframe::hdr_is_sound(hdr, hdr_svma.start, eh)
            }
            _ => true,
        };
        if !sound {
            // Its frames end the unwind (see `hdr_is_sound`).
            info.eh_frame_hdr = None;
            info.eh_frame_hdr_svma = None;
            self.stats.unsound_headers += 1;
        }
        let fm = Module::new(module.path.clone(), module.range.clone(), module.bias, info);
        self.unwinder.add_module(fm);
        let at = self
            .modules
            .partition_point(|m| m.range.start < module.range.start);
        self.modules.insert(at, module);
        self.stats.loaded += 1;
    }

    /// The module that holds `addr`.
    pub fn module_at(&self, addr: u64) -> Option<&LoadedModule> {
        let i = self
            .modules
            .partition_point(|m| m.range.start <= addr)
            .checked_sub(1)?;
        let m = &self.modules[i];
        m.range.contains(&addr).then_some(m)
    }

    /// The address in memory of the function `name`, from the first module
    /// that has it (the executable and libpython before the libraries they
    /// load, as the maps list them), and that module.
    pub fn find_function(&self, name: &str) -> Option<(u64, &LoadedModule)> {
        self.modules.iter().find_map(|m| {
            let addr = m.symbols.address_of(name)?;
            Some((addr.wrapping_add(m.bias), m))
        })
    }

    /// The modules, by address.
    pub fn modules(&self) -> &[LoadedModule] {
        &self.modules
    }

    /// The counters so far.
    pub fn stats(&self) -> ModuleStats {
        self.stats
    }

    /// The mapping that holds `addr`, as last read.
    pub fn mapping_at(&self, addr: u64) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.contains(addr))
    }

    /// Reads module `m` again from its file, with its sections (for
    /// recordings).
    pub fn reload(
        &self,
        m: &LoadedModule,
    ) -> Option<(LoadedModule, ExplicitModuleSectionInfo<Vec<u8>>)> {
        let mapping = self
            .mappings
            .iter()
            .find(|x| x.exec && x.path == m.path && m.range.contains(&x.start))?;
        self.load(mapping, &self.mappings)
    }

    /// Loads the module of executable mapping `m`.
    fn load(
        &self,
        m: &Mapping,
        all: &[Mapping],
    ) -> Option<(LoadedModule, ExplicitModuleSectionInfo<Vec<u8>>)> {
        let data = if m.path == "[vdso]" {
            read_memory(self.pid, m.start, (m.end - m.start) as usize)?
        } else if m.is_file() {
            read_file(self.pid, m)?
        } else {
            return None;
        };
        let file = object::File::parse(&*data).ok()?;
        let bias = if m.path == "[vdso]" {
            // The vDSO is mapped whole from its first byte.
            let first = file.segments().map(|s| s.address()).min()?;
            m.start.wrapping_sub(first & !(PAGE - 1))
        } else {
            bias_of(&file, m)?
        };
        // The module covers every executable mapping of the same file with
        // the same bias (one, usually).
        let mut range = m.start..m.end;
        for other in all
            .iter()
            .filter(|o| o.exec && o.path == m.path && o.start != m.start)
        {
            if bias_of(&file, other) == Some(bias) {
                range.start = range.start.min(other.start);
                range.end = range.end.max(other.end);
            }
        }
        let section = |name: &str| {
            let s = file.section_by_name(name)?;
            let data = s.data().ok()?.to_vec();
            Some((s.address()..s.address() + s.size(), data))
        };
        let text = section(".text");
        let eh_frame = section(".eh_frame");
        let eh_frame_hdr = section(".eh_frame_hdr");
        let debug_frame = section(".debug_frame");
        let got = file
            .section_by_name(".got")
            .map(|s| s.address()..s.address() + s.size());
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: text.as_ref().map(|t| t.0.clone()),
            text: text.map(|t| t.1),
            got_svma: got,
            eh_frame_svma: eh_frame.as_ref().map(|t| t.0.clone()),
            eh_frame: eh_frame.map(|t| t.1),
            eh_frame_hdr_svma: eh_frame_hdr.as_ref().map(|t| t.0.clone()),
            eh_frame_hdr: eh_frame_hdr.map(|t| t.1),
            debug_frame: debug_frame.map(|t| t.1),
            ..Default::default()
        };
        let module = LoadedModule {
            path: m.path.clone(),
            range,
            bias,
            symbols: Symbols::of(&file),
        };
        Some((module, info))
    }
}

const PAGE: u64 = 4096;

/// The load bias of `file` mapped by `m`: the `PT_LOAD` segment that holds
/// the mapping's file offset says which file address the mapping starts at.
/// A page may hold the end of one segment and the start of the next: the
/// one whose permission to execute matches the mapping's is the one.
fn bias_of(file: &object::File<'_>, m: &Mapping) -> Option<u64> {
    file.segments().find_map(|seg| {
        let (off, size) = seg.file_range();
        let aligned = off & !(PAGE - 1);
        let exec = match seg.flags() {
            object::SegmentFlags::Elf { p_flags, .. } => p_flags.0 & object::elf::PF_X.0 != 0,
            _ => true,
        };
        (exec == m.exec && aligned <= m.offset && m.offset < off + size.max(1)).then(|| {
            // file address of the mapping's first byte
            let svma = seg.address().wrapping_add(m.offset).wrapping_sub(off);
            m.start.wrapping_sub(svma)
        })
    })
}

/// The file behind mapping `m` of process `pid`: its path, through the
/// process's root (its mount namespace), or the mapping's own entry in
/// `map_files` when the file was deleted or replaced.
fn read_file(pid: u32, m: &Mapping) -> Option<Vec<u8>> {
    let path = m.path.strip_suffix(" (deleted)").unwrap_or(&m.path);
    let candidates = [
        format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end),
        format!("/proc/{pid}/root{path}"),
        path.to_owned(),
    ];
    let first = if m.path.ends_with(" (deleted)") { 0 } else { 1 };
    candidates[first..]
        .iter()
        .chain(candidates[..first].iter())
        .find_map(|p| std::fs::read(p).ok())
}

/// `len` bytes at `addr` in process `pid` (`/proc/<pid>/mem`).
fn read_memory(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let mut f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    f.seek(SeekFrom::Start(addr)).ok()?;
    let mut out = vec![0; len];
    f.read_exact(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_process_has_its_executable_libc_and_vdso() {
        let map = ModuleMap::new(std::process::id()).expect("map");
        let here = the_own_process_has_its_executable_libc_and_vdso as *const () as u64;
        let me = map.module_at(here).expect("this test's module");
        let found = me.symbols.lookup(here - me.bias).expect("symbol");
        assert!(found.name.contains("the_own_process_has"), "{}", found.name);
        assert_eq!(found.offset, 0);
        assert!(map.modules().iter().any(|m| m.name().starts_with("libc")));
        let vdso = map.modules().iter().find(|m| m.path == "[vdso]");
        let vdso = vdso.expect("vdso loaded");
        assert!(!vdso.symbols.is_empty(), "vdso symbols");
        let libc_fn = libc::getpid as *const () as u64;
        let libc_mod = map.module_at(libc_fn).expect("libc mapped");
        assert_eq!(
            libc_mod
                .symbols
                .lookup(libc_fn - libc_mod.bias)
                .map(|f| f.name),
            Some("getpid")
        );
    }
}
