//! Function names of one module, from its ELF symbol tables (`.symtab`
//! where the module keeps it, `.dynsym` always), looked up by address and
//! demangled (C++ and Rust) when asked for.

use object::{Object, ObjectSymbol, SymbolKind};

/// The function symbols of one module, sorted by address.
#[derive(Debug, Default, Clone)]
pub struct Symbols {
    /// (first address, size, name's start in `names`, name's length).
    entries: Vec<(u64, u64, u32, u32)>,
    names: String,
}

/// A symbol found for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'s> {
    /// The raw (mangled) name.
    pub name: &'s str,
    /// The address's distance from the symbol's start.
    pub offset: u64,
}

impl Symbols {
    /// The function symbols of `file` (addresses as the file states them).
    pub fn of(file: &object::File<'_>) -> Self {
        let mut out = Symbols::default();
        for sym in file.symbols().chain(file.dynamic_symbols()) {
            if sym.kind() != SymbolKind::Text || sym.address() == 0 {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            if name.is_empty() {
                continue;
            }
            out.push(sym.address(), sym.size(), name);
        }
        out.finish();
        out
    }

    /// Adds a symbol (call [`Symbols::finish`] after the last).
    pub fn push(&mut self, start: u64, size: u64, name: &str) {
        let (Ok(at), Ok(len)) = (u32::try_from(self.names.len()), u32::try_from(name.len())) else {
            return;
        };
        self.names.push_str(name);
        self.entries.push((start, size, at, len));
    }

    /// Sorts the symbols and drops duplicates (the same function in both
    /// tables); of aliases (`__getpid`, `getpid`), the one with the fewest
    /// leading underscores stays.
    pub fn finish(&mut self) {
        let names = &self.names;
        let underscores = |at: u32, len: u32| {
            names[at as usize..(at + len) as usize]
                .bytes()
                .take_while(|&b| b == b'_')
                .count()
        };
        self.entries
            .sort_unstable_by_key(|&(start, size, at, len)| {
                (start, std::cmp::Reverse(size), underscores(at, len))
            });
        self.entries.dedup_by_key(|e| e.0);
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The (file) address of the function named `name` exactly, if the
    /// module has it (a scan: for the few look-ups of an injection).
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|&&(_, _, at, len)| &self.names[at as usize..(at + len) as usize] == name)
            .map(|e| e.0)
    }

    /// The symbol [`Symbols::lookup`] finds for `addr`, whole: (start,
    /// size, name).
    pub fn lookup_entry(&self, addr: u64) -> Option<(u64, u64, &str)> {
        let found = self.lookup(addr)?;
        let start = addr - found.offset;
        let i = self.entries.partition_point(|e| e.0 < start);
        let (_, size, ..) = *self.entries.get(i)?;
        Some((start, size, found.name))
    }

    /// The function that holds `addr` (a file address): the symbol that
    /// starts last at or before it, if `addr` is within its size (a symbol
    /// of size 0 holds everything up to the next symbol).
    pub fn lookup(&self, addr: u64) -> Option<Found<'_>> {
        let i = self
            .entries
            .partition_point(|e| e.0 <= addr)
            .checked_sub(1)?;
        let (start, size, at, len) = self.entries[i];
        let offset = addr - start;
        let within = if size == 0 {
            self.entries.get(i + 1).is_none_or(|next| addr < next.0)
        } else {
            offset < size
        };
        within.then(|| Found {
            name: &self.names[at as usize..(at + len) as usize],
            offset,
        })
    }
}

/// `name` demangled if it is a C++ (Itanium ABI) or Rust symbol, else as
/// it is. Rust hashes (`::h0123…`) are left out.
pub fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    if name.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(name) {
            if let Ok(d) = sym.demangle() {
                return d;
            }
        }
    }
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Symbols {
        let mut s = Symbols::default();
        s.push(0x2000, 0x100, "second");
        s.push(0x1000, 0x10, "first");
        s.push(0x3000, 0, "sizeless");
        s.push(0x2000, 0x100, "second");
        s.push(0x4000, 0x20, "__last");
        s.push(0x4000, 0x20, "last");
        s.finish();
        s
    }

    #[test]
    fn addresses_find_the_function_that_holds_them() {
        let s = table();
        assert_eq!(s.len(), 4);
        assert_eq!(
            s.lookup(0x1000),
            Some(Found {
                name: "first",
                offset: 0
            })
        );
        assert_eq!(s.lookup(0x100f).map(|f| f.offset), Some(0xf));
        assert_eq!(s.lookup(0x1010), None, "past first's end");
        assert_eq!(s.lookup(0xfff), None, "before every symbol");
        assert_eq!(s.lookup(0x20ff).map(|f| f.name), Some("second"));
        assert_eq!(s.lookup(0x3fff).map(|f| f.name), Some("sizeless"));
        assert_eq!(s.lookup(0x401f).map(|f| f.name), Some("last"));
        assert_eq!(s.lookup(0x4020), None);
    }

    #[test]
    fn names_are_demangled() {
        assert_eq!(demangle("_ZN3foo3barEv"), "foo::bar()");
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(demangle("PyObject_Call"), "PyObject_Call");
        assert_eq!(demangle("_Zbogus"), "_Zbogus");
    }

    #[test]
    fn this_test_binary_names_its_own_functions() {
        let path = std::env::current_exe().expect("exe");
        let data = std::fs::read(path).expect("read");
        let file = object::File::parse(&*data).expect("elf");
        let s = Symbols::of(&file);
        assert!(s.len() > 100, "{}", s.len());
        let main = s
            .entries
            .iter()
            .map(|&(_, _, at, len)| &s.names[at as usize..(at + len) as usize])
            .any(|n| n == "main");
        assert!(main);
    }
}
