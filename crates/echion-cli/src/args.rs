//! The clap derive types: the only place that knows about clap.
//!
//! Values are taken as raw strings here and validated when they are turned
//! into a [`crate::Config`], so that every bad value gets echion's own one-line
//! message rather than clap's multi-line report.

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::Parser;

use crate::error::{CliError, Quoted};

/// The command line as clap sees it (echion 0.3's options and long names).
#[derive(Debug, Parser)]
#[command(
    name = "echion",
    version,
    about = "In-process CPython frame stack sampler",
    override_usage = "echion [OPTIONS] command [ARGS]...\n       echion [OPTIONS] -p PID\n       echion -w PID [--json]",
    after_help = "Options after the command belong to the command: \
                  `echion -c python -c 'print(1)'` profiles `python -c 'print(1)'` in CPU mode."
)]
pub(crate) struct Args {
    /// Sampling interval: a number with unit us, ms or s (plain number = microseconds; default 1 ms)
    #[arg(short, long, value_name = "INTERVAL", allow_hyphen_values = true)]
    pub interval: Option<String>,

    /// Sample on-CPU stacks only
    #[arg(short, long)]
    pub cpu: bool,

    /// Exposure time, in seconds: stop sampling after this long
    #[arg(short = 'x', long, value_name = "EXPOSURE", allow_hyphen_values = true)]
    pub exposure: Option<String>,

    /// Memory mode: the bytes each stack allocated and has not freed
    #[arg(short, long)]
    pub memory: bool,

    /// Native stacks interleaved with Python's
    #[arg(short, long)]
    pub native: bool,

    /// Output location; %(pid) is replaced by each profiled process's id
    #[arg(short, long, value_name = "OUTPUT", default_value = echion_sampler::options::DEFAULT_OUTPUT)]
    pub output: OsString,

    /// Output format: mojo, svg, speedscope, pprof or collapsed (default: from the output's name: .svg, .speedscope.json, .pprof/.pb.gz, .collapsed/.folded; MOJO otherwise)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,

    /// Print a summary (samples, errors, top functions) at the end of each process, also when stderr is not a terminal
    #[arg(long)]
    pub summary: bool,

    /// Attach to the running process PID: profile it until Ctrl-C (or -x), then detach
    #[arg(short, long, value_name = "PID", allow_hyphen_values = true)]
    pub pid: Option<String>,

    /// Stealth mode (the sampler thread is not accounted for)
    #[arg(short, long)]
    pub stealth: bool,

    /// No sampler thread: a timer signal runs each tick on the main thread (wall time; the cheapest for programs that fork often; the main thread's sleeps and waits are interrupted and resumed)
    #[arg(long)]
    pub no_thread: bool,

    /// Where mode: show what every thread of process PID is doing, then exit
    #[arg(short, long = "where", value_name = "PID", allow_hyphen_values = true)]
    pub where_: Option<String>,

    /// With -w: print the stacks as JSON instead of text
    #[arg(long)]
    pub json: bool,

    /// Verbose logging
    #[arg(short, long)]
    pub verbose: bool,

    /// The command to run under the profiler, with its arguments
    #[arg(value_name = "command", trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

impl Args {
    /// Parses `args` (without argv\[0\]) into [`Args`], turning clap's errors
    /// into one-line [`CliError`]s.
    pub(crate) fn parse_from<I: IntoIterator<Item = OsString>>(args: I) -> Result<Self, CliError> {
        let argv = std::iter::once(OsString::from("echion")).chain(args);
        Args::try_parse_from(argv).map_err(from_clap)
    }
}

/// Maps a clap error to ours: help and version keep their text, an unknown
/// option is named, anything else keeps only clap's first line.
fn from_clap(err: clap::Error) -> CliError {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            CliError::Help(err.render().to_string())
        }
        ErrorKind::DisplayVersion => {
            CliError::Version(err.render().to_string().trim_end().to_owned())
        }
        ErrorKind::UnknownArgument => match err.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(arg)) => CliError::UnknownOption(Quoted(arg.clone())),
            _ => CliError::Usage(first_line(&err)),
        },
        _ => CliError::Usage(first_line(&err)),
    }
}

/// The first line of clap's rendering, without its `error: ` prefix.
fn first_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid command line");
    line.strip_prefix("error: ")
        .unwrap_or(line)
        .trim()
        .to_owned()
}
