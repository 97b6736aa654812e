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

/// Converts the MOJO files `inputs` into `output` as `format` (from the
/// output's name when `None`); returns what was read.
pub fn convert(
    inputs: &[PathBuf],
    output: &Path,
    format: Option<Format>,
    options: &Options,
) -> Result<Aggregate, ConvertError> {
    let format = format.unwrap_or_else(|| Format::from_path(output));
    if format == Format::Mojo {
        return Err(ConvertError::ToMojo(output.to_path_buf()));
    }
    let agg = read_inputs(inputs, options)?;
    let werr = |e: std::io::Error| ConvertError::Write {
        path: output.to_path_buf(),
        reason: e.to_string(),
    };
    // Into a file beside the output, renamed over it at the end: a failed
    // conversion leaves no half-written picture (and an output that is
    // also an input is read whole first).
    let tmp = tmp_beside(output);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(256 * 1024, file);
        write(&agg, format, options, &mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, output)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(e));
    }
    Ok(agg)
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
        let mut w = BufWriter::with_capacity(256 * 1024, &mut *output);
        write(&agg, format, options, &mut w)?;
        w.flush()
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
}
