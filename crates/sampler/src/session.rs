//! A session: one CPython process, the reader its memory comes through,
//! where its `_PyRuntime` is and which layout reads it.
//!
//! A session is given its reader: the own process read with fault-guarded
//! loads (run mode, the `SIGQUIT` dump), another process by pid
//! ([`Session::attach`], where mode), or a memory snapshot (tests). Engines
//! made from it sample into any [`Sink`]; [`Session::dump`] takes the
//! picture where mode prints.
//!
//! The crate documentation shows a whole program that samples another
//! process by pid into a MOJO profile.

use echion_cpython_layout::linetable::LineTableError;
use echion_cpython_layout::process::{self, ProcessError};
use echion_cpython_layout::reader::AttachError;
use echion_cpython_layout::views::Target;
use echion_cpython_layout::{Addr, Layout, MemoryReader, ProcessReader, PyVersion};

use crate::codewatch::FreedCodes;
use crate::dump::Dump;
use crate::engine::{Engine, Mode, ThreadFilter};
use crate::pthread::TidOffset;
use crate::registry::{RegistryQueue, Update};
use crate::sink::Sink;

/// Why a session could not be set up. Each message names the problem and,
/// where there is one, what to do.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The process cannot be read (no such pid, no permission).
    #[error("{0}")]
    Attach(#[from] AttachError),
    /// The process is not a supported CPython.
    #[error("{0}")]
    Process(#[from] ProcessError),
    /// The line tables of this version are not known.
    #[error("unsupported line table format: {0:?}")]
    LineTable(LineTableError),
}

impl SessionError {
    /// Whether the process maps no file that defines a CPython runtime (a
    /// process that is not Python, or one caught before its `exec` of
    /// Python or before its loader mapped libpython).
    pub fn is_not_python(&self) -> bool {
        matches!(self, Self::Process(ProcessError::NotPython { .. }))
    }

    /// [`SessionError::is_not_python`], or a first read that failed at an
    /// address the process's map had just listed: a process caught in its
    /// `exec` (the old image's mappings go as the new one's come), which
    /// may be Python a moment later.
    pub fn may_be_starting(&self) -> bool {
        self.is_not_python() || matches!(self, Self::Attach(AttachError::Io { .. }))
    }
}

/// One CPython process and the reader of its memory.
#[derive(Debug)]
pub struct Session<R: MemoryReader> {
    reader: R,
    pid: u32,
    runtime: Addr,
    layout: &'static Layout,
    version: PyVersion,
    tid_offset: Option<TidOffset>,
}

impl Session<ProcessReader> {
    /// Another process (or this one) by pid, read from outside with
    /// `process_vm_readv`: nothing is injected and the process is never
    /// stopped, so it works while the process is stuck holding the GIL.
    pub fn attach(pid: u32) -> Result<Self, SessionError> {
        let reader = ProcessReader::new(pid)?;
        let mut session = Self::find(reader, pid)?;
        if session.layout.thread.native_thread_id.is_none() {
            // Before 3.11 only glibc knows a thread's kernel id. Where this
            // process's glibc keeps it is where the target's does if they
            // share the C library: kept only if it gives the main thread's
            // id (the pid) for one of the target's thread states.
            let offset = ProcessReader::own()
                .ok()
                .and_then(|own| TidOffset::find(&own));
            session.tid_offset = offset.filter(|&o| session.offset_fits(o));
        }
        Ok(session)
    }
}

impl<R: MemoryReader> Session<R> {
    /// A session over `reader` for a process whose runtime, layout and
    /// version the caller knows (in-process: `dlsym` and
    /// `sys.version_info`; a snapshot: what was recorded with it).
    pub fn new(
        reader: R,
        pid: u32,
        runtime: Addr,
        layout: &'static Layout,
        version: PyVersion,
    ) -> Self {
        Self {
            reader,
            pid,
            runtime,
            layout,
            version,
            tid_offset: None,
        }
    }

    /// A session over `reader` for process `pid`, finding `_PyRuntime` and
    /// the version from the process's mapped files.
    pub fn find(reader: R, pid: u32) -> Result<Self, SessionError> {
        let py = process::find_python(pid, &reader)?;
        let mut session = Self::new(reader, pid, py.runtime, py.layout, py.version);
        if py.layout.python.1 <= 10 {
            // Before 3.11 the binary does not always say its micro version:
            // the interpreter's `sys.version` does.
            if let Some(v) = session.sys_version() {
                if v.minor_pair() == py.version.minor_pair() {
                    session.version = v;
                }
            }
        }
        Ok(session)
    }

    /// Whether `offset` reads the pid as the kernel id of one of the main
    /// interpreter's thread states (its main thread).
    fn offset_fits(&self, offset: TidOffset) -> bool {
        let target = Target::new(&self.reader, self.layout);
        let Some(main) = target
            .interpreters(self.runtime)
            .filter_map(Result::ok)
            .find(|i| i.id == 0)
        else {
            return false;
        };
        target
            .threads(&main)
            .filter_map(Result::ok)
            .any(|t| offset.tid_of(&self.reader, t.thread_id) == Some(u64::from(self.pid)))
    }

    /// The version `sys.version` of the main interpreter gives, if it can
    /// be read.
    fn sys_version(&self) -> Option<PyVersion> {
        let target = Target::new(&self.reader, self.layout);
        let main = target
            .interpreters(self.runtime)
            .filter_map(Result::ok)
            .find(|i| i.id == 0)?;
        let sys = target.module(main.addr, "sys").ok()??;
        let text = target.module_global(sys, "version").ok()??;
        let mut version = String::new();
        target.read_str(text, &mut version).ok()?;
        let number = version.split_whitespace().next()?;
        let mut parts = number.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let micro: String = parts
            .next()?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some(PyVersion::new(major, minor, micro.parse().ok()?))
    }

    /// Says where `struct pthread` keeps the kernel tid (in-process, before
    /// 3.11; see [`TidOffset`]): engines made afterwards name threads that
    /// `threading` does not know by their native id.
    pub fn set_tid_offset(&mut self, offset: Option<TidOffset>) {
        self.tid_offset = offset;
    }

    /// The reader.
    pub fn reader(&self) -> &R {
        &self.reader
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The address of `_PyRuntime`.
    pub fn runtime(&self) -> Addr {
        self.runtime
    }

    /// The layout in use.
    pub fn layout(&self) -> &'static Layout {
        self.layout
    }

    /// The interpreter's version.
    pub fn version(&self) -> PyVersion {
        self.version
    }

    /// An engine sampling this process into `sink`.
    pub fn engine<S: Sink>(
        &self,
        mode: Mode,
        interval_ns: u64,
        sink: S,
    ) -> Result<Engine<'_, R, S>, SessionError> {
        let mut engine = Engine::new(
            &self.reader,
            self.layout,
            self.runtime,
            mode,
            interval_ns,
            sink,
        )
        .map_err(SessionError::LineTable)?;
        engine.set_tid_offset(self.tid_offset);
        Ok(engine)
    }

    /// The names `threading` gives the threads of every interpreter, read
    /// from the process's memory, as registry updates for an engine's tick
    /// (those of the main interpreter win when a thread runs in several).
    pub fn thread_names(&self) -> RegistryQueue {
        let queue = RegistryQueue::default();
        for update in self.name_updates() {
            queue.post(update);
        }
        queue
    }

    fn name_updates(&self) -> Vec<Update> {
        let target = Target::new(&self.reader, self.layout);
        let mut updates = Vec::new();
        // Interpreters are listed newest first: the main one comes last,
        // and its names are applied last.
        for interp in target.interpreters(self.runtime) {
            let Ok(interp) = interp else { break };
            if interp.id == 0 {
                asyncio_updates(&target, interp.addr, &mut updates);
            }
            for t in target.threading_names(interp.addr).unwrap_or_default() {
                updates.push(Update::Track {
                    thread_id: t.ident,
                    name: t.name,
                    native_id: t.native_id.unwrap_or(0),
                });
            }
        }
        updates
    }

    /// The address of the main interpreter's `sys.modules` (`id()` of it
    /// in the process), if it can be read: `echion -p` tells its bootstrap
    /// from code borrowed in a subinterpreter by it.
    pub fn main_modules(&self) -> Option<u64> {
        let target = Target::new(&self.reader, self.layout);
        let main = target
            .interpreters(self.runtime)
            .filter_map(Result::ok)
            .find(|i| i.id == 0)?;
        let modules = target.modules_dict(main.addr).ok()?;
        (!modules.is_null()).then_some(modules.0)
    }

    /// One stack of every thread state of every interpreter, named as
    /// `threading` names them, for where mode. A thread whose stack changes
    /// while it is read is read again (up to a few times); what could not
    /// be read whole is counted in the `unreadable` metadata.
    pub fn dump(&self) -> Result<Dump, SessionError> {
        self.dump_with(None)
    }

    /// [`Session::dump`], with native frames when given native stacks (of
    /// this process: see [`crate::native`]).
    pub(crate) fn dump_with(
        &self,
        mut native: Option<crate::native::NativeStacks>,
    ) -> Result<Dump, SessionError> {
        static NEVER_FREED: FreedCodes = FreedCodes::new();
        let updates = self.name_updates();
        let mut best: Option<(u64, Dump)> = None;
        for _ in 0..5 {
            let names = RegistryQueue::default();
            for u in &updates {
                names.post(u.clone());
            }
            let mut engine = self.engine(Mode::Wall, 1_000_000_000, Dump::new())?;
            engine.set_filter(ThreadFilter::Every);
            engine.set_every_task();
            if let Some(n) = native.take() {
                engine.set_native(n);
            }
            // A dump's sink only keeps what it is given: it cannot fail.
            let _ = engine.tick(crate::clock::now_ns(), &names, &NEVER_FREED);
            let stats = engine.stats();
            let missed = stats.skipped_total() + stats.interpreter_errors;
            native = engine.take_native();
            let dump = engine.into_sink();
            if best.as_ref().is_none_or(|(m, _)| missed < *m) {
                best = Some((missed, dump));
            }
            if missed == 0 {
                break;
            }
        }
        let (missed, mut dump) = best.unwrap_or_default();
        // CPython lists interpreters and threads newest first: a person
        // reads the main interpreter and its main thread first.
        dump.reverse_threads();
        if missed > 0 {
            let _ = Sink::metadata(&mut dump, "unreadable", &missed.to_string());
        }
        Ok(dump)
    }
}

/// What the asyncio hooks would tell an engine of the main interpreter,
/// read from memory instead: where asyncio keeps its tasks, and which
/// thread runs each event loop that has tasks (`BaseEventLoop._thread_id`;
/// uvloop keeps none, and its tasks are not shown from outside).
fn asyncio_updates<R: MemoryReader + ?Sized>(
    target: &Target<'_, R>,
    interp: Addr,
    updates: &mut Vec<Update>,
) {
    let Ok(Some(sets)) = target.asyncio_sets(interp) else {
        return;
    };
    updates.push(Update::AsyncioRoots {
        scheduled: sets.scheduled.0,
        eager: sets.eager.0,
        current: sets.current.0,
    });
    let mut refs = Vec::new();
    let _ = target.set_keys(sets.scheduled, 1 << 20, &mut |wr| {
        refs.push(wr);
        refs.len() < crate::tasks::MAX_TASKS
    });
    let mut loops: Vec<Addr> = Vec::new();
    let mut ty = String::new();
    for wr in refs {
        ty.clear();
        if target.type_name(wr, &mut ty).is_err() || !ty.starts_with("weakref") {
            continue;
        }
        let Ok(task) = target.weakref_target(wr) else {
            continue;
        };
        ty.clear();
        if target.type_name(task, &mut ty).is_err() || ty != "_asyncio.Task" {
            continue;
        }
        if let Ok(info) = target.task(task) {
            if !info.event_loop.is_null() && !loops.contains(&info.event_loop) && loops.len() < 64 {
                loops.push(info.event_loop);
            }
        }
    }
    for event_loop in loops {
        if let Ok(Some(thread_id)) = target.loop_thread_id(event_loop) {
            updates.push(Update::Loop {
                thread_id,
                event_loop: event_loop.0,
            });
        }
    }
}
