//! Reading MOJO files into distinct stacks: each (process, interpreter,
//! thread, frames) once, with the sum of its metric and its sample count.
//! Memory grows with the number of distinct stacks, frames and threads,
//! never with the number of samples.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use echion_mojo::{Frame, ReadError, SampleReader};
use hashbrown::HashMap;

use crate::ConvertError;

/// The thread `echion` samples from when it is not stealthy.
pub const SAMPLER_THREAD: &str = "echion.core.sampler";

/// What a profile measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Wall time, in microseconds.
    Wall,
    /// CPU time, in microseconds.
    Cpu,
    /// Bytes allocated and not freed.
    Memory,
}

impl Metric {
    /// The name of the quantity (`wall`, `cpu`, `memory`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Wall => "wall",
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
        }
    }

    /// The unit of a value (`microseconds`, `bytes`).
    pub fn unit(self) -> &'static str {
        match self {
            Metric::Memory => "bytes",
            _ => "microseconds",
        }
    }

    fn from_mode(mode: &str) -> Option<Metric> {
        match mode {
            "wall" => Some(Metric::Wall),
            "cpu" => Some(Metric::Cpu),
            "memory" => Some(Metric::Memory),
            _ => None,
        }
    }
}

/// What kind of frame a [`FrameRec`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A Python frame (or an asyncio task's, or a greenlet's).
    Python,
    /// A native (C) frame.
    Native,
    /// A kernel frame.
    Kernel,
    /// A frame the profiler could not read.
    Invalid,
    /// The garbage collector was running.
    Gc,
}

/// One distinct frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrameRec {
    /// File name (empty for kernel, invalid and GC frames).
    pub filename: Arc<str>,
    /// Function (qualified) name.
    pub scope: Arc<str>,
    /// Line (0 when unknown).
    pub line: i64,
    /// Its kind.
    pub kind: FrameKind,
}

impl FrameRec {
    /// `scope (file:line)`, the label of the pictures.
    pub fn label(&self) -> String {
        match self.kind {
            FrameKind::Python | FrameKind::Native if !self.filename.is_empty() => {
                if self.line > 0 {
                    format!("{} ({}:{})", self.scope, self.filename, self.line)
                } else {
                    format!("{} ({})", self.scope, self.filename)
                }
            }
            FrameKind::Kernel => format!("{} [kernel]", self.scope),
            _ => self.scope.to_string(),
        }
    }
}

/// One distinct thread of one interpreter of one process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThreadRec {
    /// Process id.
    pub pid: i64,
    /// Interpreter id (MOJO v3 on).
    pub iid: Option<i64>,
    /// Thread name as written (Austin writes a hex thread id).
    pub name: String,
}

impl ThreadRec {
    /// The name as austin-python shows it: a hex thread id in decimal.
    pub fn shown_name(&self) -> String {
        echion_mojo::profile::austin_thread_name(&self.name)
    }

    /// `pid 12 · MainThread` (with `· interpreter 1` for a
    /// subinterpreter's).
    pub fn title(&self) -> String {
        match self.iid {
            Some(iid) if iid != 0 => {
                format!(
                    "pid {} · interpreter {iid} · {}",
                    self.pid,
                    self.shown_name()
                )
            }
            _ => format!("pid {} · {}", self.pid, self.shown_name()),
        }
    }
}

/// One distinct stack and what its samples add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackRec {
    /// Index into [`Aggregate::threads`].
    pub thread: u32,
    /// Indices into [`Aggregate::frames`], outermost first.
    pub frames: Box<[u32]>,
    /// Sum of the samples' metric (µs or bytes; bytes may net negative).
    pub value: i64,
    /// Number of samples.
    pub samples: u64,
}

/// Which of echion's own threads and frames to leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filter {
    /// Keep the sampler thread and echion's bootstrap frames.
    pub keep_echion: bool,
}

/// An input that ended early: what was read of it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The file.
    pub path: PathBuf,
    /// What stopped the read.
    pub reason: String,
}

/// The distinct stacks of one or more MOJO files.
#[derive(Debug, Default)]
pub struct Aggregate {
    /// Distinct frames.
    pub frames: Vec<FrameRec>,
    frame_index: HashMap<FrameRec, u32>,
    /// Distinct threads, in the order first seen.
    pub threads: Vec<ThreadRec>,
    thread_index: HashMap<ThreadRec, u32>,
    /// Distinct stacks, in the order first seen.
    pub stacks: Vec<StackRec>,
    /// Stack keys: the thread's index, then the frames' (one allocation per
    /// distinct stack; a sample's key is looked up as a borrowed slice).
    stack_index: HashMap<Box<[u32]>, u32>,
    /// The metric (from the first input's `mode`).
    pub metric: Option<Metric>,
    /// Metadata of each input, in order (the input's index first).
    pub metadata: Vec<(usize, String, String)>,
    /// Samples read.
    pub samples: u64,
    /// Samples left out as echion's own.
    pub left_out: u64,
    /// Inputs that ended early.
    pub cuts: Vec<Cut>,
    /// Inputs read.
    pub inputs: Vec<PathBuf>,
    scratch: Vec<u32>,
}

/// Whether `filename` is a file of echion's package of the kind `part`
/// (`bootstrap`, `monkey`).
fn echion_file(filename: &str, part: &str) -> bool {
    filename
        .rfind("/echion/")
        .is_some_and(|i| filename[i + "/echion/".len()..].starts_with(part))
}

impl Aggregate {
    /// Reads the MOJO file at `path` into the aggregate.
    pub fn read_file(&mut self, path: &Path, filter: Filter) -> Result<(), ConvertError> {
        let file = File::open(path).map_err(|e| ConvertError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        self.read(BufReader::with_capacity(256 * 1024, file), path, filter)
    }

    /// Reads a MOJO stream (named `path` in messages) into the aggregate.
    pub fn read<R: std::io::Read>(
        &mut self,
        input: R,
        path: &Path,
        filter: Filter,
    ) -> Result<(), ConvertError> {
        let input_no = self.inputs.len();
        self.inputs.push(path.to_path_buf());
        let bad = |e: ReadError| ConvertError::NotMojo {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let mut reader = SampleReader::new(input).map_err(bad)?;
        let mut read = 0u64;
        let mut seen_meta = 0;
        loop {
            let sample = match reader.next_sample() {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(ReadError::Io(e)) => {
                    return Err(ConvertError::Open {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })
                }
                Err(ReadError::Decode(e)) => {
                    let cut_short =
                        matches!(e.kind, echion_mojo::DecodeErrorKind::Truncated) && read > 0;
                    if !cut_short {
                        return Err(ConvertError::NotMojo {
                            path: path.to_path_buf(),
                            reason: e.to_string(),
                        });
                    }
                    self.cuts.push(Cut {
                        path: path.to_path_buf(),
                        reason: format!("cut short at byte {}", e.offset),
                    });
                    // The sample read before the error, if it was complete.
                    while let Ok(Some(s)) = reader.next_sample() {
                        self.add(&s, filter);
                    }
                    break;
                }
            };
            self.take_metadata(input_no, reader.metadata(), &mut seen_meta, path)?;
            self.add(&sample, filter);
            read += 1;
        }
        self.take_metadata(input_no, reader.metadata(), &mut seen_meta, path)?;
        if self.metric.is_none() {
            // A stream without `mode` (a bare writer's): time.
            self.metric = Some(Metric::Wall);
        }
        Ok(())
    }

    fn take_metadata(
        &mut self,
        input_no: usize,
        meta: &[(String, String)],
        seen: &mut usize,
        path: &Path,
    ) -> Result<(), ConvertError> {
        for (k, v) in &meta[*seen..] {
            if k == "mode" {
                let m = Metric::from_mode(v).unwrap_or(Metric::Wall);
                match self.metric {
                    Some(old) if old != m && (old == Metric::Memory || m == Metric::Memory) => {
                        return Err(ConvertError::Mixed {
                            path: path.to_path_buf(),
                            mode: v.clone(),
                            other: old.name(),
                        })
                    }
                    Some(_) => {}
                    None => self.metric = Some(m),
                }
            }
            self.metadata.push((input_no, k.clone(), v.clone()));
        }
        *seen = meta.len();
        Ok(())
    }

    fn frame(&mut self, rec: FrameRec) -> u32 {
        if let Some(&i) = self.frame_index.get(&rec) {
            return i;
        }
        let i = self.frames.len() as u32;
        self.frames.push(rec.clone());
        self.frame_index.insert(rec, i);
        i
    }

    fn add(&mut self, s: &echion_mojo::Sample, filter: Filter) {
        self.samples += 1;
        if !filter.keep_echion && s.thread == SAMPLER_THREAD {
            self.left_out += 1;
            return;
        }
        // The stack's key: its thread's index (filled in below), then its
        // frames'.
        let mut frames = std::mem::take(&mut self.scratch);
        frames.clear();
        frames.push(0);
        let empty: Arc<str> = Arc::from("");
        for f in &s.frames {
            let rec = match f {
                Frame::Frame(info) => {
                    if !filter.keep_echion {
                        if echion_file(&info.filename, "bootstrap/") {
                            // echion starting up: not the program's time.
                            self.left_out += 1;
                            self.scratch = frames;
                            return;
                        }
                        if echion_file(&info.filename, "monkey/") {
                            continue;
                        }
                    }
                    FrameRec {
                        filename: info.filename.clone(),
                        scope: info.scope.clone(),
                        line: info.line,
                        kind: if info.is_native() {
                            FrameKind::Native
                        } else {
                            FrameKind::Python
                        },
                    }
                }
                Frame::Kernel(name) => FrameRec {
                    filename: empty.clone(),
                    scope: name.clone(),
                    line: 0,
                    kind: FrameKind::Kernel,
                },
                Frame::Invalid => FrameRec {
                    filename: empty.clone(),
                    scope: Arc::from("INVALID"),
                    line: 0,
                    kind: FrameKind::Invalid,
                },
            };
            let i = self.frame(rec);
            frames.push(i);
        }
        if s.gc {
            let i = self.frame(FrameRec {
                filename: empty,
                scope: Arc::from("GC"),
                line: 0,
                kind: FrameKind::Gc,
            });
            frames.push(i);
        }
        let thread = ThreadRec {
            pid: s.pid,
            iid: s.iid,
            name: s.thread.clone(),
        };
        let t = match self.thread_index.get(&thread) {
            Some(&t) => t,
            None => {
                let t = self.threads.len() as u32;
                self.threads.push(thread.clone());
                self.thread_index.insert(thread, t);
                t
            }
        };
        frames[0] = t;
        let value = s.time.or(s.memory).unwrap_or(0);
        match self.stack_index.get(&frames[..]) {
            Some(&i) => {
                let st = &mut self.stacks[i as usize];
                st.value += value;
                st.samples += 1;
            }
            None => {
                let i = self.stacks.len() as u32;
                self.stacks.push(StackRec {
                    thread: t,
                    frames: frames[1..].into(),
                    value,
                    samples: 1,
                });
                self.stack_index.insert(frames[..].into(), i);
            }
        }
        self.scratch = frames;
    }

    /// The metric (wall time when no input said).
    pub fn metric(&self) -> Metric {
        self.metric.unwrap_or(Metric::Wall)
    }

    /// Sum of every kept stack's value.
    pub fn total(&self) -> i64 {
        self.stacks.iter().map(|s| s.value).sum()
    }

    /// The last value of metadata `key` in any input.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .rev()
            .find(|(_, k, _)| k == key)
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use echion_mojo::{FrameSpec, Metric as M, MojoWriter, SampleRef, StackEntry};

    /// A CPU-mode MOJO profile of `n` samples of one stack on `thread`.
    pub(crate) fn profile(thread: &str, files: &[&str], n: usize) -> Vec<u8> {
        let mut w = MojoWriter::new(Vec::new(), 7).unwrap();
        w.metadata("mode", "cpu").unwrap();
        let scopes: Vec<String> = (0..files.len()).map(|i| format!("f{i}")).collect();
        let frames: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                StackEntry::Frame(w.intern_frame(&FrameSpec {
                    filename: f,
                    scope: &scopes[i],
                    line: i as i64 + 1,
                    line_end: 0,
                    column: 0,
                    column_end: 0,
                }))
            })
            .collect();
        for _ in 0..n {
            w.sample(&SampleRef {
                iid: 0,
                thread,
                stack: &frames,
                metrics: &[M::Time(10)],
                gc: false,
                idle: false,
            })
            .unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn identical_samples_become_one_stack_with_their_sum() {
        let mut a = Aggregate::default();
        let data = profile("MainThread", &["a.py", "b.py"], 5);
        a.read(&data[..], Path::new("x"), Filter::default())
            .unwrap();
        assert_eq!(a.stacks.len(), 1);
        assert_eq!(a.stacks[0].value, 50);
        assert_eq!(a.stacks[0].samples, 5);
        assert_eq!(a.metric(), Metric::Cpu);
        assert_eq!(
            a.frames[a.stacks[0].frames[1] as usize].label(),
            "f1 (b.py:2)"
        );
    }

    #[test]
    fn echion_own_thread_and_frames_are_left_out_unless_kept() {
        let hook = "/v/site-packages/echion/monkey/threading.py";
        let boot = "/v/site-packages/echion/bootstrap/__init__.py";
        let mut data = Vec::new();
        for (thread, files) in [
            (SAMPLER_THREAD, vec!["t.py"]),
            ("Worker", vec!["t.py", hook, "w.py"]),
            ("MainThread", vec!["<frozen site>", boot]),
        ] {
            let mut a = Aggregate::default();
            let p = profile(thread, &files, 2);
            a.read(&p[..], Path::new("x"), Filter::default()).unwrap();
            let mut kept = Aggregate::default();
            kept.read(&p[..], Path::new("x"), Filter { keep_echion: true })
                .unwrap();
            assert_eq!(kept.stacks[0].frames.len(), files.len());
            data.push((
                thread,
                a.stacks.len(),
                a.stacks.first().map(|s| s.frames.len()),
                a.left_out,
            ));
        }
        assert_eq!(
            data,
            vec![
                (SAMPLER_THREAD, 0, None, 2),
                ("Worker", 1, Some(2), 0),
                ("MainThread", 0, None, 2)
            ]
        );
    }

    #[test]
    fn a_stream_cut_mid_event_keeps_its_complete_samples() {
        let data = profile("MainThread", &["a.py"], 3);
        let mut a = Aggregate::default();
        a.read(&data[..data.len() - 1], Path::new("x"), Filter::default())
            .unwrap();
        assert_eq!(a.cuts.len(), 1);
        assert_eq!(a.samples, 2);
        let mut b = Aggregate::default();
        let err = b.read(&b"not a profile"[..], Path::new("x"), Filter::default());
        assert!(matches!(err, Err(ConvertError::NotMojo { .. })), "{err:?}");
    }
}
