//! The aggregate view of a MOJO stream: metadata and samples with their
//! frames resolved.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Read;
use std::sync::Arc;

use crate::decode::{DecodeError, DecodeErrorKind, Decoder, ReadError};
use crate::event::{id, Event, Version};

/// A Python (or native) frame with its strings resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrameInfo {
    /// File name.
    pub filename: Arc<str>,
    /// Scope: function or qualified name.
    pub scope: Arc<str>,
    /// First line.
    pub line: i64,
    /// Last line (0 when the stream has none).
    pub line_end: i64,
    /// First column (0 when the stream has none).
    pub column: i64,
    /// End column (0 when the stream has none).
    pub column_end: i64,
}

impl FrameInfo {
    /// Austin's rule for a native frame: the file name is neither a `.py`
    /// file nor a `<...>` pseudo-file. `STACK_REPEAT` drops such frames from
    /// the top of the repeated stack.
    pub fn is_native(&self) -> bool {
        let name = &*self.filename;
        !(name.ends_with(".py") || (name.starts_with('<') && name.ends_with('>')))
    }
}

/// One frame of a sample.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Frame {
    /// A frame defined by `FRAME` and referenced by `FRAME_REF`.
    Frame(Arc<FrameInfo>),
    /// A kernel frame (`FRAME_KERNEL`).
    Kernel(Arc<str>),
    /// A frame that could not be read (`FRAME_INVALID`).
    Invalid,
}

/// One sample: a thread's stack at one moment and its metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sample {
    /// Process id.
    pub pid: i64,
    /// Interpreter id (MOJO v3 and later).
    pub iid: Option<i64>,
    /// Thread name.
    pub thread: String,
    /// Frames, outermost first.
    pub frames: Vec<Frame>,
    /// Time metric in microseconds, if the sample has one.
    pub time: Option<i64>,
    /// Memory metric in bytes, if the sample has one.
    pub memory: Option<i64>,
    /// Whether the thread was idle.
    pub idle: bool,
    /// Whether the garbage collector was running.
    pub gc: bool,
}

/// A whole MOJO profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Format version from the header.
    pub version: Version,
    /// Metadata pairs in the order they appear (a key may repeat; the last
    /// one wins in [`Profile::metadata`]).
    pub metadata: Vec<(String, String)>,
    /// Samples in the order they appear.
    pub samples: Vec<Sample>,
}

impl Profile {
    /// Parses a whole stream held in memory.
    pub fn parse(data: &[u8]) -> Result<Profile, DecodeError> {
        let mut decoder = Decoder::new(data)?;
        let mut builder = Builder::new(decoder.version());
        loop {
            let offset = decoder.offset();
            match decoder.next_event()? {
                Some(event) => builder
                    .push(event)
                    .map_err(|kind| DecodeError { offset, kind })?,
                None => return Ok(builder.finish()),
            }
        }
    }

    /// Parses a stream up to its first error, keeping every sample completed
    /// before it (one that has its metric; a last sample without one is
    /// dropped even at a clean end, since the writer was cut short). This reads the profile of a process that died
    /// in the middle of writing. Fails only if the header is bad.
    pub fn parse_partial(data: &[u8]) -> Result<(Profile, Option<DecodeError>), DecodeError> {
        let mut decoder = Decoder::new(data)?;
        let mut builder = Builder::new(decoder.version());
        loop {
            let offset = decoder.offset();
            match decoder.next_event() {
                Ok(Some(event)) => {
                    if let Err(kind) = builder.push(event) {
                        let err = DecodeError { offset, kind };
                        return Ok((builder.finish_partial(), Some(err)));
                    }
                }
                Ok(None) => return Ok((builder.finish_partial(), None)),
                Err(err) => return Ok((builder.finish_partial(), Some(err))),
            }
        }
    }

    /// Reads a whole stream from `reader` and parses it.
    pub fn read<R: Read>(mut reader: R) -> Result<Profile, ReadError> {
        let mut data = Vec::new();
        reader.read_to_end(&mut data)?;
        Ok(Self::parse(&data)?)
    }

    /// The last value given for `key`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Writes the profile in Austin's text format, as austin-python's
    /// `mojo2austin` renders it: metadata as `# key: value` lines, then one
    /// line a sample, `P<pid>;T<iid>:<thread>;<file>:<scope>:<line>;… <metric>`
    /// (a thread name that reads as a hex number is shown in decimal, and
    /// streams before v3 have no `<iid>:`).
    pub fn write_austin<W: std::io::Write>(&self, mut out: W) -> std::io::Result<()> {
        for (k, v) in &self.metadata {
            writeln!(out, "# {k}: {v}")?;
        }
        for s in &self.samples {
            let thread = austin_thread_name(&s.thread);
            match s.iid {
                Some(iid) => write!(out, "P{};T{}:{}", s.pid, iid, thread)?,
                None => write!(out, "P{};T{}", s.pid, thread)?,
            }
            for f in &s.frames {
                match f {
                    Frame::Frame(i) => write!(out, ";{}:{}:{}", i.filename, i.scope, i.line)?,
                    Frame::Kernel(k) => write!(out, ";kernel:{k}:0")?,
                    Frame::Invalid => write!(out, ";:INVALID:")?,
                }
            }
            if s.gc {
                write!(out, ";:GC:")?;
            }
            writeln!(out, " {}", s.time.or(s.memory).unwrap_or(0))?;
        }
        Ok(())
    }

    /// Sum of the time metrics of all samples.
    pub fn total_time(&self) -> i64 {
        self.samples.iter().filter_map(|s| s.time).sum()
    }

    /// Sum of the memory metrics of all samples.
    pub fn total_memory(&self) -> i64 {
        self.samples.iter().filter_map(|s| s.memory).sum()
    }
}

/// A thread's name as austin-python renders it: one that reads as a hex
/// number (Austin writes thread ids so) in decimal, any other as it is.
pub fn austin_thread_name(name: &str) -> String {
    u128::from_str_radix(name, 16)
        .map(|n| n.to_string())
        .unwrap_or_else(|_| name.to_owned())
}

/// Reads the samples of a MOJO stream one at a time, holding only what
/// later samples may refer to (strings, frames, each thread's last stack):
/// memory grows with the number of distinct frames and threads, not with
/// the length of the stream.
pub struct SampleReader<R> {
    events: crate::decode::EventReader<R>,
    builder: Builder,
    ended: bool,
}

impl<R: Read> SampleReader<R> {
    /// Reads and checks the header.
    pub fn new(inner: R) -> Result<Self, ReadError> {
        let events = crate::decode::EventReader::new(inner)?;
        let builder = Builder::new(events.version());
        Ok(Self {
            events,
            builder,
            ended: false,
        })
    }

    /// The version named in the header.
    pub fn version(&self) -> Version {
        self.events.version()
    }

    /// Offset of the next event from the start of the stream.
    pub fn offset(&self) -> u64 {
        self.events.offset()
    }

    /// The metadata read so far, in order.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.builder.metadata
    }

    /// The next complete sample, `Ok(None)` at the end of the stream. On an
    /// error the sample it interrupted is dropped unless it already had its
    /// metric (the writers emit it last), and is returned by the next call.
    pub fn next_sample(&mut self) -> Result<Option<Sample>, ReadError> {
        loop {
            if self.builder.samples.len() > 1 {
                return Ok(Some(self.builder.samples.remove(0)));
            }
            if self.ended {
                return Ok(self.builder.samples.pop());
            }
            let offset = self.events.offset();
            let event = match self.events.next_event() {
                Ok(Some(event)) => event,
                Ok(None) => {
                    self.ended = true;
                    self.builder.close();
                    continue;
                }
                Err(e) => {
                    self.end_partial();
                    return Err(e);
                }
            };
            if let Err(kind) = self.builder.push(event) {
                self.end_partial();
                return Err(DecodeError { offset, kind }.into());
            }
        }
    }

    fn end_partial(&mut self) {
        self.ended = true;
        if self.builder.open {
            self.builder.open = false;
            if matches!(self.builder.samples.last(), Some(s) if s.time.is_none() && s.memory.is_none())
            {
                self.builder.samples.pop();
            }
        }
    }
}

/// Keys are per process: a key is resolved in the process of the last
/// `STACK` (or before any, in no process).
type Key = (Option<i64>, i64);

/// A multiplicative hasher for the integer keys of the maps below: one
/// lookup a frame reference makes SipHash the reader's main cost. Keys come
/// from the input, but a collision flood only slows the read down, which the
/// input's own size bounds.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHasher>>;

struct Builder {
    version: Version,
    metadata: Vec<(String, String)>,
    samples: Vec<Sample>,
    strings: KeyMap<Arc<str>>,
    frames: KeyMap<Arc<FrameInfo>>,
    depth_hint: usize,
    previous: HashMap<(i64, String), Vec<Frame>>,
    pid: Option<i64>,
    open: bool,
    /// Whether the open sample has had its `STACK_REPEAT`.
    repeated: bool,
    unknown: Arc<str>,
    empty: Arc<str>,
}

impl Builder {
    fn new(version: Version) -> Self {
        Self {
            version,
            metadata: Vec::new(),
            samples: Vec::new(),
            strings: KeyMap::default(),
            frames: KeyMap::default(),
            depth_hint: 0,
            previous: HashMap::new(),
            pid: None,
            open: false,
            repeated: false,
            unknown: Arc::from("<unknown>"),
            empty: Arc::from(""),
        }
    }

    fn current(&mut self, event_id: u8) -> Result<&mut Sample, DecodeErrorKind> {
        if !self.open {
            return Err(DecodeErrorKind::OutsideSample(event_id));
        }
        self.samples
            .last_mut()
            .ok_or(DecodeErrorKind::OutsideSample(event_id))
    }

    fn close(&mut self) {
        if self.open {
            self.open = false;
            if self.version >= Version::V4 {
                if let Some(s) = self.samples.last() {
                    self.previous
                        .insert((s.pid, s.thread.clone()), s.frames.clone());
                }
            }
        }
    }

    /// String keys 1 and 0 stand for `<unknown>` and the empty string in
    /// Austin's readers and writers without being defined.
    fn string(&self, key: i64) -> Result<Arc<str>, DecodeErrorKind> {
        if key == 1 {
            return Ok(self.unknown.clone());
        }
        if let Some(s) = self.strings.get(&(self.pid, key)) {
            return Ok(s.clone());
        }
        if let Some(s) = self.strings.get(&(None, key)) {
            return Ok(s.clone());
        }
        if key == 0 {
            return Ok(self.empty.clone());
        }
        Err(DecodeErrorKind::UnknownString(key))
    }

    fn push(&mut self, event: Event<'_>) -> Result<(), DecodeErrorKind> {
        match event {
            Event::Metadata { key, value } => {
                self.metadata.push((key.to_owned(), value.to_owned()));
            }
            Event::Stack { pid, iid, thread } => {
                self.close();
                self.pid = Some(pid);
                if let Some(last) = self.samples.last() {
                    self.depth_hint = last.frames.len();
                }
                self.samples.push(Sample {
                    pid,
                    iid,
                    thread: thread.to_owned(),
                    frames: Vec::with_capacity(self.depth_hint),
                    ..Sample::default()
                });
                self.open = true;
                self.repeated = false;
            }
            Event::String { key, value } => {
                self.strings.insert((self.pid, key), Arc::from(value));
            }
            Event::StringRef { key } => {
                self.string(key)?;
            }
            Event::Frame {
                key,
                filename,
                scope,
                line,
                line_end,
                column,
                column_end,
            } => {
                let info = FrameInfo {
                    filename: self.string(filename)?,
                    scope: self.string(scope)?,
                    line,
                    line_end,
                    column,
                    column_end,
                };
                self.frames.insert((self.pid, key), Arc::new(info));
            }
            Event::FrameRef { key } => {
                let frame = self
                    .frames
                    .get(&(self.pid, key))
                    .or_else(|| self.frames.get(&(None, key)))
                    .cloned()
                    .ok_or(DecodeErrorKind::UnknownFrame(key))?;
                self.current(id::FRAME_REF)?
                    .frames
                    .push(Frame::Frame(frame));
            }
            Event::FrameKernel { scope } => {
                let scope = Arc::from(scope);
                self.current(id::FRAME_KERNEL)?
                    .frames
                    .push(Frame::Kernel(scope));
            }
            Event::FrameInvalid => self.current(id::FRAME_INVALID)?.frames.push(Frame::Invalid),
            Event::Gc => self.current(id::GC)?.gc = true,
            Event::Idle => self.current(id::IDLE)?.idle = true,
            Event::MetricTime(n) => self.current(id::METRIC_TIME)?.time = Some(n),
            Event::MetricMemory(n) => self.current(id::METRIC_MEMORY)?.memory = Some(n),
            Event::StackRepeat => {
                // Once per sample: a stack is then at most the previous one
                // plus the frames of this sample, so the frames held grow
                // with the input, not exponentially.
                self.current(id::STACK_REPEAT)?;
                if std::mem::replace(&mut self.repeated, true) {
                    return Err(DecodeErrorKind::RepeatedStackRepeat);
                }
                let sample = self.current(id::STACK_REPEAT)?;
                let key = (sample.pid, std::mem::take(&mut sample.thread));
                let mut base = self.previous.get(&key).cloned().unwrap_or_default();
                while matches!(base.last(), Some(Frame::Frame(f)) if f.is_native())
                    || matches!(base.last(), Some(Frame::Kernel(_)))
                {
                    base.pop();
                }
                let sample = self.current(id::STACK_REPEAT)?;
                sample.thread = key.1;
                base.append(&mut sample.frames);
                sample.frames = base;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Profile {
        self.close();
        Profile {
            version: self.version,
            metadata: self.metadata,
            samples: self.samples,
        }
    }

    /// Drops the sample the error interrupted unless it already has its
    /// metric: the writers emit the metric last.
    fn finish_partial(mut self) -> Profile {
        if self.open {
            self.open = false;
            if matches!(self.samples.last(), Some(s) if s.time.is_none() && s.memory.is_none()) {
                self.samples.pop();
            }
        }
        self.finish()
    }
}
