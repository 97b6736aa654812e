//! The kernel id of a thread known only by its `pthread_t`.
//!
//! Before 3.11 a thread state has no `native_thread_id`, only `thread_id`
//! (`pthread_self()`), which with glibc is the address of the thread's
//! `struct pthread`; that structure holds the kernel tid at an offset that
//! depends on the glibc build. [`TidOffset::find`] learns the offset in this
//! process by looking, in the structures of two threads whose tids it knows,
//! for the one position that holds each thread's own tid. Reading that
//! position through a [`MemoryReader`] then gives the tid of any thread of
//! the process, so that threads `threading` does not know (started with
//! `_thread`, or by C code) are named by their native id and measured in CPU
//! mode on every version.

use echion_cpython_layout::{Addr, MemoryReader};
use nix::sys::pthread::pthread_self;
use nix::unistd::gettid;

/// How far into `struct pthread` the tid is looked for (glibc keeps it in
/// the first few hundred bytes on every release and architecture).
const SEARCH_BYTES: usize = 2048;

/// Where the kernel tid lives in this process's `struct pthread`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TidOffset(u64);

impl TidOffset {
    /// Learns the offset from the calling thread and one short-lived helper
    /// thread; `None` when no single position holds both tids (a C library
    /// that is not glibc-like, or memory that cannot be read).
    pub fn find<R: MemoryReader + ?Sized>(reader: &R) -> Option<Self> {
        let me = (pthread_self() as u64, gettid().as_raw());
        let mine = read_struct(reader, me.0)?;
        let candidates = tid_positions(&mine, me.1);
        // The helper stays alive until its structure has been read: the
        // memory of an ended thread may be unmapped.
        let (ids_tx, ids_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::Builder::new()
            .name("echion-probe".into())
            .spawn(move || {
                let _ = ids_tx.send((pthread_self() as u64, gettid().as_raw()));
                let _ = done_rx.recv();
            })
            .ok()?;
        let other = ids_rx.recv().ok();
        let theirs = other.and_then(|(pthread, _)| read_struct(reader, pthread));
        let _ = done_tx.send(());
        let _ = helper.join();
        let (other, theirs) = (other?, theirs?);
        let both: Vec<usize> = candidates
            .into_iter()
            .filter(|&off| value_at(&theirs, off) == Some(other.1))
            .collect();
        match both[..] {
            [off] => Some(TidOffset(off as u64)),
            _ => None,
        }
    }

    /// An offset known by other means (tests).
    pub fn at(offset: u64) -> Self {
        TidOffset(offset)
    }

    /// The kernel tid of the thread whose `pthread_t` is `thread_id`, or
    /// `None` when it cannot be read or is not a plausible tid.
    pub fn tid_of<R: MemoryReader + ?Sized>(self, reader: &R, thread_id: u64) -> Option<u64> {
        let mut b = [0u8; 4];
        reader
            .read(Addr(thread_id.checked_add(self.0)?), &mut b)
            .ok()?;
        let tid = i32::from_ne_bytes(b);
        (tid > 0).then_some(tid as u64)
    }
}

/// The first bytes of the `struct pthread` at `addr`: as many of
/// [`SEARCH_BYTES`] as are mapped (the structure may end its mapping).
fn read_struct<R: MemoryReader + ?Sized>(reader: &R, addr: u64) -> Option<Vec<u8>> {
    let mut len = SEARCH_BYTES;
    while len >= 256 {
        let mut buf = vec![0u8; len];
        if reader.read(Addr(addr), &mut buf).is_ok() {
            return Some(buf);
        }
        len /= 2;
    }
    None
}

/// The 4-aligned offsets of `bytes` that hold `tid` as a native `i32`.
fn tid_positions(bytes: &[u8], tid: i32) -> Vec<usize> {
    (0..bytes.len() / 4)
        .map(|i| i * 4)
        .filter(|&off| value_at(bytes, off) == Some(tid))
        .collect()
}

fn value_at(bytes: &[u8], off: usize) -> Option<i32> {
    let b = bytes.get(off..off + 4)?;
    Some(i32::from_ne_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use echion_cpython_layout::reader::ProcessReader;

    #[test]
    fn finds_the_tid_of_other_threads() {
        let reader = ProcessReader::own().expect("own memory");
        let offset = TidOffset::find(&reader).expect("glibc keeps the tid in struct pthread");
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send((pthread_self() as u64, gettid().as_raw() as u64))
                .expect("send");
            done_rx.recv().ok();
        });
        let (pthread, tid) = rx.recv().expect("recv");
        assert_eq!(offset.tid_of(&reader, pthread), Some(tid));
        assert_eq!(
            offset.tid_of(&reader, pthread_self() as u64),
            Some(gettid().as_raw() as u64)
        );
        done_tx.send(()).expect("send");
        t.join().expect("join");
        assert_eq!(offset.tid_of(&reader, 8), None, "unmapped memory");
    }

    #[test]
    fn positions_are_aligned_matches() {
        let mut b = vec![0u8; 16];
        b[4..8].copy_from_slice(&77i32.to_ne_bytes());
        b[9..13].copy_from_slice(&77i32.to_ne_bytes());
        assert_eq!(tid_positions(&b, 77), [4]);
        assert_eq!(value_at(&b, 14), None);
    }
}
