//! [`Config`]: the validated command line, free of clap types.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::{access, AccessFlags};

use crate::args::Args;
use crate::error::{CliError, Quoted};
use crate::resolve::{resolve_command, SearchPath};

/// The placeholder in the output path that each profiled process replaces
/// with its own pid (the sampler does this when it opens the file, so forked
/// and spawned children each get their own file).
pub use echion_sampler::output::PID_PLACEHOLDER;

/// The default output path (the sampler's, as in echion 0.3).
pub use echion_sampler::options::DEFAULT_OUTPUT;

/// The default sampling interval in microseconds (the sampler's).
pub const DEFAULT_INTERVAL_US: u64 = echion_sampler::options::DEFAULT_INTERVAL.as_micros() as u64;

/// The validated options of one `echion` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Sampling interval in microseconds (`-i`), always at least 1.
    pub interval_us: u64,
    /// CPU mode (`-c`): sample on-CPU stacks only and report CPU time.
    pub cpu: bool,
    /// Exposure (`-x`): stop sampling after this long; `None` samples until
    /// the program exits.
    pub exposure: Option<Duration>,
    /// Memory mode (`-m`): record allocation events instead of time.
    pub memory: bool,
    /// Native mode (`-n`): interleave native frames with Python frames.
    pub native: bool,
    /// Output path (`-o`) as given, with [`PID_PLACEHOLDER`] kept for each
    /// process to expand (echion 0.3's `%%(pid)` spelling is normalised to
    /// `%(pid)`). Relative paths are resolved by [`crate::launch_plan`].
    pub output: String,
    /// The output's format when it is not MOJO (`--format`, else from the
    /// output's name): converted at the end of each process from a MOJO
    /// file beside it.
    pub format: Option<echion_convert::Format>,
    /// Print a summary at the end of each process (`--summary`).
    pub summary: bool,
    /// Attach mode (`-p PID`): profile a running process instead of a command.
    pub attach_pid: Option<u32>,
    /// Stealth mode (`-s`): the sampler thread has no Python thread state and
    /// does not appear in the profile.
    pub stealth: bool,
    /// No sampler thread (`--no-thread`): each tick in a timer signal's
    /// handler on the program's main thread. Wall mode only.
    pub no_thread: bool,
    /// Where mode (`-w PID`): print the thread stacks of a running process.
    pub where_pid: Option<u32>,
    /// Where mode's output as JSON (`--json`).
    pub json: bool,
    /// Verbose logging (`-v`).
    pub verbose: bool,
    /// The command to run and its arguments; may be empty only in attach or
    /// where mode.
    pub command: Vec<OsString>,
}

/// What validation needs from the outside world, injectable for tests.
pub(crate) struct Context {
    /// The `PATH` to resolve the command with.
    pub path: SearchPath,
    /// The pid substituted for `%(pid)` when checking the output directory.
    pub sample_pid: u32,
}

impl Context {
    /// The real environment of this process.
    pub(crate) fn current() -> Self {
        Context {
            path: SearchPath::from_env(),
            sample_pid: std::process::id(),
        }
    }
}

/// Parses and validates the command line `args` (without argv\[0\]).
///
/// Everything from the first non-option argument on is the command, options
/// included. Checks, in this order: the syntax (unknown option, missing
/// value), the interval, the exposure, the pids, `-m` with `-c`, attach
/// mode (`-p PID`, which takes no command and no `-w`), where mode (`-w
/// PID`, which takes no command; `--json` only with it), the presence of a
/// command, the
/// output directory (with a sample pid in place of `%(pid)`), and that the
/// command resolves on `PATH` to an executable file the way `execvp` would.
/// `-h` and `-V` come back as [`CliError::Help`] / [`CliError::Version`].
///
/// ```
/// let config = echion_cli::parse(["-i", "10ms", "-c", "sh", "-c", "true"].map(Into::into)).unwrap();
/// assert_eq!(config.interval_us, 10_000);
/// assert!(config.cpu);
/// assert_eq!(config.command, ["sh", "-c", "true"]);
/// assert_eq!(config.output, "%(pid).echion");
///
/// let err = echion_cli::parse(["-i", "0", "sh"].map(Into::into)).unwrap_err();
/// assert_eq!(err.to_string(), "invalid interval '0': must be a positive number of us, ms or s");
/// ```
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Config, CliError> {
    parse_in(args, &Context::current())
}

pub(crate) fn parse_in<I: IntoIterator<Item = OsString>>(
    args: I,
    ctx: &Context,
) -> Result<Config, CliError> {
    let config = Config::from_args(Args::parse_from(args)?)?;
    if config.memory && config.cpu {
        return Err(CliError::MemoryWithCpu);
    }
    if config.no_thread {
        if config.attach_pid.is_some() || config.where_pid.is_some() {
            return Err(CliError::NoThreadWith(
                "-p/-w (it is for a program echion starts)",
            ));
        }
        if config.cpu || config.memory || config.native {
            return Err(CliError::NoThreadWith(
                "-c, -m or -n (it samples wall time only)",
            ));
        }
    }
    if config.json && config.where_pid.is_none() {
        return Err(CliError::JsonWithoutWhere);
    }
    if config.attach_pid.is_some() {
        if config.where_pid.is_some() {
            return Err(CliError::AttachWithWhere);
        }
        if !config.command.is_empty() {
            return Err(CliError::AttachWithCommand(Quoted::new(&config.command[0])));
        }
        check_output(&config.output, ctx.sample_pid)?;
        check_picture_output(&config, ctx.sample_pid)?;
        return Ok(config);
    }
    if config.where_pid.is_some() {
        if !config.command.is_empty() {
            return Err(CliError::WhereWithCommand(Quoted::new(&config.command[0])));
        }
        return Ok(config);
    }
    if config.command.is_empty() {
        return Err(CliError::MissingCommand);
    }
    check_output(&config.output, ctx.sample_pid)?;
    check_picture_output(&config, ctx.sample_pid)?;
    resolve_command(&config.command[0], &ctx.path)?;
    Ok(config)
}

impl Config {
    /// Converts clap's raw values, validating each one.
    fn from_args(args: Args) -> Result<Self, CliError> {
        let interval_us = match args.interval.as_deref() {
            Some(text) => parse_interval(text)?,
            None => DEFAULT_INTERVAL_US,
        };
        let exposure = args.exposure.as_deref().map(parse_exposure).transpose()?;
        let attach_pid = args
            .pid
            .as_deref()
            .map(|v| parse_pid("-p", v))
            .transpose()?;
        let where_pid = args
            .where_
            .as_deref()
            .map(|v| parse_pid("-w", v))
            .transpose()?;
        let output = normalise_output(&args.output)?;
        let format = match args.format.as_deref() {
            Some(name) => echion_convert::Format::from_name(name)
                .ok_or_else(|| CliError::UnknownFormat(Quoted(name.to_owned())))?,
            None => echion_convert::Format::from_path(Path::new(&output)),
        };
        Ok(Config {
            format: (format != echion_convert::Format::Mojo).then_some(format),
            summary: args.summary,
            interval_us,
            cpu: args.cpu,
            exposure,
            memory: args.memory,
            native: args.native,
            output,
            attach_pid,
            stealth: args.stealth,
            no_thread: args.no_thread,
            where_pid,
            json: args.json,
            verbose: args.verbose,
            command: args.command,
        })
    }

    /// The output path as one process with `pid` will write it.
    pub fn output_for_pid(&self, pid: u32) -> String {
        expand_pid(&self.output, pid)
    }
}

/// Replaces every `%(pid)` in `output` with `pid`.
pub fn expand_pid(output: &str, pid: u32) -> String {
    output.replace(PID_PLACEHOLDER, &pid.to_string())
}

const INTERVAL_REASON: &str = "must be a positive number of us, ms or s";
const EXPOSURE_REASON: &str = "must be a positive number of seconds";

/// Parses an interval: a decimal number with an optional unit `us` (or `µs`),
/// `ms` or `s`; a plain number is microseconds (echion 0.3). Fractions are
/// allowed as long as the result is a whole number of microseconds.
pub fn parse_interval(value: &str) -> Result<u64, CliError> {
    let err = |reason| CliError::InvalidInterval {
        value: Quoted(value.to_owned()),
        reason,
    };
    let (number, scale) = if let Some(n) = value
        .strip_suffix("us")
        .or_else(|| value.strip_suffix("µs"))
    {
        (n, 1)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1_000)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1_000_000)
    } else {
        (value, 1)
    };
    match scaled_decimal(number, scale) {
        Decimal::Value(0) | Decimal::Invalid => Err(err(INTERVAL_REASON)),
        Decimal::Value(us) => Ok(us),
        Decimal::TooFine => Err(err("must be a whole number of microseconds")),
        Decimal::Overflow => Err(err("too large")),
    }
}

/// Parses an exposure: a positive decimal number of seconds (nanosecond
/// resolution), optionally followed by `s`.
pub fn parse_exposure(value: &str) -> Result<Duration, CliError> {
    let err = |reason| CliError::InvalidExposure {
        value: Quoted(value.to_owned()),
        reason,
    };
    let number = value.strip_suffix('s').unwrap_or(value);
    match scaled_decimal(number, 1_000_000_000) {
        Decimal::Value(0) | Decimal::Invalid | Decimal::TooFine => Err(err(EXPOSURE_REASON)),
        Decimal::Value(ns) => Ok(Duration::from_nanos(ns)),
        Decimal::Overflow => Err(err("too large")),
    }
}

/// Parses a pid given to `option`: a positive `pid_t`.
fn parse_pid(option: &'static str, value: &str) -> Result<u32, CliError> {
    match value.parse::<u32>() {
        Ok(pid)
            if pid > 0
                && i32::try_from(pid).is_ok()
                && value.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(pid)
        }
        _ => Err(CliError::InvalidPid {
            option,
            value: Quoted(value.to_owned()),
        }),
    }
}

/// The result of reading a decimal number in some unit.
#[derive(Debug, PartialEq, Eq)]
enum Decimal {
    /// The number times the scale.
    Value(u64),
    /// Not `digits[.digits]` (signs, exponents, spaces, empty).
    Invalid,
    /// More fractional digits than the scale can represent, not all zero.
    TooFine,
    /// Larger than `u64::MAX` once scaled.
    Overflow,
}

/// Reads `digits[.digits]` and multiplies it by `scale` (a power of ten)
/// exactly, in integers.
fn scaled_decimal(text: &str, scale: u64) -> Decimal {
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits_only(int) || !digits_only(frac) {
        return Decimal::Invalid;
    }
    let mut value: u64 = 0;
    for d in int.bytes() {
        match value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
        {
            Some(v) => value = v,
            None => return Decimal::Overflow,
        }
    }
    let Some(mut value) = value.checked_mul(scale) else {
        return Decimal::Overflow;
    };
    let mut place = scale;
    for d in frac.bytes().map(|b| u64::from(b - b'0')) {
        if place.is_multiple_of(10) {
            place /= 10;
            match value.checked_add(d * place) {
                Some(v) => value = v,
                None => return Decimal::Overflow,
            }
        } else if d != 0 {
            return Decimal::TooFine;
        }
    }
    Decimal::Value(value)
}

/// Checks that `-o` is usable text and spells the pid placeholder one way.
fn normalise_output(raw: &OsStr) -> Result<String, CliError> {
    let err = |reason| CliError::InvalidOutput {
        value: Quoted::new(raw),
        reason,
    };
    let text = raw.to_str().ok_or_else(|| err("not valid UTF-8"))?;
    if text.is_empty() {
        return Err(err("empty"));
    }
    if text == "-" {
        return Err(err(
            "the standard output is the program's: give a file name (echion-convert FILE -o - \
             writes a profile's picture there)",
        ));
    }
    // echion 0.3 replaced the literal `%%(pid)` (its argparse default was
    // written that way); accept that spelling too.
    Ok(text.replace("%%(pid)", PID_PLACEHOLDER))
}

/// Checks that a process with pid `sample_pid` could create `output`: its
/// directory exists, is a directory and is writable, and the path itself is
/// not a directory or a read-only file.
pub(crate) fn check_output(output: &str, sample_pid: u32) -> Result<(), CliError> {
    let path = PathBuf::from(expand_pid(output, sample_pid));
    if let Ok(meta) = std::fs::metadata(&path) {
        if meta.is_dir() {
            return Err(CliError::OutputIsDir(Quoted::new(&path)));
        }
        if let Err(errno) = access(&path, AccessFlags::W_OK) {
            return Err(CliError::OutputNotWritable {
                path: Quoted::new(&path),
                reason: errno.desc().to_lowercase(),
            });
        }
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    match std::fs::metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(CliError::OutputDirMissing(Quoted::new(&dir)))
        }
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOTDIR as i32) => {
            Err(CliError::OutputDirNotDir(Quoted::new(&dir)))
        }
        Err(e) => Err(CliError::OutputDirNotWritable {
            dir: Quoted::new(&dir),
            reason: io_reason(&e),
        }),
        Ok(meta) if !meta.is_dir() => Err(CliError::OutputDirNotDir(Quoted::new(&dir))),
        Ok(_) => access(&dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|errno| {
            CliError::OutputDirNotWritable {
                dir: Quoted::new(&dir),
                reason: errno.desc().to_lowercase(),
            }
        }),
    }
}

/// Checks that a picture (a format other than MOJO) goes to a regular file
/// or a new one: it is converted into it at the end from a MOJO file made
/// beside it, which a FIFO or a device (`/dev/stdout`) has no room for.
fn check_picture_output(config: &Config, sample_pid: u32) -> Result<(), CliError> {
    let Some(format) = config.format else {
        return Ok(());
    };
    let path = PathBuf::from(expand_pid(&config.output, sample_pid));
    match std::fs::metadata(&path) {
        Ok(meta) if !meta.is_file() => Err(CliError::PictureToSpecialFile {
            path: Quoted::new(&path),
            format: format.name(),
        }),
        _ => Ok(()),
    }
}

/// The system's description of an I/O error, without Rust's " (os error N)".
pub(crate) fn io_reason(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_lowercase(),
        None => err.to_string(),
    }
}
