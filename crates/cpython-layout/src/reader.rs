//! Reading memory that belongs to someone else.
//!
//! Every byte of interpreter state goes through one [`MemoryReader`]. Its only
//! required method copies a range of the target's memory into a buffer and
//! fails, cleanly, when any part of the range is not readable: unmapped or
//! freed memory is an error, never a fault. The provided helpers of
//! [`ReadExt`] read plain-data mirrors, pointers and bounded byte ranges on top
//! of it.
//!
//! Implementations:
//! - [`ProcessReader`]: a live process by pid, the own one included
//!   (`process_vm_readv(2)`, or `/proc/<pid>/mem` where that is refused);
//! - [`SnapshotReader`]: a set of `(address, bytes)` regions, for tests and
//!   benchmarks; reads outside the regions are errors;
//! - [`RecordingReader`]: wraps another reader and keeps a copy of what was
//!   read, so that a walk over a live process can be replayed from a snapshot.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::addr::Addr;

/// Why a read failed. Small and `Copy`: it is returned from the hot path of a
/// sampler, where failures are counted, not logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// The address was null.
    #[error("read at a null address")]
    Null,
    /// Part of `[addr, addr + len)` is not mapped (or was freed, or lies
    /// outside every region of a snapshot).
    #[error("{len} bytes at {addr} are not readable")]
    Unmapped {
        /// Start of the failed read.
        addr: Addr,
        /// Its length.
        len: usize,
    },
    /// `addr + len` does not fit in the address space.
    #[error("address range overflows")]
    Overflow,
    /// The kernel refused access to the process (`EPERM`/`EACCES`).
    #[error("access to the process memory was denied")]
    Denied,
    /// The process no longer exists.
    #[error("the process is gone")]
    NoProcess,
    /// A length read from the target exceeds the caller's bound.
    #[error("length {len} exceeds the bound {max}")]
    TooLong {
        /// The length asked for.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// Any other OS error, by errno.
    #[error("read failed with errno {0}")]
    Os(i32),
}

/// Reads the memory of some address space.
///
/// Implementations must be sound for any `addr`/`buf`: a read of memory that
/// is not readable returns an error and leaves `buf` with unspecified
/// contents; it never faults. The trait is object safe: views take
/// `&dyn MemoryReader` or a generic `R: MemoryReader + ?Sized`.
pub trait MemoryReader {
    /// Fills `buf` with the bytes at `[addr, addr + buf.len())`, entirely or
    /// not at all.
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError>;

    /// Whether a read costs about what copying the bytes costs (no system
    /// call): then batching reads ahead of time does not pay, and callers
    /// read what they need when they need it. False unless a reader says so.
    fn reads_are_cheap(&self) -> bool {
        false
    }

    /// Called by a sampler at the start of each tick: the reader re-checks
    /// whatever its fast path relies on (the in-process reader: that its
    /// fault handler is still the installed one). Returns whether reads go
    /// through the fast path this tick; `false` means a fallback, which the
    /// sampler counts. Readers without a fast path say `true`.
    fn begin_tick(&self) -> bool {
        true
    }

    /// Called by a sampler at the end of each tick that
    /// [`MemoryReader::begin_tick`] began.
    fn end_tick(&self) {}

    /// Reads several ranges at once: `bufs[i]` from `addrs[i]`. Returns a
    /// bit per range (up to 64 ranges; bit `i` set: `bufs[i]` was filled),
    /// never failing as a whole, since callers use this to prefetch what
    /// they may need. A reader of a live process does it in one system
    /// call; the default reads one range at a time.
    fn read_vectored(&self, addrs: &[Addr], bufs: &mut [&mut [u8]]) -> u64 {
        let mut ok = 0u64;
        for (i, (addr, buf)) in addrs.iter().zip(bufs.iter_mut()).take(64).enumerate() {
            if self.read(*addr, buf).is_ok() {
                ok |= 1 << i;
            }
        }
        ok
    }
}

impl<R: MemoryReader + ?Sized> MemoryReader for &R {
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        (**self).read(addr, buf)
    }

    fn reads_are_cheap(&self) -> bool {
        (**self).reads_are_cheap()
    }

    fn begin_tick(&self) -> bool {
        (**self).begin_tick()
    }

    fn end_tick(&self) {
        (**self).end_tick()
    }

    fn read_vectored(&self, addrs: &[Addr], bufs: &mut [&mut [u8]]) -> u64 {
        (**self).read_vectored(addrs, bufs)
    }
}

/// Typed helpers over any [`MemoryReader`] (blanket-implemented).
pub trait ReadExt: MemoryReader {
    /// Reads a plain-data mirror (`#[repr(C)]`, every bit pattern valid, no
    /// padding) from `addr`. This is the only way foreign bytes become typed
    /// values: `zerocopy` checks at compile time that `T` accepts any bytes.
    fn read_pod<T: FromBytes + IntoBytes + KnownLayout + Immutable>(
        &self,
        addr: Addr,
    ) -> Result<T, MemError> {
        if addr.is_null() {
            return Err(MemError::Null);
        }
        let mut value = T::new_zeroed();
        self.read(addr, value.as_mut_bytes())?;
        Ok(value)
    }

    /// Reads a pointer-sized word at `addr` and returns it as an address.
    fn read_addr(&self, addr: Addr) -> Result<Addr, MemError> {
        self.read_pod::<u64>(addr).map(Addr)
    }

    /// Reads `len` bytes at `addr` into `out` (cleared first), refusing any
    /// `len > max` before allocating.
    fn read_bytes_bounded(
        &self,
        addr: Addr,
        len: u64,
        max: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), MemError> {
        if len > max {
            return Err(MemError::TooLong { len, max });
        }
        if addr.is_null() {
            return Err(MemError::Null);
        }
        addr.offset(len).ok_or(MemError::Overflow)?;
        let len = usize::try_from(len).map_err(|_| MemError::Overflow)?;
        out.clear();
        out.resize(len, 0);
        self.read(addr, out)
    }
}

impl<R: MemoryReader + ?Sized> ReadExt for R {}

// ---------------------------------------------------------------------------
// Snapshot

/// A memory image made of `(address, bytes)` regions.
///
/// Reads must fall entirely inside regions (adjacent regions join up); any
/// other read is [`MemError::Unmapped`]. Adding a region over existing ones
/// overwrites the overlapping bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotReader {
    regions: BTreeMap<u64, Vec<u8>>,
}

impl SnapshotReader {
    /// An empty snapshot: every read fails.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or overwrites) the bytes at `addr`.
    ///
    /// # Panics
    /// If the region would wrap around the end of the address space (a bug in
    /// the test that builds the snapshot).
    pub fn insert(&mut self, addr: Addr, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let start = addr.0;
        let end = start
            .checked_add(bytes.len() as u64)
            .expect("snapshot region must not wrap the address space");
        // Merge with every region that overlaps or touches [start, end).
        let mut new_start = start;
        let mut new_end = end;
        let touching: Vec<u64> = self
            .regions
            .range(..=end)
            .filter(|(s, b)| **s + b.len() as u64 >= start)
            .map(|(s, _)| *s)
            .collect();
        for s in &touching {
            let len = self.regions[s].len() as u64;
            new_start = new_start.min(*s);
            new_end = new_end.max(*s + len);
        }
        let mut merged = vec![0u8; (new_end - new_start) as usize];
        for s in touching {
            if let Some(old) = self.regions.remove(&s) {
                let at = (s - new_start) as usize;
                merged[at..at + old.len()].copy_from_slice(&old);
            }
        }
        let at = (start - new_start) as usize;
        merged[at..at + bytes.len()].copy_from_slice(bytes);
        self.regions.insert(new_start, merged);
    }

    /// The regions, in address order, after merging.
    pub fn regions(&self) -> impl Iterator<Item = (Addr, &[u8])> {
        self.regions.iter().map(|(a, b)| (Addr(*a), b.as_slice()))
    }

    /// Mutable access to the regions' bytes (their addresses stay fixed), for
    /// tests that corrupt a snapshot.
    pub fn regions_mut(&mut self) -> impl Iterator<Item = (Addr, &mut [u8])> {
        self.regions
            .iter_mut()
            .map(|(a, b)| (Addr(*a), b.as_mut_slice()))
    }

    /// Total number of bytes held.
    pub fn len(&self) -> usize {
        self.regions.values().map(Vec::len).sum()
    }

    /// Whether the snapshot holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }
}

/// Why bytes are not a serialized [`SnapshotReader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not start with [`SnapshotReader::MAGIC`].
    #[error("not a memory snapshot (bad magic)")]
    Magic,
    /// The bytes end inside a region.
    #[error("memory snapshot is truncated")]
    Truncated,
    /// A region wraps around the address space.
    #[error("memory snapshot region wraps the address space")]
    Wraps,
}

impl SnapshotReader {
    /// The first bytes of a serialized snapshot.
    pub const MAGIC: &'static [u8; 8] = b"ECHSNAP1";

    /// Serializes the snapshot: [`Self::MAGIC`], the region count, then
    /// each region as address, length (little-endian `u64`s) and bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.len() + 16 * self.regions.len());
        out.extend_from_slice(Self::MAGIC);
        out.extend_from_slice(&(self.regions.len() as u64).to_le_bytes());
        for (addr, bytes) in &self.regions {
            out.extend_from_slice(&addr.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Reads what [`Self::to_bytes`] wrote from the front of `data`;
    /// returns the snapshot and the bytes after it.
    pub fn from_bytes(data: &[u8]) -> Result<(Self, &[u8]), SnapshotError> {
        let rest = data.strip_prefix(Self::MAGIC).ok_or(SnapshotError::Magic)?;
        let (count, mut rest) = take_u64(rest)?;
        let mut snap = SnapshotReader::new();
        for _ in 0..count {
            let (addr, r) = take_u64(rest)?;
            let (len, r) = take_u64(r)?;
            let len = usize::try_from(len).map_err(|_| SnapshotError::Truncated)?;
            if r.len() < len {
                return Err(SnapshotError::Truncated);
            }
            addr.checked_add(len as u64).ok_or(SnapshotError::Wraps)?;
            snap.insert(Addr(addr), &r[..len]);
            rest = &r[len..];
        }
        Ok((snap, rest))
    }
}

fn take_u64(data: &[u8]) -> Result<(u64, &[u8]), SnapshotError> {
    if data.len() < 8 {
        return Err(SnapshotError::Truncated);
    }
    let (head, rest) = data.split_at(8);
    let mut b = [0u8; 8];
    b.copy_from_slice(head);
    Ok((u64::from_le_bytes(b), rest))
}

impl MemoryReader for SnapshotReader {
    fn reads_are_cheap(&self) -> bool {
        true
    }

    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        let unmapped = MemError::Unmapped {
            addr,
            len: buf.len(),
        };
        if buf.is_empty() {
            return Ok(());
        }
        let start = addr.0;
        let end = start
            .checked_add(buf.len() as u64)
            .ok_or(MemError::Overflow)?;
        // Regions are merged on insert, so one region covers the whole range
        // or the read fails.
        let (rs, bytes) = self.regions.range(..=start).next_back().ok_or(unmapped)?;
        let rend = rs + bytes.len() as u64;
        if end > rend {
            return Err(unmapped);
        }
        let at = (start - rs) as usize;
        buf.copy_from_slice(&bytes[at..at + buf.len()]);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Recording

/// Wraps a reader and records every successful read, to be replayed later
/// from [`RecordingReader::snapshot`].
#[derive(Debug)]
pub struct RecordingReader<R> {
    inner: R,
    seen: RefCell<SnapshotReader>,
}

impl<R: MemoryReader> RecordingReader<R> {
    /// Starts recording reads made through `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            seen: RefCell::new(SnapshotReader::new()),
        }
    }

    /// A snapshot of everything read so far.
    pub fn snapshot(&self) -> SnapshotReader {
        self.seen.borrow().clone()
    }

    /// Gives back the wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: MemoryReader> MemoryReader for RecordingReader<R> {
    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        self.inner.read(addr, buf)?;
        self.seen.borrow_mut().insert(addr, buf);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Live processes

/// Why a [`ProcessReader`] could not be set up. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// No process has this pid.
    #[error("no process with pid {pid}: check the pid (is the process still running?)")]
    NoSuchProcess {
        /// The pid asked for.
        pid: u32,
    },
    /// The kernel refused to let us read the process.
    #[error(
        "not permitted to read the memory of pid {pid}: run as root, or as the same user \
         with kernel.yama.ptrace_scope=0 (sysctl), or grant CAP_SYS_PTRACE"
    )]
    PermissionDenied {
        /// The pid asked for.
        pid: u32,
    },
    /// The pid does not fit the platform's `pid_t`.
    #[error("pid {pid} is out of range")]
    BadPid {
        /// The pid asked for.
        pid: u32,
    },
    /// Some other I/O error while probing the process.
    #[error("cannot read the memory of pid {pid}: {source}")]
    Io {
        /// The pid asked for.
        pid: u32,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

#[derive(Debug)]
enum Backend {
    VmReadv,
    ProcMem(File),
}

/// Reads a live process's memory by pid: another process (where mode, tests)
/// or the own one (`std::process::id()`, for in-process sampling).
///
/// Uses `process_vm_readv(2)`, which copies from the target's page tables and
/// fails with `EFAULT` on unmapped memory instead of faulting; where that
/// system call is not permitted (some container seccomp profiles), falls back
/// to positional reads of `/proc/<pid>/mem`, which fail with `EIO`.
#[derive(Debug)]
pub struct ProcessReader {
    pid: Pid,
    backend: Backend,
}

impl ProcessReader {
    /// A reader for the calling process. Its probe reads a static of this
    /// library: no `/proc/self/maps` to read (a forked child's sampler
    /// starts on the child's way).
    pub fn own() -> Result<Self, AttachError> {
        static PROBE: u8 = 0x45;
        Self::with_probe(std::process::id(), Addr(std::ptr::addr_of!(PROBE) as u64))
    }

    /// A reader for process `pid`. Probes access once, so that a permission
    /// problem is reported here with its remedy rather than on every read.
    pub fn new(pid: u32) -> Result<Self, AttachError> {
        Self::with_probe(pid, probe_address(pid)?)
    }

    /// [`ProcessReader::new`], probing at `probe` (an address readable in
    /// `pid`).
    fn with_probe(pid: u32, probe: Addr) -> Result<Self, AttachError> {
        let raw = i32::try_from(pid).map_err(|_| AttachError::BadPid { pid })?;
        let vm = Self {
            pid: Pid::from_raw(raw),
            backend: Backend::VmReadv,
        };
        let mut byte = [0u8; 1];
        match vm.read(probe, &mut byte) {
            Ok(()) => return Ok(vm),
            Err(MemError::NoProcess) => return Err(AttachError::NoSuchProcess { pid }),
            // EPERM from process_vm_readv may be a seccomp filter or Yama; try
            // /proc/<pid>/mem, which has its own checks.
            Err(_) => {}
        }
        let path = format!("/proc/{pid}/mem");
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => AttachError::NoSuchProcess { pid },
            io::ErrorKind::PermissionDenied => AttachError::PermissionDenied { pid },
            _ => AttachError::Io { pid, source: e },
        })?;
        let mem = Self {
            pid: Pid::from_raw(raw),
            backend: Backend::ProcMem(file),
        };
        match mem.read(probe, &mut byte) {
            Ok(()) => Ok(mem),
            Err(MemError::Denied) => Err(AttachError::PermissionDenied { pid }),
            Err(MemError::NoProcess) => Err(AttachError::NoSuchProcess { pid }),
            Err(e) => Err(AttachError::Io {
                pid,
                source: io::Error::other(e.to_string()),
            }),
        }
    }

    /// The pid being read.
    pub fn pid(&self) -> u32 {
        // A `Pid` built from a u32 that fit in i32 is non-negative.
        self.pid.as_raw().unsigned_abs()
    }

    /// Whether reads go through the `/proc/<pid>/mem` fallback.
    pub fn uses_proc_mem(&self) -> bool {
        matches!(self.backend, Backend::ProcMem(_))
    }
}

/// The start of the first readable mapping of `pid`, from `/proc/<pid>/maps`.
fn probe_address(pid: u32) -> Result<Addr, AttachError> {
    let maps =
        std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => AttachError::NoSuchProcess { pid },
            io::ErrorKind::PermissionDenied => AttachError::PermissionDenied { pid },
            _ => AttachError::Io { pid, source: e },
        })?;
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let start = range.split('-').next()?;
            perms
                .starts_with('r')
                .then(|| u64::from_str_radix(start, 16).ok())
                .flatten()
        })
        .next()
        .map(Addr)
        .ok_or_else(|| AttachError::Io {
            pid,
            source: io::Error::other("the process has no readable mapping"),
        })
}

fn errno_to_mem(e: Errno, addr: Addr, len: usize) -> MemError {
    match e {
        Errno::EFAULT | Errno::EIO | Errno::EINVAL => MemError::Unmapped { addr, len },
        Errno::EPERM | Errno::EACCES => MemError::Denied,
        Errno::ESRCH => MemError::NoProcess,
        other => MemError::Os(other as i32),
    }
}

impl MemoryReader for ProcessReader {
    /// One `process_vm_readv` for all ranges. The kernel stops at the first
    /// range it cannot read whole (transfers are done range by range), so
    /// the ranges after it are read again from there on, one call each
    /// time a range fails.
    fn read_vectored(&self, addrs: &[Addr], bufs: &mut [&mut [u8]]) -> u64 {
        let n = addrs.len().min(bufs.len()).min(64);
        if !matches!(self.backend, Backend::VmReadv) {
            let mut ok = 0u64;
            for i in 0..n {
                if self.read(addrs[i], bufs[i]).is_ok() {
                    ok |= 1 << i;
                }
            }
            return ok;
        }
        let mut ok = 0u64;
        let mut start = 0;
        // Fixed arrays: no allocation on the sampler's hot path.
        let mut remote = [RemoteIoVec { base: 0, len: 0 }; 64];
        while start < n {
            let mut count = 0;
            for (addr, buf) in addrs[start..n].iter().zip(bufs[start..n].iter()) {
                match usize::try_from(addr.0) {
                    Ok(base) if !addr.is_null() => {
                        remote[count] = RemoteIoVec {
                            base,
                            len: buf.len(),
                        };
                        count += 1;
                    }
                    _ => break,
                }
            }
            let done = if count == 0 {
                0
            } else {
                let mut local: [io::IoSliceMut<'_>; 64] =
                    std::array::from_fn(|_| io::IoSliceMut::new(&mut []));
                for (slot, buf) in local.iter_mut().zip(bufs[start..start + count].iter_mut()) {
                    *slot = io::IoSliceMut::new(buf);
                }
                process_vm_readv(self.pid, &mut local[..count], &remote[..count]).unwrap_or(0)
            };
            // Whole ranges transferred, in order.
            let mut left = done;
            let mut i = 0;
            while i < count && left >= remote[i].len {
                left -= remote[i].len;
                ok |= 1 << (start + i);
                i += 1;
            }
            // Skip the range that failed and go on after it.
            start += i + 1;
        }
        ok
    }

    fn read(&self, addr: Addr, buf: &mut [u8]) -> Result<(), MemError> {
        if buf.is_empty() {
            return Ok(());
        }
        if addr.is_null() {
            return Err(MemError::Null);
        }
        let len = buf.len();
        let end = addr.offset(len as u64).ok_or(MemError::Overflow)?;
        match &self.backend {
            Backend::VmReadv => {
                let base = usize::try_from(addr.0).map_err(|_| MemError::Overflow)?;
                let remote = [RemoteIoVec { base, len }];
                let mut local = [io::IoSliceMut::new(buf)];
                match process_vm_readv(self.pid, &mut local, &remote) {
                    Ok(n) if n == len => Ok(()),
                    // A short read means the range runs into an unmapped page.
                    Ok(_) => Err(MemError::Unmapped { addr, len }),
                    Err(e) => Err(errno_to_mem(e, addr, len)),
                }
            }
            Backend::ProcMem(file) => {
                // /proc/<pid>/mem takes the address as a file offset, which
                // must be a non-negative i64.
                if i64::try_from(end.0).is_err() {
                    return Err(MemError::Unmapped { addr, len });
                }
                let mut done = 0;
                while done < len {
                    match file.read_at(&mut buf[done..], addr.0 + done as u64) {
                        Ok(0) => return Err(MemError::Unmapped { addr, len }),
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
                            return Err(errno_to_mem(errno, addr, len));
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_inside_and_fails_outside() {
        let mut s = SnapshotReader::new();
        s.insert(Addr(0x1000), &[1, 2, 3, 4]);
        s.insert(Addr(0x1004), &[5, 6]);
        let mut buf = [0u8; 6];
        s.read(Addr(0x1000), &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 5, 6]);
        assert!(matches!(
            s.read(Addr(0x1003), &mut [0u8; 4]),
            Err(MemError::Unmapped { .. })
        ));
        assert!(s.read(Addr(0xfff), &mut [0u8; 1]).is_err());
        assert!(s.read(Addr(u64::MAX), &mut [0u8; 2]).is_err());
        assert_eq!(s.regions().count(), 1);
    }

    #[test]
    fn snapshot_overwrites() {
        let mut s = SnapshotReader::new();
        s.insert(Addr(0x10), &[0; 8]);
        s.insert(Addr(0x14), &[9; 8]);
        s.insert(Addr(0x8), &[7; 4]);
        assert_eq!(s.regions().count(), 2);
        let mut buf = [0u8; 12];
        s.read(Addr(0x10), &mut buf).unwrap();
        assert_eq!(buf, [0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9]);
    }

    #[test]
    fn pod_and_bounded_reads() {
        let mut s = SnapshotReader::new();
        s.insert(Addr(0x100), &0x1122_3344_5566_7788u64.to_ne_bytes());
        assert_eq!(
            s.read_addr(Addr(0x100)).unwrap(),
            Addr(0x1122_3344_5566_7788)
        );
        assert_eq!(s.read_pod::<u32>(Addr::NULL), Err(MemError::Null));
        let mut v = Vec::new();
        assert!(matches!(
            s.read_bytes_bounded(Addr(0x100), 1 << 40, 64, &mut v),
            Err(MemError::TooLong { .. })
        ));
        assert!(v.capacity() < 1024);
        s.read_bytes_bounded(Addr(0x100), 8, 64, &mut v).unwrap();
        assert_eq!(v.len(), 8);
    }

    #[test]
    fn own_process_reads_and_unmapped_is_an_error() {
        let r = ProcessReader::own().unwrap();
        let value: u64 = 0xdead_beef_cafe_f00d;
        let here = Addr(&value as *const u64 as u64);
        assert_eq!(r.read_pod::<u64>(here).unwrap(), value);
        // The first page is never mapped.
        assert!(matches!(
            r.read(Addr(8), &mut [0u8; 8]),
            Err(MemError::Unmapped { .. })
        ));
        // Nor is the top of the (non-canonical) address space.
        assert!(r.read(Addr(0xffff_0000_0000_0000), &mut [0u8; 8]).is_err());
    }

    #[test]
    fn snapshots_serialize() {
        let mut s = SnapshotReader::new();
        s.insert(Addr(0x1000), &[1, 2, 3]);
        s.insert(Addr(0x9000), &[9; 20]);
        let mut bytes = s.to_bytes();
        bytes.extend_from_slice(b"tail");
        let (back, rest) = SnapshotReader::from_bytes(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(rest, b"tail");
        assert_eq!(
            SnapshotReader::from_bytes(b"nope").unwrap_err(),
            SnapshotError::Magic
        );
        for cut in [9, 20, bytes.len() - 10] {
            assert_eq!(
                SnapshotReader::from_bytes(&bytes[..cut]).unwrap_err(),
                SnapshotError::Truncated,
                "{cut}"
            );
        }
    }

    #[test]
    fn recording_replays() {
        let mut s = SnapshotReader::new();
        s.insert(Addr(0x100), &[1, 2, 3, 4, 5, 6, 7, 8]);
        let rec = RecordingReader::new(&s);
        let mut b = [0u8; 2];
        rec.read(Addr(0x102), &mut b).unwrap();
        let snap = rec.snapshot();
        assert_eq!(snap.regions().count(), 1);
        assert!(snap.read(Addr(0x100), &mut b).is_err());
        snap.read(Addr(0x102), &mut b).unwrap();
        assert_eq!(b, [3, 4]);
    }

    #[test]
    fn missing_pid_is_a_clear_error() {
        // pid_max is at most 2^22 on Linux.
        let e = ProcessReader::new(0x7fff_fff0).unwrap_err();
        assert!(matches!(e, AttachError::NoSuchProcess { .. }), "{e}");
    }
}
