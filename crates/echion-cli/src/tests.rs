//! Unit tests of parsing, validation and the launch plan. The real `exec`
//! is covered by `tests/run.rs`.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bootstrap::{ask_interpreter, check_bootstrap_dir};
use crate::config::{parse_in, Context};
use crate::launch::{plan_with, prepend_path};
use crate::*;

/// The pid substituted for `%(pid)` while validating in these tests.
const PID: u32 = 4242;

/// A scratch directory with a `PATH` of its own:
/// - `bin/prog` executable, `bin/plain` not executable, `bin/dir/` a directory;
/// - `out/` a writable output directory, `file` a regular file.
struct Sandbox {
    root: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let bin = root.path().join("bin");
        fs::create_dir_all(bin.join("dir")).unwrap();
        write_file(&bin.join("prog"), "#!/bin/sh\nexit 0\n", 0o755);
        write_file(&bin.join("plain"), "#!/bin/sh\nexit 0\n", 0o644);
        fs::create_dir(root.path().join("out")).unwrap();
        write_file(&root.path().join("file"), "", 0o644);
        Sandbox { root }
    }

    fn path(&self, rel: &str) -> String {
        self.root.path().join(rel).to_str().unwrap().to_owned()
    }

    fn ctx(&self) -> Context {
        Context {
            path: SearchPath(self.root.path().join("bin").into_os_string()),
            sample_pid: PID,
        }
    }

    /// Parses `args`; `{out}` and `{root}` in them are replaced by the
    /// sandbox's output directory and root. Unless the arguments choose an
    /// output, one in `out/` is added so that the crate directory is never
    /// written to.
    fn parse(&self, args: &[&str]) -> Result<Config, CliError> {
        let mut argv: Vec<OsString> = args
            .iter()
            .map(|a| {
                a.replace("{out}", &self.path("out"))
                    .replace("{root}", self.root.path().to_str().unwrap())
                    .into()
            })
            .collect();
        if !args
            .iter()
            .any(|a| a.starts_with("-o") || a.starts_with("--output"))
        {
            argv.insert(
                0,
                format!("--output={}/%(pid).echion", self.path("out")).into(),
            );
        }
        parse_in(argv, &self.ctx())
    }
}

fn write_file(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

/// The configuration of a bare `echion prog`, with the sandbox output.
fn base(sb: &Sandbox) -> Config {
    Config {
        interval_us: 1000,
        cpu: false,
        exposure: None,
        memory: false,
        native: false,
        output: format!("{}/%(pid).echion", sb.path("out")),
        format: None,
        summary: false,
        attach_pid: None,
        stealth: false,
        no_thread: false,
        where_pid: None,
        json: false,
        verbose: false,
        command: os(&["prog"]),
    }
}

#[test]
fn parses_options_and_command() {
    let sb = Sandbox::new();
    type Edit = fn(&mut Config);
    let cases: &[(&[&str], Edit)] = &[
        (&["prog"], |_| {}),
        (&["-c", "prog", "-c", "x"], |c| {
            c.cpu = true;
            c.command = os(&["prog", "-c", "x"]);
        }),
        // Options after the command, even echion's own, belong to it.
        (&["prog", "-i", "5", "--help", "-V", "--bogus"], |c| {
            c.command = os(&["prog", "-i", "5", "--help", "-V", "--bogus"]);
        }),
        (&["--", "prog", "--cpu"], |c| {
            c.command = os(&["prog", "--cpu"])
        }),
        (&["-i", "10ms", "prog"], |c| c.interval_us = 10_000),
        (&["-i10ms", "prog"], |c| c.interval_us = 10_000),
        (&["--interval=2s", "prog"], |c| c.interval_us = 2_000_000),
        (&["--interval", "500us", "prog"], |c| c.interval_us = 500),
        (&["-i", "250µs", "prog"], |c| c.interval_us = 250),
        (&["-i", "2000", "prog"], |c| c.interval_us = 2000),
        (&["-i", "1.5ms", "prog"], |c| c.interval_us = 1500),
        (&["-i", "0.25s", "prog"], |c| c.interval_us = 250_000),
        (&["-i", "007", "prog"], |c| c.interval_us = 7),
        (&["-x", "3", "prog"], |c| {
            c.exposure = Some(Duration::from_secs(3))
        }),
        (&["--exposure=0.5", "prog"], |c| {
            c.exposure = Some(Duration::from_millis(500))
        }),
        (&["-x", "2s", "prog"], |c| {
            c.exposure = Some(Duration::from_secs(2))
        }),
        (&["-csv", "prog"], |c| {
            c.cpu = true;
            c.stealth = true;
            c.verbose = true;
        }),
        (&["--cpu", "--stealth", "--verbose", "prog"], |c| {
            c.cpu = true;
            c.stealth = true;
            c.verbose = true;
        }),
        (&["-o", "{out}/p-%(pid).mojo", "prog"], |c| {
            c.output = c.output.replace("%(pid).echion", "p-%(pid).mojo")
        }),
        // echion 0.3 spelled the placeholder `%%(pid)`.
        (&["--output", "{out}/%%(pid).mojo", "prog"], |c| {
            c.output = c.output.replace("%(pid).echion", "%(pid).mojo")
        }),
        (&["-o", "{out}/fixed.mojo", "prog"], |c| {
            c.output = c.output.replace("%(pid).echion", "fixed.mojo")
        }),
    ];
    for (args, edit) in cases {
        let mut want = base(&sb);
        edit(&mut want);
        let got = sb.parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(got, want, "{args:?}");
    }
}

#[test]
fn default_output_keeps_the_placeholder() {
    // Only the default itself: validated against the crate directory (the
    // cwd of unit tests), which is writable.
    let config = parse_in(os(&["prog"]), &Sandbox::new().ctx()).unwrap();
    assert_eq!(config.output, "%(pid).echion");
    assert_eq!(config.output, DEFAULT_OUTPUT);
    assert_eq!(config.interval_us, DEFAULT_INTERVAL_US);
    assert_eq!(config.output_for_pid(12), "12.echion");
}

/// Each bad input, the exact message and the exit code.
#[test]
fn rejects_bad_input_with_one_line() {
    let sb = Sandbox::new();
    let interval = "must be a positive number of us, ms or s";
    let exposure = "must be a positive number of seconds";
    let cases: Vec<(Vec<&str>, String, i32)> = vec![
        (
            vec!["--bogus", "prog"],
            "unknown option '--bogus'".into(),
            2,
        ),
        (vec!["-q", "prog"], "unknown option '-q'".into(), 2),
        (vec!["-cq", "prog"], "unknown option '-q'".into(), 2),
        (
            vec!["-i"],
            "a value is required for '--interval <INTERVAL>' but none was supplied".into(),
            2,
        ),
        (
            vec!["-i", "1", "-i", "2", "prog"],
            "the argument '--interval <INTERVAL>' cannot be used multiple times".into(),
            2,
        ),
        (
            vec!["-i", "0", "prog"],
            format!("invalid interval '0': {interval}"),
            2,
        ),
        (
            vec!["-i", "0ms", "prog"],
            format!("invalid interval '0ms': {interval}"),
            2,
        ),
        (
            vec!["-i", "0.0s", "prog"],
            format!("invalid interval '0.0s': {interval}"),
            2,
        ),
        (
            vec!["-i", "-5", "prog"],
            format!("invalid interval '-5': {interval}"),
            2,
        ),
        (
            vec!["-i", "-1ms", "prog"],
            format!("invalid interval '-1ms': {interval}"),
            2,
        ),
        (
            vec!["-i", "+5", "prog"],
            format!("invalid interval '+5': {interval}"),
            2,
        ),
        (
            vec!["-i", "abc", "prog"],
            format!("invalid interval 'abc': {interval}"),
            2,
        ),
        (
            vec!["-i", "", "prog"],
            format!("invalid interval '': {interval}"),
            2,
        ),
        (
            vec!["-i", "ms", "prog"],
            format!("invalid interval 'ms': {interval}"),
            2,
        ),
        (
            vec!["-i", "10m", "prog"],
            format!("invalid interval '10m': {interval}"),
            2,
        ),
        (
            vec!["-i", "10 ms", "prog"],
            format!("invalid interval '10 ms': {interval}"),
            2,
        ),
        (
            vec!["-i", "1e3", "prog"],
            format!("invalid interval '1e3': {interval}"),
            2,
        ),
        (
            vec!["-i", ".", "prog"],
            format!("invalid interval '.': {interval}"),
            2,
        ),
        (
            vec!["-i", "1.2.3", "prog"],
            format!("invalid interval '1.2.3': {interval}"),
            2,
        ),
        (
            vec!["-i", "0.5", "prog"],
            "invalid interval '0.5': must be a whole number of microseconds".into(),
            2,
        ),
        (
            vec!["-i", "1.0001ms", "prog"],
            "invalid interval '1.0001ms': must be a whole number of microseconds".into(),
            2,
        ),
        (
            vec!["-i", "18446744073709551616", "prog"],
            "invalid interval '18446744073709551616': too large".into(),
            2,
        ),
        (
            vec!["-i", "18446744073710s", "prog"],
            "invalid interval '18446744073710s': too large".into(),
            2,
        ),
        (
            vec!["-x", "0", "prog"],
            format!("invalid exposure '0': {exposure}"),
            2,
        ),
        (
            vec!["-x", "-1", "prog"],
            format!("invalid exposure '-1': {exposure}"),
            2,
        ),
        (
            vec!["-x", "soon", "prog"],
            format!("invalid exposure 'soon': {exposure}"),
            2,
        ),
        (
            vec!["-x", "5ms", "prog"],
            format!("invalid exposure '5ms': {exposure}"),
            2,
        ),
        (
            vec!["-x", "0.0000000001", "prog"],
            format!("invalid exposure '0.0000000001': {exposure}"),
            2,
        ),
        (
            vec!["-x", "99999999999", "prog"],
            "invalid exposure '99999999999': too large".into(),
            2,
        ),
        (
            vec!["-p", "0"],
            "invalid pid '0' for -p: must be a positive process id".into(),
            2,
        ),
        (
            vec!["-p", "-3"],
            "invalid pid '-3' for -p: must be a positive process id".into(),
            2,
        ),
        (
            vec!["-p", "+3"],
            "invalid pid '+3' for -p: must be a positive process id".into(),
            2,
        ),
        (
            vec!["-w", "x"],
            "invalid pid 'x' for -w: must be a positive process id".into(),
            2,
        ),
        (
            vec!["-w", "4294967295"],
            "invalid pid '4294967295' for -w: must be a positive process id".into(),
            2,
        ),
        // Later features: parsed and validated, then refused.
        (
            vec!["-m", "-c", "prog"],
            "-m (memory) and -c (CPU time) measure different things: give one of them".into(),
            2,
        ),
        (
            vec!["--no-thread", "-c", "prog"],
            "--no-thread does not go with -c, -m or -n (it samples wall time only): drop one of them"
                .into(),
            2,
        ),
        (
            vec!["--no-thread", "-n", "prog"],
            "--no-thread does not go with -c, -m or -n (it samples wall time only): drop one of them"
                .into(),
            2,
        ),
        (
            vec!["--no-thread", "-p", "123"],
            "--no-thread does not go with -p/-w (it is for a program echion starts): drop one of them"
                .into(),
            2,
        ),
        (
            vec!["-p", "123", "prog"],
            "attach mode (-p) profiles a running process and takes no command, but 'prog' was given"
                .into(),
            2,
        ),
        (
            vec!["-p", "123", "-w", "123"],
            "-p (attach) and -w (where) are two ways to look at a process: give one of them".into(),
            2,
        ),
        (
            vec!["-w", "123", "prog"],
            "where mode (-w) shows a running process and takes no command, but 'prog' was given"
                .into(),
            2,
        ),
        (
            vec!["--json", "prog"],
            "--json goes with where mode: echion -w PID --json".into(),
            2,
        ),
        // Values are checked before features.
        (
            vec!["-m", "-i", "0", "prog"],
            format!("invalid interval '0': {interval}"),
            2,
        ),
        (
            vec![],
            "no command to profile (usage: echion [OPTIONS] command [ARGS]...)".into(),
            2,
        ),
        (
            vec!["-c", "-s"],
            "no command to profile (usage: echion [OPTIONS] command [ARGS]...)".into(),
            2,
        ),
        (
            vec!["-o", "", "prog"],
            "invalid output path '': empty".into(),
            2,
        ),
        (
            vec!["-o", "{root}/missing/x.mojo", "prog"],
            format!("output directory '{}' does not exist", sb.path("missing")),
            1,
        ),
        // The directory is checked with a sample pid in place of %(pid).
        (
            vec!["-o", "{root}/%(pid)/x.mojo", "prog"],
            format!("output directory '{}' does not exist", sb.path("4242")),
            1,
        ),
        (
            vec!["-o", "{root}/file/x.mojo", "prog"],
            format!("output directory '{}' is not a directory", sb.path("file")),
            1,
        ),
        (
            vec!["-o", "{out}", "prog"],
            format!("output '{}' is a directory, not a file", sb.path("out")),
            1,
        ),
        (
            vec!["nosuch-command"],
            "command 'nosuch-command' not found on PATH".into(),
            127,
        ),
        (
            vec!["{root}/bin/nosuch"],
            format!("command '{}' not found", sb.path("bin/nosuch")),
            127,
        ),
        (vec![""], "command '' not found".into(), 127),
        (
            vec!["--", "-c"],
            "command '-c' not found on PATH".into(),
            127,
        ),
        (
            vec!["a\nb"],
            "command 'a\\nb' not found on PATH".into(),
            127,
        ),
        (
            vec!["plain"],
            "command 'plain' is not executable (permission denied)".into(),
            126,
        ),
        (
            vec!["{root}/bin/plain"],
            format!(
                "command '{}' is not executable (permission denied)",
                sb.path("bin/plain")
            ),
            126,
        ),
        (
            vec!["dir"],
            "command 'dir' is not executable (is a directory)".into(),
            126,
        ),
    ];
    for (args, message, code) in cases {
        let err = match sb.parse(&args) {
            Ok(config) => panic!("{args:?} was accepted: {config:?}"),
            Err(err) => err,
        };
        let text = err.to_string();
        assert_eq!(text, message, "{args:?}");
        assert!(!text.contains('\n'), "{args:?}: {text:?}");
        assert_eq!(err.exit_code(), code, "{args:?}: {text}");
        assert!(!err.is_info());
        assert_eq!(err.hint().is_some(), code == EXIT_USAGE, "{args:?}");
    }
}

#[test]
fn output_directory_must_be_writable() {
    if nix::unistd::geteuid().is_root() {
        // access(2) grants root write access to any directory on a
        // read-write file system, so there is nothing to observe.
        eprintln!("skipped: running as root");
        return;
    }
    let sb = Sandbox::new();
    let ro = sb.root.path().join("ro");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    let err = sb.parse(&["-o", "{root}/ro/x.mojo", "prog"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "output directory '{}' is not writable (permission denied): choose another with -o",
            ro.display()
        )
    );
    assert_eq!(err.exit_code(), 1);
}

#[test]
fn help_and_version_are_not_errors() {
    let sb = Sandbox::new();
    for flag in ["-h", "--help"] {
        let err = sb.parse(&[flag, "prog"]).unwrap_err();
        assert!(matches!(err, CliError::Help(_)));
        let text = err.to_string();
        assert!(
            text.contains("Usage: echion [OPTIONS] command [ARGS]..."),
            "{text}"
        );
        for long in [
            "--interval",
            "--cpu",
            "--exposure",
            "--memory",
            "--native",
            "--output",
            "--pid",
            "--stealth",
            "--where",
            "--json",
            "--verbose",
            "--version",
        ] {
            assert!(text.contains(long), "{long} missing from help");
        }
        assert_eq!(err.exit_code(), 0);
        assert!(err.is_info());
    }
    for flag in ["-V", "--version"] {
        let err = sb.parse(&[flag]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("echion {}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(err.exit_code(), 0);
    }
}

#[test]
fn interval_units() {
    let cases = [
        ("1", 1),
        ("1000", 1000),
        ("1us", 1),
        ("1µs", 1),
        ("1ms", 1000),
        ("1s", 1_000_000),
        ("10.5ms", 10_500),
        ("0.000001s", 1),
        ("1.000ms", 1000),
        ("1.5000000000us", 1),
        ("18446744073709551615", u64::MAX),
        ("18446744073709s", 18_446_744_073_709_000_000),
    ];
    for (text, us) in cases {
        let got = parse_interval(text);
        if text == "1.5000000000us" {
            // Half a microsecond is not representable.
            assert!(got.is_err());
            continue;
        }
        assert_eq!(got.unwrap_or_else(|e| panic!("{text}: {e}")), us, "{text}");
    }
}

#[test]
fn exposure_values() {
    let cases = [
        ("1", Duration::from_secs(1)),
        ("1s", Duration::from_secs(1)),
        ("0.5", Duration::from_millis(500)),
        ("2.000000001", Duration::new(2, 1)),
        ("86400", Duration::from_secs(86_400)),
    ];
    for (text, want) in cases {
        assert_eq!(parse_exposure(text).unwrap(), want, "{text}");
    }
}

#[test]
fn pid_placeholder_expansion() {
    assert_eq!(expand_pid("%(pid).echion", 7), "7.echion");
    assert_eq!(expand_pid("/a/%(pid)/b-%(pid).mojo", 42), "/a/42/b-42.mojo");
    assert_eq!(expand_pid("/a/fixed.mojo", 42), "/a/fixed.mojo");
    assert_eq!(expand_pid("%(pid)%(pid)", 1), "11");
    assert_eq!(expand_pid("%(pi)", 1), "%(pi)");
    assert_eq!(PID_PLACEHOLDER, "%(pid)");
}

fn env_of(launch: &Launch) -> Vec<(String, String)> {
    launch
        .env
        .iter()
        .map(|(k, v)| {
            (
                k.to_str().unwrap().to_owned(),
                v.to_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn launch_plan_sets_the_whole_contract() {
    let sb = Sandbox::new();
    let mut config = base(&sb);
    config.output = "%(pid).echion".into();
    config.command = os(&["python3", "app.py", "--flag"]);
    let plan = plan_with(
        &config,
        Path::new("/boot"),
        None,
        Some(Path::new("/work/dir")),
    );
    assert_eq!(plan.program, "python3");
    assert_eq!(plan.args, os(&["app.py", "--flag"]));
    let want = [
        ("ECHION_INTERVAL", "1000"),
        ("ECHION_CPU", "0"),
        ("ECHION_MEMORY", "0"),
        ("ECHION_NATIVE", "0"),
        ("ECHION_STEALTH", "0"),
        ("ECHION_NO_THREAD", "0"),
        ("ECHION_EXPOSURE", ""),
        ("ECHION_OUTPUT", "/work/dir/%(pid).echion"),
        ("ECHION_VERBOSE", "0"),
        ("ECHION_FORMAT", ""),
        ("ECHION_SUMMARY", "0"),
        ("PYTHONPATH", "/boot"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(env_of(&plan), want);

    let config = Config {
        interval_us: 250,
        cpu: true,
        exposure: Some(Duration::from_millis(1500)),
        memory: true,
        native: true,
        output: "/abs/out-%(pid).mojo".into(),
        format: Some(echion_convert::Format::Pprof),
        summary: true,
        attach_pid: None,
        stealth: true,
        no_thread: true,
        where_pid: Some(99),
        json: false,
        verbose: true,
        command: os(&["prog"]),
    };
    let plan = plan_with(
        &config,
        Path::new("boot"),
        Some(OsStr::new("/a:/b")),
        Some(Path::new("/cwd")),
    );
    let want = [
        ("ECHION_INTERVAL", "250"),
        ("ECHION_CPU", "1"),
        ("ECHION_MEMORY", "1"),
        ("ECHION_NATIVE", "1"),
        ("ECHION_STEALTH", "1"),
        ("ECHION_NO_THREAD", "1"),
        ("ECHION_EXPOSURE", "1.5"),
        ("ECHION_OUTPUT", "/abs/out-%(pid).mojo"),
        ("ECHION_VERBOSE", "1"),
        ("ECHION_FORMAT", "pprof"),
        ("ECHION_SUMMARY", "1"),
        ("PYTHONPATH", "/cwd/boot:/a:/b"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(env_of(&plan), want);
    assert!(plan.args.is_empty());
}

#[test]
fn the_format_comes_from_the_output_name_unless_given() {
    let sb = Sandbox::new();
    let format = |args: &[&str]| sb.parse(args).unwrap().format;
    assert_eq!(
        format(&["-o", "{out}/p.svg", "prog"]),
        Some(echion_convert::Format::Svg)
    );
    assert_eq!(format(&["-o", "{out}/p.mojo", "prog"]), None);
    assert_eq!(
        format(&["--format", "speedscope", "-o", "{out}/p.mojo", "prog"]),
        Some(echion_convert::Format::Speedscope)
    );
    assert_eq!(
        format(&["--format", "mojo", "-o", "{out}/p.svg", "prog"]),
        None
    );
    let err = sb.parse(&["--format", "png", "prog"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown format 'png': give one of mojo, svg, speedscope, pprof, collapsed"
    );
    assert_eq!(err.exit_code(), 2);
    // A picture is converted into a regular file: a FIFO (or a device,
    // `/dev/stdout`) is refused, MOJO into it is not.
    let fifo = sb.root.path().join("out/pipe.svg");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let fifo = fifo.to_str().unwrap();
    let err = sb.parse(&["-o", fifo, "prog"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "output '{fifo}' is not a regular file: a svg picture is converted at the end from a \
             MOJO file beside its output; give a file name, or write MOJO there and run \
             echion-convert FILE -o '{fifo}'"
        )
    );
    assert_eq!(err.exit_code(), 1);
    assert_eq!(format(&["--format", "mojo", "-o", fifo, "prog"]), None);
    // `-o -` would be the program's own output.
    let err = sb.parse(&["-o", "-", "prog"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid output path '-': the standard output is the program's"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 2);
    // A program named `convert` is still a program to profile.
    write_file(
        &sb.root.path().join("bin/convert"),
        "#!/bin/sh\nexit 0\n",
        0o755,
    );
    assert_eq!(
        sb.parse(&["convert", "in.mojo"]).unwrap().command,
        os(&["convert", "in.mojo"])
    );
}

#[test]
fn launch_plan_uses_the_current_directory() {
    let mut config = base(&Sandbox::new());
    config.output = "sub/%(pid).mojo".into();
    let plan = launch_plan(&config, Path::new("/boot"));
    let output = &plan.env.iter().find(|(k, _)| k == ENV_OUTPUT).unwrap().1;
    let want = std::env::current_dir().unwrap().join("sub/%(pid).mojo");
    assert_eq!(Path::new(output), want);
}

#[test]
fn pythonpath_prepend() {
    let boot = Path::new("/opt/echion/bootstrap");
    let cases: [(Option<&str>, &str); 4] = [
        (None, "/opt/echion/bootstrap"),
        (Some(""), "/opt/echion/bootstrap"),
        (Some("/mine"), "/opt/echion/bootstrap:/mine"),
        (Some("/a:/b:"), "/opt/echion/bootstrap:/a:/b:"),
    ];
    for (existing, want) in cases {
        assert_eq!(
            prepend_path(boot, existing.map(OsStr::new)),
            OsString::from(want),
            "{existing:?}"
        );
    }
}

#[test]
fn resolves_like_execvp() {
    let sb = Sandbox::new();
    let first = sb.root.path().join("first");
    let second = sb.root.path().join("second");
    fs::create_dir(&first).unwrap();
    fs::create_dir(&second).unwrap();
    // Not executable in the first directory, executable in the second:
    // execvp skips the first.
    write_file(&first.join("tool"), "", 0o644);
    write_file(&second.join("tool"), "#!/bin/sh\n", 0o755);
    write_file(&first.join("both"), "#!/bin/sh\n", 0o755);
    write_file(&second.join("both"), "#!/bin/sh\n", 0o755);
    let mut path = first.clone().into_os_string();
    path.push(":");
    path.push(&second);
    let path = SearchPath(path);
    assert_eq!(
        resolve_command("tool".as_ref(), &path).unwrap(),
        second.join("tool")
    );
    assert_eq!(
        resolve_command("both".as_ref(), &path).unwrap(),
        first.join("both")
    );
    let abs = second.join("tool");
    assert_eq!(resolve_command(abs.as_os_str(), &path).unwrap(), abs);

    let dirs: Vec<PathBuf> = SearchPath("/a::/b:".into()).dirs().collect();
    let want: Vec<PathBuf> = ["/a", ".", "/b", "."].iter().map(PathBuf::from).collect();
    assert_eq!(dirs, want);
}

#[test]
fn finds_the_interpreter_of_a_command() {
    let sb = Sandbox::new();
    let bin = sb.root.path().join("bin");
    write_file(&bin.join("python3.12"), "", 0o755);
    let script = |name: &str, text: &str| {
        let p = sb.root.path().join(name);
        write_file(&p, text, 0o755);
        p
    };
    let path = SearchPath(bin.clone().into_os_string());
    let cases: Vec<(PathBuf, Option<PathBuf>)> = vec![
        (bin.join("python3.12"), Some(bin.join("python3.12"))),
        (
            PathBuf::from("/usr/bin/python"),
            Some(PathBuf::from("/usr/bin/python")),
        ),
        (
            script("direct", "#!/opt/py/bin/python3.11 -u\n"),
            Some("/opt/py/bin/python3.11".into()),
        ),
        (
            script("spaced", "#! /opt/py/bin/python\n"),
            Some("/opt/py/bin/python".into()),
        ),
        (
            script("viaenv", "#!/usr/bin/env python3.12\nimport x\n"),
            Some(bin.join("python3.12")),
        ),
        (
            script("envs", "#!/usr/bin/env -S A=1 python3.12 -u\n"),
            Some(bin.join("python3.12")),
        ),
        (script("envmissing", "#!/usr/bin/env python3.99\n"), None),
        (script("shell", "#!/bin/sh\nexec python3 \"$@\"\n"), None),
        (script("none", "print(1)\n"), None),
        (script("noline", "#!/usr/bin/python3"), None),
    ];
    for (program, want) in cases {
        assert_eq!(interpreter_for(&program, &path), want, "{program:?}");
    }
    assert!(is_python_name(OsStr::new("python3.13t")));
    assert!(!is_python_name(OsStr::new("ipython")));
}

#[test]
fn bootstrap_directory_checks() {
    let sb = Sandbox::new();
    let boot = sb.root.path().join("boot");
    fs::create_dir(&boot).unwrap();
    let err = check_bootstrap_dir(&boot).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "bootstrap directory '{}' has no sitecustomize.py",
            boot.display()
        )
    );
    assert_eq!(err.exit_code(), 1);
    let missing = sb.root.path().join("nope");
    assert_eq!(
        check_bootstrap_dir(&missing).unwrap_err().to_string(),
        format!(
            "bootstrap directory '{}' does not exist or is not a directory",
            missing.display()
        )
    );
    fs::write(boot.join("sitecustomize.py"), "").unwrap();
    check_bootstrap_dir(&boot).unwrap();
    // An explicit directory wins over the environment and the interpreter.
    let program = sb.root.path().join("bin/prog");
    let path = sb.ctx().path;
    assert_eq!(
        find_bootstrap_dir(Some(boot.clone()), &program, &path).unwrap(),
        boot
    );
}

#[test]
fn asks_the_interpreter_for_the_bootstrap() {
    let sb = Sandbox::new();
    let good = sb.root.path().join("python-good");
    write_file(
        &good,
        &format!("#!/bin/sh\n[ \"$1\" = -c ] && [ \"$2\" = \"{BOOTSTRAP_QUERY}\" ] && echo /some/where/bootstrap\n"),
        0o755,
    );
    assert_eq!(
        ask_interpreter(&good).unwrap(),
        PathBuf::from("/some/where/bootstrap")
    );

    let bad = sb.root.path().join("python-bad");
    write_file(
        &bad,
        "#!/bin/sh\necho 'Traceback (most recent call last):' >&2\necho \"ModuleNotFoundError: No module named 'echion'\" >&2\nexit 1\n",
        0o755,
    );
    let err = ask_interpreter(&bad).unwrap_err();
    let p = bad.display();
    assert_eq!(
        err.to_string(),
        format!(
            "the echion Python package is not installed for '{p}' (ModuleNotFoundError: No module named 'echion'): \
             install it with '{p} -m pip install echion', or set ECHION_BOOTSTRAP_DIR to its bootstrap directory"
        )
    );
    assert_eq!(err.exit_code(), 1);

    let silent = sb.root.path().join("python-silent");
    write_file(&silent, "#!/bin/sh\nexit 0\n", 0o755);
    assert!(ask_interpreter(&silent)
        .unwrap_err()
        .to_string()
        .contains("(no answer)"));

    let missing = sb.root.path().join("python-missing");
    assert!(matches!(
        ask_interpreter(&missing),
        Err(CliError::BootstrapNotInstalled { .. })
    ));
}

#[test]
fn quoted_values_stay_on_one_line() {
    assert_eq!(
        Quoted("a\nb\tc\u{1b}".into()).to_string(),
        "'a\\nb\\tc\\u{1b}'"
    );
    assert_eq!(Quoted::new(OsStr::new("ok é")).to_string(), "'ok é'");
}
