//! The one error type of the front end.
//!
//! Every variant renders as a single line (no newline, control characters in
//! user-supplied values escaped) so that `echion: <message>` is all the user
//! sees, plus at most one hint line for usage mistakes.

use std::fmt;

/// Exit status for usage mistakes (bad option, bad value, no command), as
/// argparse and most Unix tools use it.
pub const EXIT_USAGE: i32 = 2;
/// Exit status for every other failure before the command runs.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status when the command exists but cannot be executed, like a shell.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit status when the command is not found, like a shell.
pub const EXIT_NOT_FOUND: i32 = 127;

/// A user-supplied value, quoted and escaped so that it can never break the
/// one-line rule (a newline in a file name prints as `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted(pub String);

impl Quoted {
    /// Quotes any displayable value, lossily for non-UTF-8 paths.
    pub fn new(value: impl AsRef<std::ffi::OsStr>) -> Self {
        Quoted(value.as_ref().to_string_lossy().into_owned())
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", escape_controls(&self.0))
    }
}

/// `text` with control characters (newlines, escapes, …) written as Rust
/// escapes, so that it prints on one line.
pub(crate) fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Everything that stops `echion` before (or instead of) running the command.
///
/// [`CliError::Help`] and [`CliError::Version`] are not failures: they carry
/// the text to print on stdout and exit with status 0, the way clap treats
/// them. Use [`CliError::exit_code`] and [`CliError::hint`] to report the rest.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `-h`/`--help` was given; the payload is the full help text.
    #[error("{0}")]
    Help(String),
    /// `-V`/`--version` was given; the payload is `echion <version>`.
    #[error("{0}")]
    Version(String),
    /// An option that echion does not know, before the command.
    #[error("unknown option {0}")]
    UnknownOption(Quoted),
    /// Any other malformed command line (a missing option value, an option
    /// given twice, …), as clap's first error line.
    #[error("{0}")]
    Usage(String),
    /// `-i` is not a positive whole number of microseconds.
    #[error("invalid interval {value}: {reason}")]
    InvalidInterval {
        /// What the user wrote.
        value: Quoted,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// `-x` is not a positive number of seconds.
    #[error("invalid exposure {value}: {reason}")]
    InvalidExposure {
        /// What the user wrote.
        value: Quoted,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// `-p` or `-w` is not a valid process id.
    #[error("invalid pid {value} for {option}: must be a positive process id")]
    InvalidPid {
        /// The option, `-p` or `-w`.
        option: &'static str,
        /// What the user wrote.
        value: Quoted,
    },
    /// `--format` names no format.
    #[error("unknown format {0}: give one of mojo, svg, speedscope, pprof, collapsed")]
    UnknownFormat(Quoted),
    /// `-m` with `-c`.
    #[error("-m (memory) and -c (CPU time) measure different things: give one of them")]
    MemoryWithCpu,
    /// `--no-thread` with an option it does not take.
    #[error("--no-thread does not go with {0}: drop one of them")]
    NoThreadWith(&'static str),
    /// `--json` without `-w`.
    #[error("--json goes with where mode: echion -w PID --json")]
    JsonWithoutWhere,
    /// `-w PID` and a command.
    #[error("where mode (-w) shows a running process and takes no command, but {0} was given")]
    WhereWithCommand(Quoted),
    /// Where mode could not read the process.
    #[error("cannot show the stacks of pid {pid}: {reason}")]
    Where {
        /// The pid.
        pid: u32,
        /// What went wrong, with what to do.
        reason: String,
    },
    /// `-p PID` and a command.
    #[error("attach mode (-p) profiles a running process and takes no command, but {0} was given")]
    AttachWithCommand(Quoted),
    /// `-p` and `-w` together.
    #[error("-p (attach) and -w (where) are two ways to look at a process: give one of them")]
    AttachWithWhere,
    /// Attaching failed; nothing of echion was left in the process.
    #[error("cannot attach to pid {pid}: {reason}")]
    Attach {
        /// The pid.
        pid: u32,
        /// What went wrong, with what to do.
        reason: String,
    },
    /// No command after the options.
    #[error("no command to profile (usage: echion [OPTIONS] command [ARGS]...)")]
    MissingCommand,
    /// `-o` is empty or not valid UTF-8.
    #[error("invalid output path {value}: {reason}")]
    InvalidOutput {
        /// What the user wrote.
        value: Quoted,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The directory the profile would be written to does not exist.
    #[error("output directory {0} does not exist")]
    OutputDirMissing(Quoted),
    /// The output's parent path exists but is not a directory.
    #[error("output directory {0} is not a directory")]
    OutputDirNotDir(Quoted),
    /// The output directory cannot be written by this user.
    #[error("output directory {dir} is not writable ({reason}): choose another with -o")]
    OutputDirNotWritable {
        /// The directory.
        dir: Quoted,
        /// The system's reason (permission denied, read-only file system).
        reason: String,
    },
    /// The output path names an existing directory.
    #[error("output {0} is a directory, not a file")]
    OutputIsDir(Quoted),
    /// A picture was asked for into something that is not a regular file
    /// (a FIFO, a terminal, `/dev/stdout`): a picture is converted at the
    /// end from a MOJO file made beside its output.
    #[error(
        "output {path} is not a regular file: a {format} picture is converted at the end from a \
         MOJO file beside its output; give a file name, or write MOJO there and run \
         echion-convert FILE -o {path}"
    )]
    PictureToSpecialFile {
        /// The output (with a sample pid substituted).
        path: Quoted,
        /// The format asked for.
        format: &'static str,
    },
    /// The output file exists and cannot be overwritten by this user.
    #[error("output file {path} exists and is not writable ({reason})")]
    OutputNotWritable {
        /// The file (with a sample pid substituted).
        path: Quoted,
        /// The system's reason.
        reason: String,
    },
    /// The command does not exist (on `PATH`, or at the path given).
    #[error("command {command} not found{where_}", where_ = if *.on_path { " on PATH" } else { "" })]
    CommandNotFound {
        /// The command as given.
        command: Quoted,
        /// Whether `PATH` was searched (the command had no `/`).
        on_path: bool,
    },
    /// The command exists but cannot be executed.
    #[error("command {command} is not executable ({reason})")]
    CommandNotExecutable {
        /// The command as given.
        command: Quoted,
        /// Why: permission denied, is a directory, …
        reason: String,
    },
    /// Asking the interpreter for `echion.bootstrap` failed.
    #[error("the echion Python package is not installed for {python}{detail}: install it with '{python_raw} -m pip install echion', or set ECHION_BOOTSTRAP_DIR to its bootstrap directory")]
    BootstrapNotInstalled {
        /// The interpreter that was asked, quoted.
        python: Quoted,
        /// The same, unquoted, for the suggested command.
        python_raw: String,
        /// ` (<last line of the interpreter's error>)` or empty.
        detail: String,
    },
    /// No interpreter to ask for the bootstrap directory.
    #[error("cannot locate the echion bootstrap: the command is not a python and there is no python3 on PATH; set ECHION_BOOTSTRAP_DIR")]
    NoInterpreter,
    /// The bootstrap directory (argument, `ECHION_BOOTSTRAP_DIR` or the
    /// interpreter's answer) is unusable.
    #[error("bootstrap directory {dir} {reason}")]
    BadBootstrapDir {
        /// The directory.
        dir: Quoted,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `exec` itself failed after all checks passed.
    #[error("cannot run {command}: {source}")]
    Exec {
        /// The command as given.
        command: Quoted,
        /// The error of `execve`.
        source: std::io::Error,
    },
}

impl CliError {
    /// The process exit status for this error: 0 for help and version, 2 for
    /// usage mistakes, 127 / 126 for a command that is missing / not
    /// executable (as a shell would), 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Help(_) | CliError::Version(_) => 0,
            CliError::UnknownOption(_)
            | CliError::Usage(_)
            | CliError::InvalidInterval { .. }
            | CliError::InvalidExposure { .. }
            | CliError::InvalidPid { .. }
            | CliError::MissingCommand
            | CliError::JsonWithoutWhere
            | CliError::UnknownFormat(_)
            | CliError::MemoryWithCpu
            | CliError::NoThreadWith(_)
            | CliError::WhereWithCommand(_)
            | CliError::AttachWithCommand(_)
            | CliError::AttachWithWhere
            | CliError::InvalidOutput { .. } => EXIT_USAGE,
            CliError::CommandNotFound { .. } => EXIT_NOT_FOUND,
            CliError::CommandNotExecutable { .. } => EXIT_NOT_EXECUTABLE,
            CliError::Exec { source, .. } => {
                if source.kind() == std::io::ErrorKind::NotFound {
                    EXIT_NOT_FOUND
                } else {
                    EXIT_NOT_EXECUTABLE
                }
            }
            CliError::Attach { .. }
            | CliError::Where { .. }
            | CliError::OutputDirMissing(_)
            | CliError::OutputDirNotDir(_)
            | CliError::OutputDirNotWritable { .. }
            | CliError::OutputIsDir(_)
            | CliError::PictureToSpecialFile { .. }
            | CliError::OutputNotWritable { .. }
            | CliError::BootstrapNotInstalled { .. }
            | CliError::NoInterpreter
            | CliError::BadBootstrapDir { .. } => EXIT_FAILURE,
        }
    }

    /// Whether this is help or version output for stdout rather than an error.
    pub fn is_info(&self) -> bool {
        matches!(self, CliError::Help(_) | CliError::Version(_))
    }

    /// The one hint line to print after the error, if any: only usage
    /// mistakes get one, the others name their fix in the message.
    pub fn hint(&self) -> Option<&'static str> {
        (self.exit_code() == EXIT_USAGE).then_some("try 'echion --help'")
    }

    /// Prints the error the way the `echion` binary does: help and version
    /// on stdout; otherwise `echion: <message>` and the optional hint on
    /// stderr. Returns [`CliError::exit_code`].
    pub fn report(&self) -> i32 {
        use std::io::Write;
        if self.is_info() {
            let text = self.to_string();
            let mut out = std::io::stdout().lock();
            // A closed stdout (`echion -h | true`) is not worth a panic.
            let _ = out.write_all(text.as_bytes());
            if !text.ends_with('\n') {
                let _ = out.write_all(b"\n");
            }
            let _ = out.flush();
        } else {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "echion: {self}");
            if let Some(hint) = self.hint() {
                let _ = writeln!(err, "{hint}");
            }
        }
        self.exit_code()
    }
}
