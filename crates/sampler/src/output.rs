//! The profile's file: which process of a family gets the name the user
//! gave, and opening it without ever making the program wait.
//!
//! The first process to sample under a name keeps it; every other one (a
//! forked or spawned child, a program image started by `exec`, a second run
//! while the first still writes) gets a name of its own beside it that says
//! its pid: `app.mojo` → `app.4242.mojo` (then `app.4242.2.mojo`, … if that
//! is taken). A process holds an exclusive `flock` on its file for as long
//! as it writes it; a regular file is taken over only if it is empty and not
//! locked (the `echion` command empties the file it was given before the
//! program starts), so two processes never write into one file.
//!
//! A FIFO is opened without blocking: with no reader the open fails at once
//! with [`OutputError::NoReader`] instead of stalling the program. Other
//! special files (`/dev/null`, a terminal) are shared by every process.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, Flock, FlockArg, OFlag};

/// The placeholder that each process replaces with its pid.
pub const PID_PLACEHOLDER: &str = "%(pid)";

/// How many derived names are tried before giving up.
const MAX_DERIVED: u32 = 1000;

/// Why the profile could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A FIFO with nothing reading it.
    #[error("cannot write the profile {0}: it is a FIFO with no reader (start the reader first)")]
    NoReader(PathBuf),
    /// Anything else the system said.
    #[error("cannot create the profile {path}: {source}")]
    Create {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The profile file of this process.
#[derive(Debug)]
pub struct Output {
    path: PathBuf,
    file: Handle,
    /// Where the last write that went through whole ended: past it, a
    /// write that failed may have left part of its bytes.
    whole: u64,
    /// Whether [`ROOM`] bytes past `whole` may be (or are) kept allocated:
    /// a regular file of this process's own, on a file system that can.
    room: bool,
    /// Where the space kept allocated ends (0: none yet).
    room_end: u64,
}

/// Disk space kept allocated past the end of the profile (`fallocate`,
/// the size unchanged), so that when the disk fills up a failed write,
/// once cut back, leaves room for the end metadata that says so.
const ROOM: u64 = 8192;

/// How far past the end space is asked for, at most, when the room runs
/// short: as far as the file is long (a file left by a process that never
/// gives its room back, ended by `os._exit` or a signal, keeps no more than
/// its own size), up to this. Most writes of a long profile (a flush every
/// 10 ms) then need no `fallocate` of their own.
const ROOM_AHEAD: u64 = 16 * ROOM;

#[derive(Debug)]
enum Handle {
    /// A file this process owns, locked for as long as it is open.
    Locked(Flock<File>),
    /// A special file every process of the family shares.
    Shared(File),
    /// Not opened yet: [`Output::deferred`]'s, opened by the first write
    /// (of the template, for the pid, with the permissions the umask gave
    /// when it was deferred; `None`, [`Output::at_first_write`]'s: the
    /// umask of that write).
    Deferred(PathBuf, u32, Option<u32>),
}

impl Output {
    /// Opens the profile of process `pid` for the path `template` (with
    /// [`PID_PLACEHOLDER`] replaced by `pid`), or a name derived from it
    /// when another process has the name (see the module doc).
    pub fn open(template: &Path, pid: u32) -> Result<Self, OutputError> {
        let plain = expand(template, pid);
        match claim(&plain)? {
            Some(file) => Ok(Output {
                path: plain,
                room: may_keep_room(&file),
                room_end: 0,
                file,
                whole: 0,
            }),
            None => {
                let pid_in_name = template.to_string_lossy().contains(PID_PLACEHOLDER);
                for n in 1..=MAX_DERIVED {
                    let path = derive(&plain, (!pid_in_name).then_some(pid), n);
                    match create_new(&path) {
                        Ok(file) => {
                            return Ok(Output {
                                path,
                                room: may_keep_room(&file),
                                room_end: 0,
                                file,
                                whole: 0,
                            })
                        }
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                        Err(source) => return Err(OutputError::Create { path, source }),
                    }
                }
                Err(OutputError::Create {
                    path: derive(&plain, (!pid_in_name).then_some(pid), MAX_DERIVED),
                    source: io::Error::new(io::ErrorKind::AlreadyExists, "too many profiles"),
                })
            }
        }
    }

    /// [`Output::open`] at the first write, not now: nothing is made on
    /// disk until there is something to write. A forked child that ends
    /// (by `os._exit`, a signal) before its first flush leaves no file
    /// instead of paying for making one: creating a file costs more than a
    /// fork (ext4, 100-300 us), and a fork loop's children live less. Until
    /// then [`Output::path`] is the name the template gives the pid (the
    /// file may get a derived one), and a flush is a no-op; the open's
    /// error, if any, is the first write's.
    ///
    /// The file is made as it would be now: a relative template is taken
    /// from the working directory of now, and the file gets the permissions
    /// the umask of now gives (a daemon's child may `chdir` or `umask(0)`
    /// before its first flush). To read the umask this sets it and sets it
    /// back: call it where no other thread makes files (a just-forked
    /// child). What cannot be kept is the right to make the file: a child
    /// that gives up its rights to the directory within the first 10 ms
    /// (`setuid` in a pre-fork server's worker) cannot make it, and its
    /// first write says so.
    pub fn deferred(template: &Path, pid: u32) -> Self {
        use nix::sys::stat::{umask, Mode};
        let template = match std::env::current_dir() {
            Ok(cwd) if template.is_relative() => cwd.join(template),
            _ => template.to_path_buf(),
        };
        let mask = umask(Mode::empty());
        umask(mask);
        Self::unopened(template, pid, Some(0o666 & !mask.bits()))
    }

    /// [`Output::open`] at the first write, like [`Output::deferred`], but
    /// as the process is now at that write (its working directory and
    /// umask, which are not read here: any thread may call it). For a
    /// write that follows at once: the file appears with it, or not at all
    /// (see [`Output::open_with`]), so a process killed in between (a
    /// pool's worker ended as it starts) leaves no empty file.
    pub fn at_first_write(template: &Path, pid: u32) -> Self {
        Self::unopened(template.to_path_buf(), pid, None)
    }

    /// An output its first write opens (see [`Handle::Deferred`]).
    fn unopened(template: PathBuf, pid: u32, mode: Option<u32>) -> Self {
        Output {
            path: expand(&template, pid),
            file: Handle::Deferred(template, pid, mode),
            whole: 0,
            room: false,
            room_end: 0,
        }
    }

    /// Whether the file is made: always but for a [`Output::deferred`] (or
    /// [`Output::at_first_write`]) output not written yet.
    pub fn is_open(&self) -> bool {
        !matches!(self.file, Handle::Deferred(..))
    }

    /// Opens a [`Output::deferred`] (or [`Output::at_first_write`]) output
    /// now (a no-op once open), with `first` in it.
    fn open_now(&mut self, first: &[u8]) -> io::Result<()> {
        if let Handle::Deferred(template, pid, mode) = &self.file {
            let opened =
                Output::open_with(template, *pid, *mode, first).map_err(io::Error::other)?;
            *self = opened;
        }
        Ok(())
    }

    /// [`Output::open`] for the first write of a [`Output::deferred`]
    /// output, `first` written. Made on the sampler's thread while the
    /// program may end at any moment (`os._exit`), the file appears under
    /// its name with `first` in it or not at all: written unnamed
    /// (`O_TMPFILE`), then linked. Where that cannot be done (no
    /// `O_TMPFILE` on the file system, no `/proc`; the name taken by a
    /// special file or an empty one to take over; a link refused), as
    /// [`Output::open`] does, then written: there a program that ends
    /// between the two may leave an empty file. `mode`: the new file's
    /// permissions.
    fn open_with(
        template: &Path,
        pid: u32,
        mode: Option<u32>,
        first: &[u8],
    ) -> Result<Self, OutputError> {
        let plain = expand(template, pid);
        if let Some(made) = Self::link_new(template, &plain, pid, mode, first)? {
            return Ok(made);
        }
        let mut out = Output::open(template, pid)?;
        out.write_all(first).map_err(|source| OutputError::Create {
            path: out.path.clone(),
            source,
        })?;
        Ok(out)
    }

    /// The `O_TMPFILE` way of [`Output::open_with`]; `None` where it cannot
    /// be taken.
    fn link_new(
        template: &Path,
        plain: &Path,
        pid: u32,
        mode: Option<u32>,
        first: &[u8],
    ) -> Result<Option<Self>, OutputError> {
        use nix::errno::Errno;
        use nix::fcntl::{AtFlags, AT_FDCWD};
        use std::os::fd::AsRawFd;
        let plain_taken = match std::fs::metadata(plain) {
            // A profile of its own (an earlier process's, with this pid):
            // a derived name.
            Ok(m) if m.is_file() && m.len() > 0 => true,
            // A special file, or an empty file to take over if unlocked.
            Ok(_) => return Ok(None),
            Err(_) => false,
        };
        let dir = match plain.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let Ok(file) = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o666)
            .open(dir)
        else {
            return Ok(None);
        };
        // The permissions of the umask the output was deferred under.
        // (None: the umask of now, which the open applied.)
        let chmod = |m| nix::sys::stat::fchmod(&file, nix::sys::stat::Mode::from_bits_truncate(m));
        if mode.is_some_and(|m| chmod(m).is_err()) {
            return Ok(None);
        }
        let Some(locked) = lock(file) else {
            return Ok(None);
        };
        let handle = Handle::Locked(locked);
        let mut out = Output {
            path: plain.to_path_buf(),
            room: may_keep_room(&handle),
            file: handle,
            whole: 0,
            room_end: 0,
        };
        out.write_all(first).map_err(|source| OutputError::Create {
            path: plain.to_path_buf(),
            source,
        })?;
        let unnamed = format!("/proc/self/fd/{}", out.file().expect("open").as_raw_fd());
        let pid_in_name = template.to_string_lossy().contains(PID_PLACEHOLDER);
        for n in u32::from(plain_taken)..=MAX_DERIVED {
            let path = match n {
                0 => plain.to_path_buf(),
                n => derive(plain, (!pid_in_name).then_some(pid), n),
            };
            match nix::unistd::linkat(
                AT_FDCWD,
                unnamed.as_str(),
                AT_FDCWD,
                &path,
                AtFlags::AT_SYMLINK_FOLLOW,
            ) {
                Ok(()) => {
                    out.path = path;
                    #[cfg(test)]
                    LINKED.with(|n| n.set(n.get() + 1));
                    return Ok(Some(out));
                }
                Err(Errno::EEXIST) => continue,
                // No /proc, a link refused (a sandbox, a file system that
                // has no links): the other way (what was written goes).
                Err(_) => return Ok(None),
            }
        }
        Err(OutputError::Create {
            path: derive(plain, (!pid_in_name).then_some(pid), MAX_DERIVED),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "too many profiles"),
        })
    }

    /// Creates (or empties) the file `path` for this process alone, locked:
    /// the MOJO file beside an output this process holds.
    pub fn create_beside(path: &Path) -> Result<Self, OutputError> {
        let err = |source| OutputError::Create {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(err)?;
        let file = match lock(file) {
            Some(locked) => Handle::Locked(locked),
            None => return Err(err(io::Error::other("another process writes it"))),
        };
        Ok(Output {
            path: path.to_path_buf(),
            room: may_keep_room(&file),
            room_end: 0,
            file,
            whole: 0,
        })
    }

    /// The file, to write a conversion into (a [`Output::deferred`] output
    /// is opened first).
    pub fn file_mut(&mut self) -> io::Result<&mut File> {
        self.open_now(&[])?;
        self.release_room();
        match &mut self.file {
            Handle::Locked(f) => Ok(f),
            Handle::Shared(f) => Ok(f),
            Handle::Deferred(..) => unreachable!("opened above"),
        }
    }

    /// The path written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file; `None` while a [`Output::deferred`] output is not open.
    fn file(&self) -> Option<&File> {
        match &self.file {
            Handle::Locked(f) => Some(f),
            Handle::Shared(f) => Some(f),
            Handle::Deferred(..) => None,
        }
    }

    /// Whether the file is still reachable under its path: `false` when it
    /// (or its directory) was removed while it was written, so that what
    /// was written is gone.
    pub fn still_there(&self) -> bool {
        let Some(Ok(mine)) = self.file().map(File::metadata) else {
            return true;
        };
        if !mine.is_file() {
            return true;
        }
        match std::fs::metadata(&self.path) {
            Ok(now) => mine.nlink() > 0 && now.dev() == mine.dev() && now.ino() == mine.ino(),
            Err(_) => false,
        }
    }

    /// After a write failed (a full disk, say): cuts the file back to where
    /// the last whole write ended (the end of an event: each write is a
    /// whole number of them), so that it stays readable to its last
    /// complete sample, then appends `tail` (the events that say what
    /// happened) if the room freed allows; if not, cuts it back again.
    /// Returns whether `tail` was written. Only for a regular file of this
    /// process's own: a FIFO or a shared special file is left as it is.
    pub fn recover(&mut self, tail: &[u8]) -> bool {
        use std::io::{Seek, SeekFrom};
        self.room = false;
        let Handle::Locked(locked) = &self.file else {
            return false;
        };
        let mut file: &File = locked;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return false;
        }
        if file.set_len(self.whole).is_err() || file.seek(SeekFrom::Start(self.whole)).is_err() {
            return false;
        }
        if file.write_all(tail).is_ok() {
            self.whole += tail.len() as u64;
            return true;
        }
        let _ = file.set_len(self.whole);
        false
    }

    /// Keeps [`ROOM`] bytes allocated past `end`, where the file is about
    /// to end: when less is kept, asks for as much as the file is long,
    /// between [`ROOM`] and [`ROOM_AHEAD`] (on a disk that has not that
    /// much, for [`ROOM`]). `Err` when the file system is full (the room is
    /// not there); a file system that cannot is not asked again.
    fn keep_room(&mut self, end: u64) -> io::Result<()> {
        if !self.room || end.saturating_add(ROOM) <= self.room_end {
            return Ok(());
        }
        let full = |e| matches!(e, nix::errno::Errno::ENOSPC | nix::errno::Errno::EDQUOT);
        let ahead = end.clamp(ROOM, ROOM_AHEAD);
        let asked = match self.allocate(end, ahead) {
            Err(e) if full(e) && ahead > ROOM => self.allocate(end, ROOM).map(|()| ROOM),
            other => other.map(|()| ahead),
        };
        match asked {
            Ok(len) => {
                self.room_end = end + len;
                Ok(())
            }
            Err(e) if full(e) => Err(e.into()),
            Err(_) => {
                self.room = false;
                Ok(())
            }
        }
    }

    /// `fallocate` of `len` bytes at `at`, the file's size unchanged.
    fn allocate(&self, at: u64, len: u64) -> nix::Result<()> {
        use nix::fcntl::{fallocate, FallocateFlags};
        let (Some(file), Ok(at), Ok(len)) = (self.file(), i64::try_from(at), i64::try_from(len))
        else {
            return Ok(());
        };
        fallocate(file, FallocateFlags::FALLOC_FL_KEEP_SIZE, at, len)
    }

    /// Gives back the space kept past the end (the file's end from now on
    /// may move by other means than [`Write`]).
    fn release_room(&mut self) {
        use nix::fcntl::{fallocate, FallocateFlags};
        if !std::mem::take(&mut self.room) {
            return;
        }
        if let Some(file) = self.file() {
            // Past the end the kept blocks may run into one more (the room
            // starts mid-block): punch a room more than was kept.
            let kept = self.room_end.saturating_sub(self.whole).max(ROOM);
            if let (Ok(at), Ok(len)) = (i64::try_from(self.whole), i64::try_from(kept + ROOM)) {
                let flags =
                    FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
                let _ = fallocate(file, flags, at, len);
            }
            // ext4 punches nothing past the end of the file; cutting the
            // file to its own size frees what was kept there.
            if file.metadata().is_ok_and(|m| m.len() == self.whole) {
                let _ = file.set_len(self.whole);
            }
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.release_room();
    }
}

impl Write for Output {
    /// Writes all of `buf` or fails: a write that went through whole ends
    /// where [`Output::recover`] may cut the file back to. A write after
    /// which the disk has no room left for the end metadata fails too
    /// (with `ENOSPC`), so that the cut gives that room back.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.is_open() {
            self.open_now(buf)?;
            return Ok(buf.len());
        }
        let mut file = self.file().expect("open");
        file.write_all(buf)?;
        let end = self.whole + buf.len() as u64;
        self.keep_room(end)?;
        self.whole = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file() {
            Some(mut file) => file.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Deferred outputs made unnamed and linked on this thread (the tests
    /// check that the atomic way was the one taken).
    static LINKED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// `template` with every [`PID_PLACEHOLDER`] replaced by `pid`.
pub fn expand(template: &Path, pid: u32) -> PathBuf {
    let text = template.to_string_lossy();
    if text.contains(PID_PLACEHOLDER) {
        PathBuf::from(text.replace(PID_PLACEHOLDER, &pid.to_string()))
    } else {
        template.to_path_buf()
    }
}

/// The `n`th name derived from `plain` for a process that does not get
/// `plain`: the pid (when `plain` does not already say it) and, from the
/// second on, `n`, inserted before the extension.
pub fn derive(plain: &Path, pid: Option<u32>, n: u32) -> PathBuf {
    let name = plain
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name.as_str(), ""),
    };
    let mut out = stem.to_owned();
    if let Some(pid) = pid {
        out.push_str(&format!(".{pid}"));
    }
    if n > 1 || pid.is_none() {
        out.push_str(&format!(".{n}"));
    }
    out.push_str(ext);
    plain.with_file_name(out)
}

/// Takes `path` for this process if nobody has it: `Ok(None)` when another
/// process does.
fn claim(path: &Path) -> Result<Option<Handle>, OutputError> {
    let err = |source| OutputError::Create {
        path: path.to_path_buf(),
        source,
    };
    for _ in 0..3 {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match create_new(path) {
                Ok(handle) => return Ok(Some(handle)),
                // Another process made it just now: look again.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err(e)),
            },
            Err(e) => return Err(err(e)),
        };
        let kind = meta.file_type();
        if kind.is_fifo() {
            let file = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ENXIO) => OutputError::NoReader(path.to_path_buf()),
                    _ => err(e),
                })?;
            let flags = fcntl(&file, FcntlArg::F_GETFL).map_err(|e| err(e.into()))?;
            let blocking = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
            fcntl(&file, FcntlArg::F_SETFL(blocking)).map_err(|e| err(e.into()))?;
            return Ok(lock(file).map(Handle::Locked));
        }
        if !kind.is_file() {
            let file = OpenOptions::new().write(true).open(path).map_err(err)?;
            return Ok(Some(Handle::Shared(file)));
        }
        let file = OpenOptions::new().write(true).open(path).map_err(err)?;
        let Some(locked) = lock(file) else {
            return Ok(None);
        };
        // Empty once locked: nobody has written it since it was emptied.
        let empty = locked.metadata().map(|m| m.len() == 0).map_err(err)?;
        return Ok(empty.then_some(Handle::Locked(locked)));
    }
    Ok(None)
}

/// Whether disk space may be kept past the end of `handle`'s file: a
/// regular file of this process's own.
fn may_keep_room(handle: &Handle) -> bool {
    matches!(handle, Handle::Locked(f) if f.metadata().is_ok_and(|m| m.is_file()))
}

/// Creates `path`, which must not exist, and locks it.
fn create_new(path: &Path) -> io::Result<Handle> {
    let file = OpenOptions::new().write(true).create_new(true).open(path)?;
    // Nobody else can have a new file open yet.
    lock(file)
        .map(Handle::Locked)
        .ok_or_else(|| io::Error::other("cannot lock a new file"))
}

/// An exclusive lock on `file`, or `None` when another process holds one.
fn lock(file: File) -> Option<Flock<File>> {
    Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()
}

/// Empties the profile at `path` for a new run, as the `echion` command does
/// before the program starts: a regular file that no running process holds
/// (see [`Output::open`]) is truncated; anything else is left alone.
/// Returns whether it was emptied.
pub fn reset(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() > 0 => {}
        _ => return false,
    }
    let Ok(file) = OpenOptions::new().write(true).open(path) else {
        return false;
    };
    match lock(file) {
        Some(locked) => locked.set_len(0).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn tmp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "echion-output-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        dir
    }

    #[test]
    fn room_is_kept_ahead_as_far_as_the_file_is_long_and_given_back() {
        use std::os::unix::fs::MetadataExt;
        let dir = tmp();
        let mut out = Output::open(&dir.join("p.mojo"), std::process::id()).unwrap();
        assert!(out.room, "a regular file of our own may keep room");
        out.write_all(&[1; 100]).unwrap();
        if !out.room {
            // This file system cannot keep room: nothing more to check.
            std::fs::remove_dir_all(&dir).unwrap();
            return;
        }
        // A short file keeps no more room than the end metadata needs.
        assert_eq!(out.room_end, 100 + ROOM);
        let allocated = |out: &Output| out.file().unwrap().metadata().unwrap().blocks() * 512;
        assert!(allocated(&out) >= 100 + ROOM);
        // A long one is kept room as far ahead as it is long, up to
        // ROOM_AHEAD.
        out.write_all(&vec![1; ROOM_AHEAD as usize]).unwrap();
        let first = out.room_end;
        assert_eq!(first, out.whole + ROOM_AHEAD);
        // Small writes (a flush every 10 ms) go on in the room kept: no
        // call of their own until less than ROOM is left past the end.
        let small = (ROOM_AHEAD - ROOM) / 512;
        for _ in 0..small {
            out.write_all(&[2; 512]).unwrap();
        }
        assert_eq!(out.room_end, first);
        out.write_all(&[3; 1024]).unwrap();
        assert!(out.room_end > first && out.room_end >= out.whole + ROOM);
        assert!(allocated(&out) >= out.whole + ROOM);
        // Given back at the end: what stays allocated is about the file.
        let size = out.whole;
        let path = out.path().to_path_buf();
        drop(out);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), size);
        assert!(
            meta.blocks() * 512 < size + ROOM,
            "{} blocks for {size} bytes",
            meta.blocks()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_deferred_output_appears_whole_at_its_first_write_or_never() {
        LINKED.with(|n| n.set(0));
        let dir = tmp();
        let name = dir.join("p.%(pid).mojo");
        // Nothing is written: no file.
        drop(Output::deferred(&name, 7));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let mut out = Output::deferred(&name, 8);
        assert!(!out.is_open());
        out.flush().unwrap();
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "a flush makes no file"
        );
        // The first write makes it with its bytes, locked, under its name.
        out.write_all(b"first").unwrap();
        assert!(out.is_open());
        assert_eq!(out.path(), dir.join("p.8.mojo"));
        assert_eq!(std::fs::read(out.path()).unwrap(), b"first");
        assert!(!reset(out.path()), "a file being written is not taken over");
        out.write_all(b" second").unwrap();
        assert!(out.still_there());
        drop(out);
        assert_eq!(
            std::fs::read(dir.join("p.8.mojo")).unwrap(),
            b"first second"
        );
        // An earlier process's profile under the name: a name of its own.
        let mut again = Output::deferred(&name, 8);
        again.write_all(b"x").unwrap();
        assert_eq!(again.path(), dir.join("p.8.1.mojo"));
        // The family's file (held and written by the parent): the pid in
        // the name.
        let family = dir.join("app.mojo");
        let mut parent = Output::open(&family, 1).unwrap();
        parent.write_all(b"parent").unwrap();
        let mut child = Output::deferred(&family, 9);
        child.write_all(b"child").unwrap();
        assert_eq!(child.path(), dir.join("app.9.mojo"));
        drop((parent, child));
        assert_eq!(LINKED.with(Cell::get), 3, "made unnamed and linked");
        // An empty file under the name (the echion command's): taken over,
        // as Output::open does.
        std::fs::write(dir.join("empty.mojo"), b"").unwrap();
        let mut takes = Output::deferred(&dir.join("empty.mojo"), 10);
        takes.write_all(b"mine").unwrap();
        assert_eq!(takes.path(), dir.join("empty.mojo"));
        drop(takes);
        assert_eq!(std::fs::read(dir.join("empty.mojo")).unwrap(), b"mine");
        assert_eq!(LINKED.with(Cell::get), 3, "taken over, not linked");
        // Made under the umask it was deferred under, whatever the umask
        // at the first write.
        {
            use nix::sys::stat::{umask, Mode};
            use std::os::unix::fs::PermissionsExt;
            let before = umask(Mode::from_bits_truncate(0o027));
            let mut out = Output::deferred(&dir.join("mode.mojo"), 12);
            umask(Mode::empty());
            out.write_all(b"x").unwrap();
            umask(before);
            let mode = std::fs::metadata(out.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o640);
            assert_eq!(LINKED.with(Cell::get), 4);
            // Made as the process is at the write (the umask of then),
            // unnamed and linked: never seen empty.
            let mut now = Output::at_first_write(&dir.join("now.%(pid).mojo"), 13);
            assert!(!dir.join("now.13.mojo").exists());
            let before = umask(Mode::from_bits_truncate(0o077));
            now.write_all(b"header").unwrap();
            umask(before);
            assert_eq!(now.path(), dir.join("now.13.mojo"));
            assert_eq!(std::fs::read(now.path()).unwrap(), b"header");
            let mode = std::fs::metadata(now.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert_eq!(LINKED.with(Cell::get), 5);
        }
        // Its directory gone: the first write says why, naming the path.
        let mut lost = Output::deferred(&dir.join("gone").join("p.mojo"), 11);
        let e = lost.write_all(b"x").unwrap_err();
        let inner = e.into_inner().unwrap().downcast::<OutputError>().unwrap();
        assert!(inner.to_string().contains("gone/p.mojo"), "{inner}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn derived_names_say_the_pid_before_the_extension() {
        let p = Path::new("/x/app.mojo");
        assert_eq!(derive(p, Some(42), 1), Path::new("/x/app.42.mojo"));
        assert_eq!(derive(p, Some(42), 2), Path::new("/x/app.42.2.mojo"));
        assert_eq!(derive(Path::new("out"), Some(7), 1), Path::new("out.7"));
        assert_eq!(derive(Path::new(".prof"), Some(7), 1), Path::new(".prof.7"));
        // The pid is in the name already: a number tells them apart.
        assert_eq!(
            derive(Path::new("p.42.mojo"), None, 1),
            Path::new("p.42.1.mojo")
        );
        assert_eq!(expand(Path::new("p.%(pid).mojo"), 9), Path::new("p.9.mojo"));
    }

    #[test]
    fn the_first_process_keeps_the_name_the_others_get_their_own() {
        let dir = tmp();
        let name = dir.join("app.mojo");
        let mut first = Output::open(&name, 100).expect("first");
        assert_eq!(first.path(), name);
        first.write_all(b"MOJ").expect("write");
        // Another process (same pid or not) while the first holds it.
        let second = Output::open(&name, 101).expect("second");
        assert_eq!(second.path(), dir.join("app.101.mojo"));
        let third = Output::open(&name, 101).expect("third");
        assert_eq!(third.path(), dir.join("app.101.2.mojo"));
        drop(first);
        // Written and no longer held: still not taken over.
        let fourth = Output::open(&name, 100).expect("fourth");
        assert_eq!(fourth.path(), dir.join("app.100.mojo"));
        // Emptied for a new run: the name is free again.
        drop(fourth);
        assert!(reset(&name));
        let fifth = Output::open(&name, 102).expect("fifth");
        assert_eq!(fifth.path(), name);
        assert!(!reset(&name), "held by a running process");
        assert!(fifth.still_there());
        std::fs::remove_dir_all(&dir).expect("clean");
        assert!(!fifth.still_there(), "its directory was removed");
    }

    #[test]
    fn pid_templates_expand_and_a_second_image_gets_a_number() {
        let dir = tmp();
        let template = dir.join("p.%(pid).mojo");
        let mut a = Output::open(&template, 5).expect("a");
        assert_eq!(a.path(), dir.join("p.5.mojo"));
        a.write_all(b"x").expect("write");
        drop(a);
        let b = Output::open(&template, 5).expect("b");
        assert_eq!(b.path(), dir.join("p.5.1.mojo"));
        std::fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn a_fifo_without_reader_fails_at_once() {
        let dir = tmp();
        let fifo = dir.join("f");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let t0 = std::time::Instant::now();
        let err = Output::open(&fifo, 1).expect_err("no reader");
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
        assert!(matches!(err, OutputError::NoReader(_)), "{err}");
        assert!(err.to_string().contains("no reader"), "{err}");
        // With a reader it opens, and blocks like a pipe afterwards.
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .expect("reader");
        let mut out = Output::open(&fifo, 1).expect("with a reader");
        out.write_all(b"MOJ").expect("write");
        drop(reader);
        std::fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn special_files_are_shared() {
        let a = Output::open(Path::new("/dev/null"), 1).expect("a");
        let b = Output::open(Path::new("/dev/null"), 2).expect("b");
        assert_eq!(a.path(), b.path());
        assert!(a.still_there());
    }
}
