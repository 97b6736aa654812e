//! `echion -p PID`: profile a process that is already running, then leave
//! it as it was.
//!
//! The command makes a control directory (`options`, `status`, the
//! `control` FIFO it holds open), has the process run the bootstrap's
//! `attach_entry.py` at a safe point ([`echion_inject`]), and follows the
//! status lines the process writes. Ctrl-C (or `SIGTERM`, `SIGHUP`), the
//! exposure time, or the end of the command however it ends (the FIFO's
//! end of file) makes the process detach; the process's exit ends the
//! profile too.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use echion_inject::{age, alive, Calls, Injection, Target};
use echion_sampler::options::Options;
use std::os::unix::fs::MetadataExt;

use echion_sampler::{Mode, Session};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode as FileMode;

use crate::config::{expand_pid, Config};
use crate::error::CliError;

/// How long the process may take to reach a safe point.
const SAFE_POINT_PATIENCE: Duration = Duration::from_secs(3);
/// How long the attach keeps trying when the bootstrap finds each moment
/// it was given a bad one (a subinterpreter, an import under way).
const LATER_PATIENCE: Duration = Duration::from_secs(10);
/// The pause before the process is borrowed again after a `later`.
const LATER_PAUSE: Duration = Duration::from_millis(10);
/// How long the bootstrap may take once it runs (imports, first sample).
const START_PATIENCE: Duration = Duration::from_secs(30);
/// How long the process may take to detach.
const DETACH_PATIENCE: Duration = Duration::from_secs(15);

/// Attaches to `config.attach_pid` with the bootstrap in `bootstrap_dir`,
/// profiles until asked to stop, detaches. Returns the exit status.
pub(crate) fn run(config: &Config, bootstrap_dir: &Path) -> Result<i32, CliError> {
    let pid = config.attach_pid.expect("attach mode has a pid");
    let fail = |reason: String| CliError::Attach { pid, reason };
    if pid == std::process::id() {
        return Err(fail("that is echion itself".to_owned()));
    }
    let proc_dir = format!("/proc/{pid}");
    let existed = Path::new(&proc_dir).exists();
    if existed && !alive(pid) {
        return Err(fail("the process has exited".to_owned()));
    }
    // Is it a CPython echion can read? (Also the clearest message for no
    // such process, no permission, not Python, an unsupported version.)
    // A process that exits meanwhile fails these reads: said as such,
    // whether it is still a zombie or already reaped by its parent.
    let gone = |e: String| {
        if existed && (!Path::new(&proc_dir).exists() || !alive(pid)) {
            fail("the process exited during the attach".to_owned())
        } else {
            fail(e)
        }
    };
    // (Looked at again while the process is young and not Python yet:
    // see [`START_GRACE`].)
    let session = loop {
        match Session::attach(pid) {
            Err(e) if e.may_be_starting() && age(pid).is_some_and(|a| a < START_GRACE) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other,
        }
    }
    .map_err(|e| gone(e.to_string()))?;
    let temp = std::env::temp_dir();
    let entry_file = bootstrap_dir.join("attach_entry.py");
    let output_dir = PathBuf::from(output_path(config, pid));
    let output_dir = output_dir.parent().unwrap_or(Path::new("/"));
    if let Some(why) = elsewhere(pid, &[&temp, &entry_file, output_dir]) {
        return Err(fail(why));
    }
    let version = session.version();
    let main_modules = session.main_modules().unwrap_or(0);
    let pending_finishing = session
        .layout()
        .runtime
        .pending_finishing
        .map(|off| session.runtime().0 + off);
    drop(session);
    let entry = bootstrap_dir.join("attach_entry.py");
    if !entry.is_file() {
        return Err(fail(format!("{} is missing", entry.display())));
    }
    let mut target = Target::open(pid).map_err(|e| gone(e.to_string()))?;
    if let Some(addr) = pending_finishing {
        target.set_pending_finishing(addr);
    }

    let signals = block_signals().map_err(|e| fail(format!("cannot handle signals: {e}")))?;
    let control = ControlDir::create(pid, fs_uid(pid))
        .map_err(|e| fail(format!("cannot make the control directory: {e}")))?;
    let output = output_path(config, pid);
    control
        .write_options(&options(config, &output))
        .map_err(|e| fail(format!("cannot write the options: {e}")))?;
    if !output.contains(crate::config::PID_PLACEHOLDER) {
        echion_sampler::output::reset(Path::new(&output));
    }
    let source = entry_source(&entry, &control.dir, main_modules)
        .ok_or_else(|| fail("the paths are not UTF-8".to_owned()))?;

    let began = Instant::now();
    let injection = target
        .inject(&source, SAFE_POINT_PATIENCE)
        .map_err(|e| fail(e.to_string()))?;
    if config.verbose {
        eprintln!(
            "echion: pid {pid} (CPython {version}): thread {} borrowed for {} after {} retries, stopped {} us",
            injection.tid,
            match injection.calls {
                Calls::Directly => "a direct run",
                Calls::PendingCall => "a pending call",
            },
            injection.retries,
            injection.stopped.as_micros()
        );
    }
    let mut session = Attached {
        pid,
        target,
        injection,
        source,
        control,
        signals,
        status: StatusReader::default(),
    };
    session.follow(config, began, &output)
}

/// How long after its start a process that does not look like CPython yet
/// is looked at again: `python app.py & echion -p $!` may look between the
/// shell's fork and its `exec` of Python, during the `exec` (a first read
/// fails where the map said the old image was), or before the loader has mapped
/// libpython (a `subprocess.Popen` returns before the new program is
/// mapped). An interpreter found but not started yet is the injection's to
/// wait for.
const START_GRACE: Duration = Duration::from_secs(2);

/// The absolute output path with `%(pid)` as the target's pid.
fn output_path(config: &Config, pid: u32) -> String {
    let out = expand_pid(&config.output, pid);
    let path = Path::new(&out);
    if path.is_relative() {
        if let Ok(cwd) = std::env::current_dir() {
            return cwd.join(path).to_string_lossy().into_owned();
        }
    }
    out
}

/// The options the attached process runs with (the exposure is the
/// command's to keep).
fn options(config: &Config, output: &str) -> Options {
    Options {
        interval: Duration::from_micros(config.interval_us),
        mode: if config.cpu { Mode::Cpu } else { Mode::Wall },
        exposure: None,
        output: output.to_owned(),
        memory: config.memory,
        native: config.native,
        stealth: config.stealth,
        no_thread: false,
        verbose: config.verbose,
        format: config.format.map(|f| f.name().to_owned()),
        summary: config.summary,
        direct_reads: true,
    }
}

/// Why process `pid` cannot see the files echion would hand it, if it
/// cannot: each of `paths` (the directory the control directory goes in,
/// the bootstrap's entry file, the profile's directory) must be the same
/// file through `/proc/<pid>/root`, which the kernel resolves in the
/// target's own mount namespace and root directory. A container or a
/// service with a private `/tmp` fails this; a service whose namespace
/// only makes other parts read-only does not. Else the attach would be
/// retried until it gave up, each try stopping the program for nothing.
/// A process whose root cannot be resolved at all is not said to be
/// elsewhere: it is exiting (its files and root go before it is a
/// zombie), which the attach's next steps report as such.
fn elsewhere(pid: u32, paths: &[&Path]) -> Option<String> {
    let id = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let unseen = paths.iter().find(|path| {
        let (Some(ours), Ok(rel)) = (id(path), path.strip_prefix("/")) else {
            return false;
        };
        match id(&root.join(rel)) {
            Some(theirs) => theirs != ours,
            // (Looked at after the path: a process that exits meanwhile
            // is not taken for one in a container.)
            None => std::fs::metadata(&root).is_ok(),
        }
    })?;
    // (Its pid as its own pid namespace numbers it: what `echion -p`
    // inside that namespace takes.)
    let inner = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|ids| ids.split_whitespace().last().map(str::to_owned))
        })
        .unwrap_or_else(|| pid.to_string());
    Some(format!(
        "it does not see {} as echion does (another mount namespace or root directory: a \
         container?): run echion where it runs (e.g. `nsenter -t {pid} -m -p -r echion -p {inner}`, \
         with echion installed there)",
        unseen.display()
    ))
}

/// The Python source the process runs: the entry file, executed in a
/// namespace of its own, so that nothing is bound in `__main__`. Nothing
/// but the program's own Ctrl-C gets out (a pending call that fails would
/// raise in the program); any other failure is written to the status file.
/// Each file it opens is closed as soon as it is read or written (through
/// a lambda, which binds no name): one left to the collector would warn
/// (`ResourceWarning`) in a program run with `-X dev` or `-W error`.
fn entry_source(entry: &Path, control: &Path, main_modules: u64) -> Option<String> {
    let e = py_literal(entry.to_str()?);
    let c = py_literal(control.to_str()?);
    let b = "__import__('builtins')";
    Some(format!(
        "try:\n {b}.exec({b}.compile((lambda f:(f.read(),f.close())[0])(__import__('io').open_code({e})),{e},'exec'),\
         {{'__name__':'__echion_attach__','__file__':{e},'CONTROL':{c},'MAIN_MODULES':{main_modules}}})\n\
         except KeyboardInterrupt:\n raise\n\
         except BaseException:\n try:\n  (lambda f:(f.write('error: %r\\n'%(__import__('sys').exc_info()[1],)),f.close()))({b}.open({c}+'/status','a'))\n \
         except BaseException:\n  pass\n"
    ))
}

/// `text` as a Python string literal.
fn py_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c if c.is_control() => out.push_str(&format!("\\U{:08x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Blocks the signals that end an attach, to read them from a signalfd.
fn block_signals() -> nix::Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// The control directory of one attach, removed when dropped.
struct ControlDir {
    dir: PathBuf,
    /// The FIFO, held open read-write: its end of file (when this process
    /// ends, however) tells the target to detach.
    fifo: File,
}

impl ControlDir {
    /// Makes the directory for a target whose files are accessed as user
    /// `uid` (its fsuid; `None`: as ours).
    fn create(pid: u32, uid: Option<u32>) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("echion-attach-{pid}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir)?;
        // The target may run as another user: it reads the directory and
        // the options, and writes the status file and the FIFO, which are
        // its own (nobody else's to write).
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        let status = dir.join("status");
        File::create(&status)?;
        fs::set_permissions(&status, fs::Permissions::from_mode(0o600))?;
        let fifo_path = dir.join("control");
        nix::unistd::mkfifo(&fifo_path, FileMode::from_bits_truncate(0o600))
            .map_err(std::io::Error::from)?;
        let mut fifo = File::options().read(true).write(true).open(&fifo_path)?;
        // The target's bootstrap reads this byte before it starts: it is
        // there only while this process holds the FIFO (see `attach.run`).
        fifo.write_all(b"h")?;
        if let Some(uid) = uid.filter(|&u| u != nix::unistd::geteuid().as_raw()) {
            let owner = Some(nix::unistd::Uid::from_raw(uid));
            for path in [&status, &fifo_path] {
                nix::unistd::chown(path, owner, None).map_err(std::io::Error::from)?;
            }
        }
        Ok(ControlDir { dir, fifo })
    }

    fn write_options(&self, options: &Options) -> std::io::Result<()> {
        let mut text = String::new();
        for (k, v) in options.to_env() {
            if v.contains('\n') {
                return Err(std::io::Error::other(format!("{k} holds a newline")));
            }
            text.push_str(&format!("{k}={v}\n"));
        }
        let path = self.dir.join("options");
        fs::write(&path, text)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
    }

    fn ask_to_detach(&mut self) {
        let _ = self.fifo.write_all(b"q");
    }
}

impl Drop for ControlDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Reads the status lines the target appends.
#[derive(Default)]
struct StatusReader {
    offset: u64,
    partial: String,
}

impl StatusReader {
    fn lines(&mut self, dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(mut f) = File::open(dir.join("status")) else {
            return out;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return out;
        }
        let mut text = String::new();
        if let Ok(n) = f.read_to_string(&mut text) {
            self.offset += n as u64;
        }
        self.partial.push_str(&text);
        while let Some(i) = self.partial.find('\n') {
            out.push(self.partial[..i].to_owned());
            self.partial.drain(..=i);
        }
        out
    }
}

/// One attach under way.
struct Attached {
    pid: u32,
    target: Target,
    injection: Injection,
    /// What the process runs (again, after a `later`).
    source: String,
    control: ControlDir,
    signals: SignalFd,
    status: StatusReader,
}

impl Attached {
    fn fail(&self, reason: String) -> CliError {
        CliError::Attach {
            pid: self.pid,
            reason,
        }
    }

    /// Waits up to 20 ms for a signal; returns it if one came.
    fn wait_signal(&mut self) -> Option<Signal> {
        let ready = {
            let mut fds = [PollFd::new(
                std::os::fd::AsFd::as_fd(&self.signals),
                PollFlags::POLLIN,
            )];
            poll(&mut fds, PollTimeout::from(20u16)).unwrap_or(0) > 0
        };
        if !ready {
            return None;
        }
        match self.signals.read_signal() {
            Ok(Some(info)) => Signal::try_from(info.ssi_signo as i32).ok(),
            _ => None,
        }
    }

    fn follow(&mut self, config: &Config, began: Instant, output: &str) -> Result<i32, CliError> {
        let pid = self.pid;
        // 1. Until the bootstrap runs, then until it has started.
        let mut running = false;
        let mut deadline_run = Instant::now() + SAFE_POINT_PATIENCE;
        let mut deadline_start = Instant::now() + SAFE_POINT_PATIENCE + START_PATIENCE;
        let deadline_later = Instant::now() + LATER_PATIENCE;
        let mut later: Option<String> = None;
        // The source returned without writing a status (seen once).
        let mut silent = false;
        let first_sample = loop {
            let mut started = false;
            let mut again = false;
            for line in self.status.lines(&self.control.dir) {
                if let Some(why) = line.strip_prefix("later: ") {
                    // The bootstrap found a moment it must not start in,
                    // and did nothing: the process is borrowed again.
                    again = true;
                    later = Some(why.to_owned());
                } else if line == "running" {
                    running = true;
                } else if line == format!("started {pid}") {
                    started = true;
                } else if line == "stopped" {
                    // The program stopped echion before its first sample:
                    // at its exit (atexit), as it was attached to.
                    return self.stopped_early(output);
                } else if line == "exiting" {
                    // Its exit has begun (atexit handlers): a run started
                    // now would never be stopped.
                    self.cleanup();
                    return Err(self.fail(
                        "the program is exiting (its atexit handlers run); nothing was left \
                         running in it"
                            .to_owned(),
                    ));
                } else if line == "busy" {
                    self.cleanup();
                    return Err(self.fail("it is already being profiled by echion".to_owned()));
                } else if let Some(reason) = line.strip_prefix("error: ") {
                    self.cleanup();
                    return Err(self.fail(format!("echion could not start in it: {reason}")));
                }
            }
            if started {
                break began.elapsed();
            }
            if !running && self.target.exiting(&self.injection) {
                // Borrowed as its interpreter was finalizing: asked
                // nothing, it ends as it would have.
                self.cleanup();
                return Err(self.fail(
                    "the process exited during the attach (its interpreter was already \
                     finalizing); nothing was left running in it"
                        .to_owned(),
                ));
            }
            if !again && !running && self.target.ran_elsewhere(&self.injection) {
                // The pending call came while the main thread ran a
                // subinterpreter (3.8): it did not run there.
                again = true;
                later = Some("the thread runs a subinterpreter".to_owned());
            }
            if !again && !running && self.target.returned(&self.injection) {
                // The source ran and returned without a word (twice
                // looked at: its status may land between the two reads):
                // it could not run to its end. As for "later": borrowed
                // again.
                if silent {
                    again = true;
                    later = Some("the bootstrap ran but could not run to its end".to_owned());
                } else {
                    silent = true;
                }
            }
            if again {
                silent = false;
                self.cleanup();
                if Instant::now() >= deadline_later {
                    return Err(self.fail(format!(
                        "for {} s it was never at a moment where echion can start (the last one: \
                         {}); nothing was left running in it",
                        LATER_PATIENCE.as_secs(),
                        later.as_deref().unwrap_or("?")
                    )));
                }
                std::thread::sleep(LATER_PAUSE);
                match self.target.inject(&self.source, SAFE_POINT_PATIENCE) {
                    Ok(injection) => self.injection = injection,
                    Err(e) => return Err(self.fail(e.to_string())),
                }
                deadline_run = Instant::now() + SAFE_POINT_PATIENCE;
                deadline_start = Instant::now() + SAFE_POINT_PATIENCE + START_PATIENCE;
                continue;
            }
            if !alive(pid) {
                return Err(self.fail("the process exited during the attach".to_owned()));
            }
            if let Some(sig) = self.wait_signal() {
                self.give_up();
                return Err(self.fail(format!("interrupted ({sig}) before echion started; nothing was left running in the process")));
            }
            let now = Instant::now();
            if !running && now >= deadline_run {
                self.give_up();
                return Err(self.fail(format!(
                    "no point where Python code can safely run came within {} s (is its main thread \
                     holding the GIL in C code?); nothing was left running in it; `echion -w {pid}` \
                     shows where its threads are",
                    SAFE_POINT_PATIENCE.as_secs()
                )));
            }
            if now >= deadline_start {
                self.ask_and_wait_detach();
                self.cleanup();
                return Err(self.fail("echion did not start in it in time".to_owned()));
            }
        };
        eprintln!(
            "echion: attached to pid {pid}: stopped {} us, first sample after {} ms; \
             profiling to {output}{}",
            self.injection.stopped.as_micros(),
            first_sample.as_millis(),
            if config.exposure.is_some() {
                ""
            } else {
                " until Ctrl-C"
            }
        );
        // 2. Profiling.
        let deadline = config.exposure.map(|x| Instant::now() + x);
        // Until the target exits (true), or a signal or the exposure ends it.
        let exited = loop {
            for line in self.status.lines(&self.control.dir) {
                if let Some(reason) = line.strip_prefix("error: ") {
                    eprintln!("echion: pid {pid}: {reason}");
                }
            }
            if !alive(pid) {
                break true;
            }
            if self.wait_signal().is_some() || deadline.is_some_and(|d| Instant::now() >= d) {
                break false;
            }
        };
        if exited {
            eprintln!("echion: pid {pid} exited; its profile is in {output}");
            return Ok(0);
        }
        // 3. Detaching.
        if !self.ask_and_wait_detach() {
            if !alive(pid) {
                eprintln!("echion: pid {pid} exited; its profile is in {output}");
                return Ok(0);
            }
            self.cleanup();
            return Err(self.fail(format!(
                "it did not detach within {} s",
                DETACH_PATIENCE.as_secs()
            )));
        }
        self.cleanup();
        eprintln!("echion: detached from pid {pid}; profile in {output}");
        Ok(0)
    }

    /// The program stopped echion before its first sample: if it exits
    /// (its `atexit` stopped echion), the attach is over and the profile,
    /// closed, is whatever was sampled; otherwise the program stopped it.
    fn stopped_early(&mut self, output: &str) -> Result<i32, CliError> {
        let pid = self.pid;
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if alive(pid) {
            self.cleanup();
            return Err(self.fail(format!(
                "the program stopped echion (`echion.stop()`?) before its first sample; the \
                 profile is in {output}"
            )));
        }
        eprintln!("echion: pid {pid} exited as it was attached to; its profile is in {output}");
        Ok(0)
    }

    /// Asks the process to detach and waits for it; `false` if it did not
    /// say so in time.
    fn ask_and_wait_detach(&mut self) -> bool {
        self.control.ask_to_detach();
        let deadline = Instant::now() + DETACH_PATIENCE;
        loop {
            if self
                .status
                .lines(&self.control.dir)
                .iter()
                .any(|l| l == "detached")
            {
                return true;
            }
            if !alive(self.pid) || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// No safe point in time: what was injected must never start echion.
    fn give_up(&mut self) {
        // Queued (or waiting for the GIL): it runs one day, and must then
        // do nothing. The entry does nothing either once the control
        // directory is gone (dropped with `self`). The page stays: a queued
        // call still points into it.
        let _ = self.target.neutralize(&self.injection);
    }

    /// Takes the trampoline page out of the process once nothing uses it
    /// (waiting a little for a run under way to return).
    fn cleanup(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while alive(self.pid) && Instant::now() < deadline {
            match self.target.unmap(&self.injection) {
                Ok(stopped) => {
                    self.injection.stopped += stopped;
                    return;
                }
                Err(echion_inject::InjectError::NoSafeThread(_)) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
    }
}

/// The user id process `pid` accesses files as (its fsuid).
fn fs_uid(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_whose_root_is_gone_is_not_said_to_be_elsewhere() {
        // A zombie has no root (as a process has from the moment its exit
        // releases it): said to be elsewhere, the attach to a program that
        // exits reported a container (the long soak: 1 run in 1,260).
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        let stat = format!("/proc/{pid}/stat");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&stat).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        }) {
            assert!(Instant::now() < deadline, "`true` did not end");
            std::thread::sleep(Duration::from_millis(5));
        }
        let tmp = std::env::temp_dir();
        assert_eq!(elsewhere(pid, &[&tmp]), None);
        child.wait().expect("reap");
        // A live process that sees the same files is not elsewhere either.
        let me = std::process::id();
        assert_eq!(elsewhere(me, &[&tmp]), None);
    }

    #[test]
    fn python_literals_escape_what_python_would_misread() {
        assert_eq!(py_literal("/tmp/a"), "'/tmp/a'");
        assert_eq!(py_literal("it's\\"), "'it\\'s\\\\'");
        assert_eq!(py_literal("a\nb"), "'a\\U0000000ab'");
    }

    #[test]
    fn the_entry_source_binds_nothing_and_lets_only_ctrl_c_out() {
        let s = entry_source(Path::new("/e.py"), Path::new("/c"), 1234).unwrap();
        assert!(s.starts_with("try:\n"));
        assert!(s.contains("except KeyboardInterrupt:\n raise\n"));
        assert!(s.ends_with("except BaseException:\n  pass\n"));
        assert!(s.contains("'CONTROL':'/c'"));
        assert!(s.contains("'MAIN_MODULES':1234"));
        assert!(!s.contains(" as "), "binds a name: {s}");
        assert!(!s.contains('\0'));
    }
}
