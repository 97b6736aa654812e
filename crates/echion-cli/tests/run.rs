//! End-to-end tests of the `echion` binary: it execs a real Python with a
//! stand-in bootstrap (a `sitecustomize.py` that records the environment it
//! sees), and everything the user observes must be the command's own.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const ECHION: &str = env!("CARGO_BIN_EXE_echion");

/// Writing an executable while another thread forks can leave the write
/// descriptor open in the child long enough for a later exec of that file
/// to fail with ETXTBSY; writes of executables and spawns take this lock.
static FORK_LOCK: Mutex<()> = Mutex::new(());

/// The stand-in bootstrap: records the environment and its own pid.
const SITECUSTOMIZE: &str = r#"
import os
_path = os.environ.get("ECHION_TEST_ENV_FILE")
if _path:
    with open(_path, "w") as _f:
        for _k in sorted(os.environ):
            if _k.startswith("ECHION_") or _k == "PYTHONPATH":
                _f.write("%s=%s\n" % (_k, os.environ[_k]))
        _f.write("PID=%d\n" % os.getpid())
"#;

/// The profiled program: `echo` copies stdin to stdout and stderr and exits
/// with 3; `term` kills itself with SIGTERM; `touch PATH` creates a file;
/// `ok` prints a line and exits normally.
const APP: &str = r#"
import os, signal, sys, time
mode = sys.argv[1]
if mode == "echo":
    data = sys.stdin.read()
    sys.stdout.write("out:" + data)
    sys.stderr.write("err:" + data)
    sys.exit(3)
elif mode == "term":
    sys.stdout.write("dying\n")
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
elif mode == "touch":
    open(sys.argv[2], "w").close()
elif mode == "ok":
    print("ok", " ".join(sys.argv[2:]))
"#;

/// A CPython to run: 3.11 from pyenv if installed, else `python3` on PATH.
fn python() -> Option<PathBuf> {
    let pyenv = Path::new("/root/.pyenv/versions");
    if let Ok(entries) = fs::read_dir(pyenv) {
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("3.11."))
            .map(|e| e.path().join("bin/python3"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return Some(p);
        }
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())
}

/// A scratch directory with the bootstrap (`boot/`), the app (`app.py`) and
/// an output directory (`out/`).
struct Sandbox {
    dir: tempfile::TempDir,
    python: PathBuf,
}

/// What one run of `echion` left behind.
struct Run {
    status: ExitStatus,
    pid: u32,
    stdout: String,
    stderr: String,
}

/// Kills and reaps the child if a test fails before it exits.
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Sandbox {
    fn new() -> Option<Self> {
        let Some(python) = python() else {
            eprintln!("skipped: no python3 found");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir(dir.path().join("boot")).unwrap();
        fs::write(dir.path().join("boot/sitecustomize.py"), SITECUSTOMIZE).unwrap();
        fs::write(dir.path().join("app.py"), APP).unwrap();
        fs::create_dir(dir.path().join("out")).unwrap();
        Some(Sandbox { dir, python })
    }

    fn root(&self) -> PathBuf {
        // The child's getcwd() reports the canonical path.
        self.dir.path().canonicalize().unwrap()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    fn python(&self) -> &str {
        self.python.to_str().unwrap()
    }

    /// Writes an executable script.
    fn write_exe(&self, rel: &str, text: &str) -> PathBuf {
        let _guard = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A command for `echion args…` in the sandbox, with the stand-in
    /// bootstrap and a clean `ECHION_*` environment.
    fn echion<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(ECHION);
        cmd.args(args)
            .current_dir(self.root())
            .env("ECHION_BOOTSTRAP_DIR", self.path("boot"))
            .env("ECHION_TEST_ENV_FILE", self.path("env.txt"))
            .env_remove("PYTHONPATH");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ECHION_") && key != "ECHION_BOOTSTRAP_DIR" {
                cmd.env_remove(key);
            }
        }
        cmd
    }

    /// Runs `cmd` with `stdin` as its input; stdout and stderr go to files
    /// so that nothing can block. Fails the test after 60 s.
    fn run(&self, cmd: &mut Command, stdin: &str) -> Run {
        let stdout = self.path("stdout.txt");
        let stderr = self.path("stderr.txt");
        cmd.stdin(Stdio::piped())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap());
        let mut reaper = {
            let _guard = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            Reaper(Some(cmd.spawn().expect("spawn echion")))
        };
        let child = reaper.0.as_mut().unwrap();
        let pid = child.id();
        {
            let mut input = child.stdin.take().unwrap();
            // The command may exit without reading; a broken pipe is fine.
            let _ = input.write_all(stdin.as_bytes());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "echion did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        reaper.0 = None;
        Run {
            status,
            pid,
            stdout: fs::read_to_string(stdout).unwrap(),
            stderr: fs::read_to_string(stderr).unwrap(),
        }
    }

    /// The environment the bootstrap recorded, as `KEY=VALUE` lines.
    fn recorded_env(&self) -> Vec<(String, String)> {
        fs::read_to_string(self.path("env.txt"))
            .expect("the bootstrap ran")
            .lines()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }
}

fn lookup<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn the_command_sees_the_contract_and_owns_the_streams() {
    let Some(sb) = Sandbox::new() else { return };
    let mut cmd = sb.echion(&[
        "-i",
        "10ms",
        "-c",
        "-x",
        "1.5",
        "-s",
        "-o",
        "out/%(pid).mojo",
        sb.python(),
        "app.py",
        "echo",
    ]);
    cmd.env("PYTHONPATH", "/existing/one:/existing/two");
    let run = sb.run(&mut cmd, "hello\nworld\n");

    // Streams and exit status are the command's own, untouched.
    assert_eq!(run.stdout, "out:hello\nworld\n");
    assert_eq!(run.stderr, "err:hello\nworld\n");
    assert_eq!(run.status.code(), Some(3));

    let env = sb.recorded_env();
    let boot = sb.path("boot");
    let want = [
        ("ECHION_CPU", "1".to_owned()),
        ("ECHION_EXPOSURE", "1.5".to_owned()),
        ("ECHION_INTERVAL", "10000".to_owned()),
        ("ECHION_MEMORY", "0".to_owned()),
        ("ECHION_NATIVE", "0".to_owned()),
        (
            "ECHION_OUTPUT",
            format!("{}/out/%(pid).mojo", sb.root().display()),
        ),
        ("ECHION_STEALTH", "1".to_owned()),
        ("ECHION_VERBOSE", "0".to_owned()),
        (
            "PYTHONPATH",
            format!("{}:/existing/one:/existing/two", boot.display()),
        ),
    ];
    for (key, value) in want {
        assert_eq!(lookup(&env, key), Some(value.as_str()), "{key}");
    }
    // echion exec'd: the interpreter is the very process we started.
    assert_eq!(lookup(&env, "PID"), Some(run.pid.to_string().as_str()));
}

#[test]
fn defaults_and_a_normal_exit() {
    let Some(sb) = Sandbox::new() else { return };
    let run = sb.run(
        &mut sb.echion(&[sb.python(), "app.py", "ok", "-c", "--help"]),
        "",
    );
    assert_eq!(run.stdout, "ok -c --help\n");
    assert_eq!(run.stderr, "");
    assert_eq!(run.status.code(), Some(0));
    let env = sb.recorded_env();
    assert_eq!(lookup(&env, "ECHION_INTERVAL"), Some("1000"));
    assert_eq!(lookup(&env, "ECHION_CPU"), Some("0"));
    assert_eq!(lookup(&env, "ECHION_EXPOSURE"), Some(""));
    let output = format!("{}/%(pid).echion", sb.root().display());
    assert_eq!(lookup(&env, "ECHION_OUTPUT"), Some(output.as_str()));
    let boot = sb.path("boot");
    assert_eq!(lookup(&env, "PYTHONPATH"), boot.to_str());
}

#[test]
fn death_by_signal_passes_through() {
    let Some(sb) = Sandbox::new() else { return };
    let run = sb.run(&mut sb.echion(&[sb.python(), "app.py", "term"]), "");
    assert_eq!(run.stdout, "dying\n");
    assert_eq!(run.status.signal(), Some(15), "{:?}", run.status);
    assert_eq!(run.status.code(), None);
}

#[test]
fn verbose_prints_the_plan_then_runs() {
    let Some(sb) = Sandbox::new() else { return };
    let run = sb.run(&mut sb.echion(&["-v", sb.python(), "app.py", "ok"]), "");
    assert_eq!(run.stdout, "ok \n");
    assert_eq!(run.status.code(), Some(0));
    assert!(
        run.stderr.lines().all(|l| l.starts_with("echion: ")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("echion: ECHION_VERBOSE='1'"),
        "{}",
        run.stderr
    );
    assert_eq!(lookup(&sb.recorded_env(), "ECHION_VERBOSE"), Some("1"));
}

#[test]
fn help_and_version_go_to_stdout() {
    let Some(sb) = Sandbox::new() else { return };
    let run = sb.run(&mut sb.echion(&["-V"]), "");
    assert_eq!(
        run.stdout,
        format!("echion {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(run.stderr, "");
    assert_eq!(run.status.code(), Some(0));

    let run = sb.run(&mut sb.echion(&["--help"]), "");
    assert!(
        run.stdout
            .contains("Usage: echion [OPTIONS] command [ARGS]..."),
        "{}",
        run.stdout
    );
    assert_eq!(run.stderr, "");
    assert_eq!(run.status.code(), Some(0));
}

/// Every bad input: one line (plus at most the hint), a non-zero status,
/// nothing on stdout, and the command never ran.
#[test]
fn bad_input_is_one_line_and_runs_nothing() {
    let Some(sb) = Sandbox::new() else { return };
    let marker = sb.path("marker");
    let marker = marker.to_str().unwrap();
    let py = sb.python();
    let not_exec = sb.path("not-exec");
    fs::write(&not_exec, "#!/bin/sh\ntouch marker\n").unwrap();
    let not_exec = not_exec.to_str().unwrap();
    let empty_boot = sb.path("empty-boot");
    fs::create_dir(&empty_boot).unwrap();
    // A "python" whose echion package is missing; run as the command it would
    // create the marker.
    let fake = sb.write_exe(
        "python-fake",
        &format!(
            "#!/bin/sh\nif [ \"$1\" = -c ]; then echo \"ModuleNotFoundError: No module named 'echion'\" >&2; exit 1; fi\ntouch {marker}\n"
        ),
    );
    let fake = fake.to_str().unwrap();

    let touch = |pre: &[&str]| -> Vec<String> {
        pre.iter()
            .chain(&[py, "app.py", "touch", marker])
            .map(|s| s.to_string())
            .collect()
    };
    let own = |v: &[&str]| -> Vec<String> { v.iter().map(|s| s.to_string()).collect() };
    let cases: Vec<(Vec<String>, Option<&Path>, &str, i32)> = vec![
        (
            touch(&["--bogus"]),
            None,
            "echion: unknown option '--bogus'",
            2,
        ),
        (touch(&["-i", "0"]), None, "echion: invalid interval '0'", 2),
        (
            touch(&["-i", "-3ms"]),
            None,
            "echion: invalid interval '-3ms'",
            2,
        ),
        (
            touch(&["-i", "fast"]),
            None,
            "echion: invalid interval 'fast'",
            2,
        ),
        (
            touch(&["-i", "99999999999999999999"]),
            None,
            "echion: invalid interval",
            2,
        ),
        (touch(&["-x", "0"]), None, "echion: invalid exposure '0'", 2),
        (
            touch(&["-o", "missing/x.mojo"]),
            None,
            "echion: output directory 'missing' does not exist",
            1,
        ),
        (
            touch(&["-o", "app.py/x.mojo"]),
            None,
            "echion: output directory 'app.py' is not a directory",
            1,
        ),
        (
            touch(&["-o", "out"]),
            None,
            "echion: output 'out' is a directory",
            1,
        ),
        (
            touch(&["-m", "-c"]),
            None,
            "echion: -m (memory) and -c (CPU time) measure different things: give one of them",
            2,
        ),
        (
            touch(&["-p", "1"]),
            None,
            "echion: attach mode (-p) profiles a running process and takes no command",
            2,
        ),
        (
            touch(&["-w", "1"]),
            None,
            "echion: where mode (-w) shows a running process and takes no command",
            2,
        ),
        (own(&[]), None, "echion: no command to profile", 2),
        (own(&["-c"]), None, "echion: no command to profile", 2),
        (
            own(&["no-such-command-echion", marker]),
            None,
            "echion: command 'no-such-command-echion' not found on PATH",
            127,
        ),
        (own(&[not_exec]), None, "echion: command", 126),
        (
            touch(&[]),
            Some(&empty_boot),
            "echion: bootstrap directory",
            1,
        ),
        (
            own(&[fake, "app.py"]),
            Some(Path::new("")),
            "echion: the echion Python package is not installed for",
            1,
        ),
    ];
    for (args, boot, prefix, code) in cases {
        let mut cmd = sb.echion(&args);
        match boot {
            // An empty path: no ECHION_BOOTSTRAP_DIR, ask the interpreter.
            Some(b) if b.as_os_str().is_empty() => {
                cmd.env_remove("ECHION_BOOTSTRAP_DIR");
            }
            Some(b) => {
                cmd.env("ECHION_BOOTSTRAP_DIR", b);
            }
            None => {}
        }
        let run = sb.run(&mut cmd, "");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert!(
            lines.len() == 1 || (lines.len() == 2 && lines[1] == "try 'echion --help'"),
            "{args:?}: {:?}",
            run.stderr
        );
        assert!(lines[0].starts_with(prefix), "{args:?}: {:?}", lines[0]);
        assert_eq!(run.status.code(), Some(code), "{args:?}: {}", run.stderr);
        assert_eq!(
            lines.len() == 2,
            code == 2,
            "hint only for usage errors: {args:?}"
        );
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(!Path::new(marker).exists(), "{args:?} ran the command");
        assert!(!sb.path("env.txt").exists(), "{args:?} ran the bootstrap");
    }
}

/// Without ECHION_BOOTSTRAP_DIR the interpreter that will run is asked
/// where `echion.bootstrap` lives, and its answer goes on PYTHONPATH.
#[test]
fn the_interpreter_is_asked_for_the_bootstrap() {
    let Some(sb) = Sandbox::new() else { return };
    let boot = sb.path("boot");
    // Answers the query like a Python with echion installed, runs the real
    // interpreter otherwise.
    let fake = sb.write_exe(
        "bin/python3.11",
        &format!(
            "#!/bin/sh\nif [ \"$1\" = -c ] && [ \"$2\" = \"{query}\" ]; then echo '{boot}'; exit 0; fi\nexec '{py}' \"$@\"\n",
            query = echion_cli::BOOTSTRAP_QUERY,
            boot = boot.display(),
            py = sb.python(),
        ),
    );
    let mut cmd = sb.echion(&[fake.to_str().unwrap(), "app.py", "ok"]);
    cmd.env_remove("ECHION_BOOTSTRAP_DIR");
    let run = sb.run(&mut cmd, "");
    assert_eq!(run.stdout, "ok \n", "{}", run.stderr);
    assert_eq!(run.status.code(), Some(0));
    assert_eq!(lookup(&sb.recorded_env(), "PYTHONPATH"), boot.to_str());

    // Through a `#!/usr/bin/env python3.11` script found on PATH.
    fs::remove_file(sb.path("env.txt")).unwrap();
    let script = sb.write_exe("bin/tool", "#!/usr/bin/env python3.11\nprint('tool ran')\n");
    let mut path = sb.path("bin").into_os_string();
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let mut cmd = sb.echion(&["tool"]);
    cmd.env_remove("ECHION_BOOTSTRAP_DIR").env("PATH", path);
    let run = sb.run(&mut cmd, "");
    assert_eq!(
        run.stdout,
        "tool ran\n",
        "{} ({})",
        run.stderr,
        script.display()
    );
    assert_eq!(run.status.code(), Some(0));
    assert_eq!(lookup(&sb.recorded_env(), "PYTHONPATH"), boot.to_str());
}
