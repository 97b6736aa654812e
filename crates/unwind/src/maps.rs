//! A process's memory map (`/proc/<pid>/maps`), as the module map and the
//! stack bounds need it.

use std::io;

/// One line of `/proc/<pid>/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Whether it may be read.
    pub read: bool,
    /// Whether it may be executed.
    pub exec: bool,
    /// Offset of `start` in the mapped file.
    pub offset: u64,
    /// The mapped file's path, or a pseudo-name such as `[stack]` or
    /// `[vdso]`; empty for anonymous memory. A file deleted since it was
    /// mapped keeps the kernel's ` (deleted)` suffix.
    pub path: String,
}

impl Mapping {
    /// Whether `addr` lies in it.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether it maps a file (not anonymous memory, not a pseudo-name).
    pub fn is_file(&self) -> bool {
        self.path.starts_with('/')
    }
}

/// Parses the text of a `maps` file; lines that do not parse are left out.
pub fn parse(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mapping> {
    // start-end perms offset dev inode path
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?.as_bytes();
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.next().unwrap_or("").trim_start().to_owned();
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if perms.len() < 4 || end <= start {
        return None;
    }
    Some(Mapping {
        start,
        end,
        read: perms[0] == b'r',
        exec: perms[2] == b'x',
        offset,
        path,
    })
}

/// The memory map of process `pid` now.
pub fn read(pid: u32) -> io::Result<Vec<Mapping>> {
    Ok(parse(&std::fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0c8a00000-55d0c8a01000 r--p 00000000 08:01 1234 /usr/bin/python3.12
55d0c8a01000-55d0c8a02000 r-xp 00001000 08:01 1234 /usr/bin/python3.12
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7f1a2b000000-7f1a2b200000 r-xp 00028000 08:01 99 /lib/x86_64-linux-gnu/libc.so.6
7ffd1c9f0000-7ffd1ca11000 rw-p 00000000 00:00 0                          [stack]
7ffd1cbf3000-7ffd1cbf5000 r-xp 00000000 00:00 0                          [vdso]
7f1a2c000000-7f1a2c001000 r-xp 00000000 08:01 7 /tmp/gone.so (deleted)
garbage line
";

    #[test]
    fn lines_become_mappings() {
        let maps = parse(SAMPLE);
        assert_eq!(maps.len(), 7);
        assert_eq!(maps[1].start, 0x55d0c8a01000);
        assert_eq!(maps[1].offset, 0x1000);
        assert!(maps[1].exec && maps[1].read && maps[1].is_file());
        assert_eq!(maps[2].path, "");
        assert!(!maps[2].exec && !maps[2].is_file());
        assert_eq!(maps[3].path, "/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(maps[4].path, "[stack]");
        assert!(maps[4].contains(0x7ffd1ca10ff8) && !maps[4].contains(0x7ffd1ca11000));
        assert_eq!(maps[5].path, "[vdso]");
        assert_eq!(maps[6].path, "/tmp/gone.so (deleted)");
    }

    #[test]
    fn the_own_map_holds_this_function() {
        let maps = read(std::process::id()).expect("own maps");
        let here = lines_become_mappings as *const () as u64;
        let m = maps.iter().find(|m| m.contains(here)).expect("mapped");
        assert!(m.exec && m.is_file(), "{m:?}");
    }
}
