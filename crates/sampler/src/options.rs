//! The options of a run, defined once: their defaults, and the `ECHION_*`
//! variables that carry them from the `echion` command to the profiled
//! process.
//!
//! The command line (`echion-cli`) validates what the user wrote into
//! [`Options`] and turns it into variables with [`Options::to_env`]; in the
//! profiled process, `echion.core.configure_from_env()` reads them back with
//! [`Options::from_env`] and the sampler runs with [`Options::config`]. No
//! other place knows a default or a variable's name or format.

use std::path::PathBuf;
use std::time::Duration;

use crate::engine::Mode;
use crate::run::Config;

/// The default sampling interval, as in echion 0.3.
pub const DEFAULT_INTERVAL: Duration = Duration::from_micros(1000);

/// The default output path, as in echion 0.3: each process writes its own.
pub const DEFAULT_OUTPUT: &str = "%(pid).echion";

/// The names of the variables.
pub mod env {
    /// Sampling interval in microseconds, a positive decimal integer.
    pub const INTERVAL: &str = "ECHION_INTERVAL";
    /// CPU mode: `0` or `1`.
    pub const CPU: &str = "ECHION_CPU";
    /// Memory mode: `0` or `1`.
    pub const MEMORY: &str = "ECHION_MEMORY";
    /// Native mode: `0` or `1`.
    pub const NATIVE: &str = "ECHION_NATIVE";
    /// Stealth mode: `0` or `1`.
    pub const STEALTH: &str = "ECHION_STEALTH";
    /// No sampler thread (ticks in a timer signal's handler on the main
    /// thread): `0` or `1`.
    pub const NO_THREAD: &str = "ECHION_NO_THREAD";
    /// Exposure in seconds as a decimal (`2`, `0.5`), empty for none.
    pub const EXPOSURE: &str = "ECHION_EXPOSURE";
    /// The output path, `%(pid)` left in for each process to expand.
    pub const OUTPUT: &str = "ECHION_OUTPUT";
    /// Verbose: `0` or `1`.
    pub const VERBOSE: &str = "ECHION_VERBOSE";
    /// The format of the output (`svg`, `speedscope`, `pprof`,
    /// `collapsed`): converted from a MOJO file beside it at the end of
    /// each process; empty or `mojo` for MOJO itself.
    pub const FORMAT: &str = "ECHION_FORMAT";
    /// Print a summary at the end of each process: `0` or `1`.
    pub const SUMMARY: &str = "ECHION_SUMMARY";
    /// `0`: read with `process_vm_readv` instead of fault-guarded loads
    /// (not set by the command; for comparisons, or if in doubt).
    pub const DIRECT_READS: &str = "ECHION_DIRECT_READS";
    /// Every variable above, in the order [`super::Options::to_env`] writes
    /// them (the last one is never written).
    pub const ALL: [&str; 12] = [
        INTERVAL,
        CPU,
        MEMORY,
        NATIVE,
        STEALTH,
        NO_THREAD,
        EXPOSURE,
        OUTPUT,
        VERBOSE,
        FORMAT,
        SUMMARY,
        DIRECT_READS,
    ];
}

/// What a run is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Time between two ticks (at least 1 µs).
    pub interval: Duration,
    /// Wall or CPU time.
    pub mode: Mode,
    /// Stop sampling after this long (the program goes on).
    pub exposure: Option<Duration>,
    /// The profile's path, `%(pid)` left in.
    pub output: String,
    /// Memory mode: live bytes per allocating stack instead of time.
    pub memory: bool,
    /// Native stacks interleaved with the Python frames.
    pub native: bool,
    /// Sample from a native thread Python does not see.
    pub stealth: bool,
    /// Sample with no thread: each tick in a timer signal's handler on the
    /// thread that starts sampling (wall mode).
    pub no_thread: bool,
    /// Say where the profile went.
    pub verbose: bool,
    /// The output's format when it is not MOJO (`svg`, …; validated by
    /// the converter), `None` for MOJO.
    pub format: Option<String>,
    /// Print a summary at the end (also without a terminal).
    pub summary: bool,
    /// Fault-guarded loads (`true`) or `process_vm_readv`.
    pub direct_reads: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            mode: Mode::Wall,
            exposure: None,
            output: DEFAULT_OUTPUT.to_owned(),
            memory: false,
            native: false,
            stealth: false,
            no_thread: false,
            verbose: false,
            format: None,
            summary: false,
            direct_reads: true,
        }
    }
}

/// A variable that holds what it cannot hold (set by hand, not by the
/// `echion` command).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?}: {expected}")]
pub struct EnvError {
    /// The variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What it should be.
    pub expected: &'static str,
}

impl Options {
    /// The variables that carry these options (`DIRECT_READS` only when
    /// off), in [`env::ALL`] order.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let flag = |on: bool| if on { "1" } else { "0" }.to_owned();
        let mut out = vec![
            (env::INTERVAL, self.interval.as_micros().max(1).to_string()),
            (env::CPU, flag(self.mode == Mode::Cpu)),
            (env::MEMORY, flag(self.memory)),
            (env::NATIVE, flag(self.native)),
            (env::STEALTH, flag(self.stealth)),
            (env::NO_THREAD, flag(self.no_thread)),
            (
                env::EXPOSURE,
                self.exposure.map(seconds).unwrap_or_default(),
            ),
            (env::OUTPUT, self.output.clone()),
            (env::VERBOSE, flag(self.verbose)),
            (env::FORMAT, self.format.clone().unwrap_or_default()),
            (env::SUMMARY, flag(self.summary)),
        ];
        if !self.direct_reads {
            out.push((env::DIRECT_READS, flag(false)));
        }
        out
    }

    /// The options the variables say (`get` gives a variable's value; an
    /// unset or empty one means the default).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let value = |name: &'static str| get(name).filter(|v| !v.is_empty());
        let flag = |name: &'static str, default: bool| -> Result<bool, EnvError> {
            match value(name).as_deref() {
                None => Ok(default),
                Some("1") => Ok(true),
                Some("0") => Ok(false),
                Some(v) => Err(EnvError {
                    name,
                    value: v.to_owned(),
                    expected: "must be 0 or 1",
                }),
            }
        };
        let mut o = Options::default();
        if let Some(v) = value(env::INTERVAL) {
            let us = v.parse::<u64>().ok().filter(|&us| us > 0).ok_or(EnvError {
                name: env::INTERVAL,
                value: v.clone(),
                expected: "must be a positive whole number of microseconds",
            })?;
            o.interval = Duration::from_micros(us);
        }
        if flag(env::CPU, false)? {
            o.mode = Mode::Cpu;
        }
        o.memory = flag(env::MEMORY, false)?;
        o.native = flag(env::NATIVE, false)?;
        o.stealth = flag(env::STEALTH, false)?;
        o.no_thread = flag(env::NO_THREAD, false)?;
        o.verbose = flag(env::VERBOSE, false)?;
        o.summary = flag(env::SUMMARY, false)?;
        o.format = value(env::FORMAT).filter(|f| f != "mojo");
        o.direct_reads = flag(env::DIRECT_READS, true)?;
        if let Some(v) = value(env::EXPOSURE) {
            let d = parse_seconds(&v).ok_or(EnvError {
                name: env::EXPOSURE,
                value: v.clone(),
                expected: "must be a positive decimal number of seconds",
            })?;
            o.exposure = Some(d);
        }
        if let Some(v) = value(env::OUTPUT) {
            o.output = v;
        }
        if o.no_thread && (o.mode != Mode::Wall || o.memory || o.native) {
            return Err(EnvError {
                name: env::NO_THREAD,
                value: "1".to_owned(),
                expected:
                    "samples wall time only: not with ECHION_CPU, ECHION_MEMORY or ECHION_NATIVE",
            });
        }
        Ok(o)
    }

    /// The sampler's configuration for these options (the caller adds what
    /// only the process knows: `runtime`, `python`).
    pub fn config(&self) -> Config {
        Config {
            interval: self.interval,
            mode: if self.memory { Mode::Memory } else { self.mode },
            exposure: self.exposure,
            output: PathBuf::from(&self.output),
            direct_reads: self.direct_reads,
            native: self.native,
            sidecar: self.format.is_some(),
            no_thread: self.no_thread,
            ..Config::default()
        }
    }
}

/// A duration as decimal seconds without trailing zeros: `2`, `0.5`,
/// `1.000001`.
pub fn seconds(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        return d.as_secs().to_string();
    }
    let frac = format!("{nanos:09}");
    format!("{}.{}", d.as_secs(), frac.trim_end_matches('0'))
}

/// Reads what [`seconds`] writes (digits, an optional fraction of at most
/// nine digits); `None` for anything else or zero.
pub fn parse_seconds(text: &str) -> Option<Duration> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || frac.len() > 9 {
        return None;
    }
    let secs: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    let d = Duration::new(secs, nanos);
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_the_environment() {
        let o = Options {
            interval: Duration::from_micros(250),
            mode: Mode::Cpu,
            exposure: Some(Duration::from_nanos(1_500_000_001)),
            output: "/tmp/p.%(pid).mojo".into(),
            memory: false,
            native: false,
            stealth: true,
            no_thread: false,
            verbose: true,
            format: Some("svg".into()),
            summary: true,
            direct_reads: false,
        };
        let vars = o.to_env();
        assert_eq!(
            vars.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            env::ALL.to_vec()
        );
        let back = Options::from_env(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.clone())
        })
        .expect("valid");
        assert_eq!(back, o);
        let bare = Options {
            no_thread: true,
            ..Options::default()
        };
        let vars = bare.to_env();
        let back = Options::from_env(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.clone())
        });
        assert_eq!(back, Ok(bare));
        assert_eq!(
            Options::from_env(|_| None).expect("defaults"),
            Options::default()
        );
        let config = Options::default().config();
        assert_eq!(config.interval, DEFAULT_INTERVAL);
        assert_eq!(config.output, PathBuf::from(DEFAULT_OUTPUT));
        assert!(!config.sidecar);
        assert!(
            o.config().sidecar,
            "an SVG is converted from a MOJO file beside it"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let bad = |name: &str, value: &str| {
            Options::from_env(|k| (k == name).then(|| value.to_owned()))
                .expect_err(value)
                .to_string()
        };
        assert_eq!(
            bad(env::INTERVAL, "10ms"),
            "ECHION_INTERVAL=\"10ms\": must be a positive whole number of microseconds"
        );
        assert_eq!(bad(env::CPU, "yes"), "ECHION_CPU=\"yes\": must be 0 or 1");
        assert!(bad(env::EXPOSURE, "-1").starts_with("ECHION_EXPOSURE"));
        assert!(bad(env::INTERVAL, "0").contains("positive"));
        let both = |a: &str| {
            Options::from_env(|k| (k == env::NO_THREAD || k == a).then(|| "1".to_owned()))
                .expect_err(a)
                .to_string()
        };
        for other in [env::CPU, env::MEMORY, env::NATIVE] {
            assert!(both(other).starts_with("ECHION_NO_THREAD=\"1\": samples wall time only"));
        }
    }

    #[test]
    fn seconds_are_exact() {
        for (d, s) in [
            (Duration::from_secs(2), "2"),
            (Duration::from_millis(500), "0.5"),
            (Duration::from_nanos(1_000_001_000), "1.000001"),
            (Duration::from_millis(2250), "2.25"),
            (Duration::new(0, 1), "0.000000001"),
        ] {
            assert_eq!(seconds(d), s);
            assert_eq!(parse_seconds(s), Some(d));
        }
        for bad in ["", ".", "0", "1e3", "1.0000000001", " 1"] {
            assert_eq!(parse_seconds(bad), None, "{bad:?}");
        }
    }
}
