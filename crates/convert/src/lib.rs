//! Turns MOJO profiles (any writer's, v1 to v4) into the pictures and files
//! people already use: an interactive flame graph (SVG, by `inferno`),
//! speedscope JSON, pprof (gzipped protobuf), and collapsed stacks.
//!
//! Inputs are read as a stream into their distinct stacks
//! ([`aggregate::Aggregate`]): memory grows with the number of distinct
//! stacks, not with the size of the files. Several inputs (the files of one
//! family of processes) merge into one picture, each process apart by its
//! pid. echion's own sampler thread and bootstrap frames are left out
//! unless [`Options::keep_echion`] is set; the MOJO files keep them.

pub mod aggregate;
mod formats;
mod pprof;
pub mod summary;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub use aggregate::{Aggregate, Filter, Metric};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// MOJO itself (no conversion).
    Mojo,
    /// An interactive flame graph (SVG with its script: hover, search, zoom).
    Svg,
    /// speedscope's JSON file format.
    Speedscope,
    /// pprof's `profile.proto`, gzipped.
    Pprof,
    /// Collapsed (folded) stacks: Austin's text lines, one per distinct
    /// stack, with the summed metric.
    Collapsed,
}

impl Format {
    /// Every format, in the order the help lists them.
    pub const ALL: [Format; 5] = [
        Format::Mojo,
        Format::Svg,
        Format::Speedscope,
        Format::Pprof,
        Format::Collapsed,
    ];

    /// The name `--format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Mojo => "mojo",
            Format::Svg => "svg",
            Format::Speedscope => "speedscope",
            Format::Pprof => "pprof",
            Format::Collapsed => "collapsed",
        }
    }

    /// The format named `name` (`folded` is `collapsed`).
    pub fn from_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "mojo" | "echion" => Some(Format::Mojo),
            "svg" | "flamegraph" => Some(Format::Svg),
            "speedscope" => Some(Format::Speedscope),
            "pprof" => Some(Format::Pprof),
            "collapsed" | "folded" => Some(Format::Collapsed),
            _ => None,
        }
    }

    /// The format an output's name asks for: `.svg`, `.speedscope.json`,
    /// `.pprof` or `.pb.gz`, `.collapsed` or `.folded`; MOJO for anything
    /// else.
    pub fn from_path(path: &Path) -> Format {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".svg") {
            Format::Svg
        } else if name.ends_with(".speedscope.json") || name.ends_with(".speedscope") {
            Format::Speedscope
        } else if name.ends_with(".pprof") || name.ends_with(".pb.gz") || name.ends_with(".pb") {
            Format::Pprof
        } else if name.ends_with(".collapsed") || name.ends_with(".folded") {
            Format::Collapsed
        } else {
            Format::Mojo
        }
    }

    /// The names `--format` takes, for messages.
    pub fn names() -> String {
        Format::ALL.map(Format::name).join(", ")
    }
}

/// How to convert.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// Keep echion's sampler thread and bootstrap frames.
    pub keep_echion: bool,
    /// One flame graph for all threads of a process instead of one tower
    /// per thread.
    pub merge_threads: bool,
    /// The flame graph's title (the command line, say); a default names
    /// the inputs.
    pub title: Option<String>,
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// An input cannot be read.
    #[error("cannot read {path}: {reason}")]
    Open {
        /// The input.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// An input is not a MOJO file, or is damaged before its first sample.
    #[error("{path} is not a readable MOJO profile: {reason}")]
    NotMojo {
        /// The input.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Inputs of memory and time profiles cannot share a picture.
    #[error(
        "{path} is a {mode} profile, the inputs before it are {other} profiles: convert them apart"
    )]
    Mixed {
        /// The input.
        path: PathBuf,
        /// Its mode.
        mode: String,
        /// The mode of the inputs before.
        other: &'static str,
    },
    /// The output would be MOJO (its name says no other format, or MOJO
    /// was asked for): nothing to convert.
    #[error("{0}: MOJO is not a conversion target: name the output .svg, .speedscope.json, .pprof or .collapsed, or give --format svg|speedscope|pprof|collapsed")]
    ToMojo(PathBuf),
    /// The output cannot be written.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The output.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
}

/// Reads `inputs` into one aggregate.
pub fn read_inputs(inputs: &[PathBuf], options: &Options) -> Result<Aggregate, ConvertError> {
    let mut agg = Aggregate::default();
    let filter = Filter {
        keep_echion: options.keep_echion,
    };
    for input in inputs {
        agg.read_file(input, filter)?;
    }
    Ok(agg)
}

/// Writes `agg` as `format` into `out`.
pub fn write<W: Write>(
    agg: &Aggregate,
    format: Format,
    options: &Options,
    out: W,
) -> std::io::Result<()> {
    match format {
        Format::Mojo => Err(std::io::Error::other("MOJO is not a conversion target")),
        Format::Svg => formats::svg(agg, options, out),
        Format::Speedscope => formats::speedscope(agg, options, out),
        Format::Pprof => pprof::write(agg, out),
        Format::Collapsed => formats::collapsed(agg, out),
    }
}

/// The output name that means the standard output.
pub const STDOUT: &str = "-";

/// Converts the MOJO files `inputs` into `output` as `format` (from the
/// output's name when `None`; collapsed stacks for [`STDOUT`]); returns
/// what was read.
///
/// A regular file (or one that does not exist yet) is written beside it
/// and renamed over it at the end: a failed conversion leaves no
/// half-written picture, and an output that is also an input is read
/// whole first. Where the output is a symbolic link, the file it points
/// to is the one replaced (the link stays). Anything else (`-`, a FIFO,
/// `/dev/stdout`, a terminal) is written into as it is: a device node is
/// never replaced by a file.
pub fn convert(
    inputs: &[PathBuf],
    output: &Path,
    format: Option<Format>,
    options: &Options,
) -> Result<Aggregate, ConvertError> {
    let target = Target::of(output);
    let format = format.unwrap_or_else(|| match target {
        Target::Stdout => Format::Collapsed,
        _ => Format::from_path(output),
    });
    if format == Format::Mojo {
        return Err(ConvertError::ToMojo(output.to_path_buf()));
    }
    let agg = read_inputs(inputs, options)?;
    let body = |w: &mut dyn Write| write(&agg, format, options, w);
    let result = match &target {
        Target::Stdout => match buffered(std::io::stdout().lock(), body) {
            // The reader had what it wanted (`| head`).
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        },
        // (Truncated by `create`: a FIFO or a device ignores it.)
        Target::Into(path) => File::create(path).and_then(|file| buffered(file, body)),
        Target::Replace(path) => replace(path, body),
    };
    result.map_err(|e| ConvertError::Write {
        path: output.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(agg)
}

/// Where [`convert`] writes.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// The standard output ([`STDOUT`]).
    Stdout,
    /// Into the path as it is: a FIFO, a device, a socket, a link that
    /// points nowhere yet.
    Into(PathBuf),
    /// A regular file, new or replaced whole (the link's target for a
    /// link).
    Replace(PathBuf),
}

impl Target {
    fn of(output: &Path) -> Target {
        if output.as_os_str() == STDOUT {
            return Target::Stdout;
        }
        let is_link = std::fs::symlink_metadata(output).is_ok_and(|m| m.file_type().is_symlink());
        match std::fs::metadata(output) {
            Ok(m) if !m.is_file() => Target::Into(output.to_path_buf()),
            Ok(_) if is_link => match std::fs::canonicalize(output) {
                Ok(real) => Target::Replace(real),
                Err(_) => Target::Into(output.to_path_buf()),
            },
            // A link to nothing: writing through it makes its target.
            Err(_) if is_link => Target::Into(output.to_path_buf()),
            _ => Target::Replace(output.to_path_buf()),
        }
    }
}

/// Writes a regular file `path` whole: into a file beside it, renamed over
/// it once complete (with the permissions of the file it replaces). Where
/// no file can be made beside it (a directory the user may not write in),
/// `path` itself is truncated and written.
fn replace(
    path: &Path,
    body: impl Fn(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = tmp_beside(path);
    let file = match File::create(&tmp) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return buffered(File::create(path)?, body);
        }
        Err(e) => return Err(e),
    };
    let result = (|| {
        let mut w = BufWriter::with_capacity(BUFFER, file);
        body(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        if let Ok(old) = std::fs::metadata(path) {
            file.set_permissions(old.permissions())?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The buffer a picture is written through.
const BUFFER: usize = 256 * 1024;

/// Writes `body` into `out` through a buffer, flushed at the end.
fn buffered<W: Write>(
    out: W,
    body: impl Fn(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(BUFFER, out);
    body(&mut w)?;
    w.flush()
}

/// Converts into an open file (the profile file run mode holds locked):
/// truncates it and writes.
pub fn convert_into(
    inputs: &[PathBuf],
    output: &mut File,
    output_name: &Path,
    format: Format,
    options: &Options,
) -> Result<Aggregate, ConvertError> {
    if format == Format::Mojo {
        return Err(ConvertError::ToMojo(output_name.to_path_buf()));
    }
    let agg = read_inputs(inputs, options)?;
    let result = (|| {
        use std::io::Seek;
        output.set_len(0)?;
        output.seek(std::io::SeekFrom::Start(0))?;
        buffered(&mut *output, |w| write(&agg, format, options, w))
    })();
    result.map_err(|e| ConvertError::Write {
        path: output_name.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(agg)
}

fn tmp_beside(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_output_names() {
        for (name, f) in [
            ("prof.svg", Format::Svg),
            ("a/PROF.SVG", Format::Svg),
            ("prof.speedscope.json", Format::Speedscope),
            ("prof.json", Format::Mojo),
            ("prof.pprof", Format::Pprof),
            ("prof.pb.gz", Format::Pprof),
            ("prof.collapsed", Format::Collapsed),
            ("prof.folded", Format::Collapsed),
            ("prof.mojo", Format::Mojo),
            ("%(pid).echion", Format::Mojo),
            ("prof", Format::Mojo),
        ] {
            assert_eq!(Format::from_path(Path::new(name)), f, "{name}");
        }
        for f in Format::ALL {
            assert_eq!(Format::from_name(f.name()), Some(f));
        }
        assert_eq!(Format::from_name("folded"), Some(Format::Collapsed));
        assert_eq!(Format::from_name("png"), None);
    }

    /// A directory of the test's own, empty.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("echion-convert-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn input(dir: &Path) -> PathBuf {
        let path = dir.join("in.mojo");
        std::fs::write(&path, aggregate::tests::profile("MainThread", &["a.py"], 3)).unwrap();
        path
    }

    #[test]
    fn a_link_still_points_at_the_file_it_names_now_converted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("link");
        let inp = input(&dir);
        let real = dir.join("real.collapsed");
        std::fs::write(&real, "old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.join("latest.collapsed");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        convert(&[inp], &link, None, &Options::default()).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let text = std::fs::read_to_string(&real).unwrap();
        assert!(text.contains("MainThread;a.py:f0:1 30"), "{text}");
        let mode = std::fs::metadata(&real).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        // (No file left beside it.)
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn what_is_not_a_regular_file_is_written_into_never_replaced() {
        use std::os::unix::fs::FileTypeExt;
        assert_eq!(Target::of(Path::new(STDOUT)), Target::Stdout);
        assert_eq!(
            Target::of(Path::new("/dev/null")),
            Target::Into("/dev/null".into())
        );
        let dir = scratch("into");
        let new = dir.join("new.svg");
        assert_eq!(Target::of(&new), Target::Replace(new.clone()));
        let socket = dir.join("s.collapsed");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(Target::of(&socket), Target::Into(socket.clone()));
        // A link to nothing yet: its target is made.
        let dangling = dir.join("dangling.collapsed");
        std::os::unix::fs::symlink(dir.join("made.collapsed"), &dangling).unwrap();
        assert_eq!(Target::of(&dangling), Target::Into(dangling.clone()));
        let inp = input(&dir);
        convert(
            std::slice::from_ref(&inp),
            &dangling,
            None,
            &Options::default(),
        )
        .unwrap();
        assert!(std::fs::read_to_string(dir.join("made.collapsed"))
            .unwrap()
            .contains("a.py"));
        // A FIFO gets the picture and stays a FIFO.
        let fifo = dir.join("pipe.collapsed");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        let reading = fifo.clone();
        std::thread::spawn(move || tx.send(std::fs::read_to_string(reading)));
        convert(&[inp], &fifo, None, &Options::default()).unwrap();
        let text = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap()
            .unwrap();
        assert!(text.contains("a.py"), "{text}");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
