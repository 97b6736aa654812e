//! The high-level writer: interning, samples, buffering.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::event::{encode_header, id, Event, Version};
use crate::varint;

/// Bytes buffered before they are handed to the underlying writer.
const FLUSH_AT: usize = 64 * 1024;

/// First key given to a string: Austin's readers give keys 0 and 1 a meaning
/// of their own (the empty string and `<unknown>`).
const FIRST_STRING_KEY: u32 = 2;

/// First key given to a frame.
const FIRST_FRAME_KEY: u32 = 1;

/// Default of [`MojoWriter::set_intern_limit`]: distinct strings kept
/// interned (some 15 MB of tables at most, with the frames that use them).
pub const INTERN_LIMIT: usize = 1 << 15;

/// Threads whose last stack is kept for v4's `STACK_REPEAT`.
const PREVIOUS_LIMIT: usize = 4096;

/// A string interned by a [`MojoWriter`]: its key in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StringId(u32);

impl StringId {
    /// The key written in the stream.
    pub fn key(self) -> i64 {
        i64::from(self.0)
    }
}

/// A frame interned by a [`MojoWriter`]: its key in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FrameId(u32);

impl FrameId {
    /// A frame id given by something other than a [`MojoWriter`] (which
    /// numbers its own frames): a sink that keeps frames in a table of its
    /// own.
    pub const fn new(key: u32) -> Self {
        Self(key)
    }

    /// The key written in the stream.
    pub fn key(self) -> i64 {
        i64::from(self.0)
    }
}

/// The description of a frame to intern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameSpec<'a> {
    /// File name.
    pub filename: &'a str,
    /// Function or qualified name.
    pub scope: &'a str,
    /// First line.
    pub line: i64,
    /// Last line (0 if unknown).
    pub line_end: i64,
    /// First column (0 if unknown).
    pub column: i64,
    /// End column (0 if unknown).
    pub column_end: i64,
}

/// One entry of a stack passed to [`MojoWriter::sample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StackEntry {
    /// An interned frame.
    Frame(FrameId),
    /// A kernel frame, named by an interned string (written inline, as the
    /// format wants).
    Kernel(StringId),
    /// A frame that could not be read.
    Invalid,
}

/// The metric a sample carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Microseconds (wall or CPU time).
    Time(i64),
    /// Bytes.
    Memory(i64),
}

/// One sample, as handed to [`MojoWriter::sample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRef<'a> {
    /// Interpreter id (written from MOJO v3 on).
    pub iid: i64,
    /// Thread name.
    pub thread: &'a str,
    /// Frames, outermost first.
    pub stack: &'a [StackEntry],
    /// Metrics, usually exactly one.
    pub metrics: &'a [Metric],
    /// The garbage collector was running.
    pub gc: bool,
    /// The thread was idle.
    pub idle: bool,
}

/// Options of a [`MojoWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterOptions {
    /// Format version. v3 (the default) is read by every MOJO reader in the
    /// field; v4 adds `STACK_REPEAT`, read by austin-python 2.
    pub version: Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FrameKey {
    filename: StringId,
    scope: StringId,
    line: i64,
    line_end: i64,
    column: i64,
    column_end: i64,
}

/// Writes one process's profile as a MOJO stream.
///
/// The writer interns strings and frames: [`MojoWriter::intern_frame`]
/// returns a small key, assigned in order and never reused, and the `STRING`
/// and `FRAME` events that define it are written once, right after the
/// `STACK` of the first sample that follows (Austin's readers resolve keys
/// per process, so definitions must follow a `STACK`). Its memory is
/// bounded: past [`MojoWriter::set_intern_limit`] distinct strings it
/// forgets what it interned and defines again, under new keys, what is
/// used after (a key handed out stays valid: readers keep every
/// definition), so a program that makes new names all the time (`exec` of
/// generated files) costs the file bytes, not the writer memory. Output is buffered
/// and handed to the underlying writer in large chunks; call
/// [`MojoWriter::flush`] to push it out and [`MojoWriter::finish`] at the
/// end (dropping the writer flushes too, ignoring errors).
#[derive(Debug)]
pub struct MojoWriter<W: Write> {
    out: Option<W>,
    buf: Vec<u8>,
    pending: Vec<u8>,
    version: Version,
    pid: i64,
    strings: HashMap<Box<str>, StringId>,
    /// The text of the strings interned since the last time the writer
    /// forgot: `string_values[i]` is key `string_base + i`.
    string_values: Vec<Box<str>>,
    string_base: u32,
    /// The keys [`MojoWriter::intern_string`] handed out, both ways.
    kept: HashMap<u32, Box<str>>,
    kept_keys: HashMap<Box<str>, StringId>,
    frames: HashMap<FrameKey, FrameId>,
    frame_native: Vec<bool>,
    previous: HashMap<Box<str>, Vec<StackEntry>>,
    intern_limit: usize,
}

impl<W: Write> MojoWriter<W> {
    /// Starts a stream for process `pid` with the default options (v3).
    pub fn new(out: W, pid: i64) -> io::Result<Self> {
        Self::with_options(out, pid, WriterOptions::default())
    }

    /// Starts a stream for process `pid`; the header is buffered at once.
    pub fn with_options(out: W, pid: i64, options: WriterOptions) -> io::Result<Self> {
        // (Its room for samples is made at the first one: see `sample`.)
        let mut buf = Vec::new();
        encode_header(options.version, &mut buf);
        Ok(Self {
            out: Some(out),
            buf,
            pending: Vec::new(),
            version: options.version,
            pid,
            strings: HashMap::new(),
            string_values: Vec::new(),
            string_base: FIRST_STRING_KEY,
            kept: HashMap::new(),
            kept_keys: HashMap::new(),
            frames: HashMap::new(),
            frame_native: Vec::new(),
            previous: HashMap::new(),
            intern_limit: INTERN_LIMIT,
        })
    }

    /// The format version being written.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The process id every sample is written for.
    pub fn pid(&self) -> i64 {
        self.pid
    }

    /// Number of string keys handed out so far (a string defined again
    /// after the writer forgot it counts again).
    pub fn string_count(&self) -> usize {
        (self.string_base - FIRST_STRING_KEY) as usize + self.string_values.len()
    }

    /// Number of frame keys handed out so far.
    pub fn frame_count(&self) -> usize {
        self.frame_native.len()
    }

    /// How many distinct strings are kept interned (at least 1; default
    /// [`INTERN_LIMIT`]); past it the writer forgets every string and frame
    /// and defines them again when they are used.
    pub fn set_intern_limit(&mut self, strings: usize) {
        self.intern_limit = strings.max(1);
    }

    /// Forgets every string and frame interned: the next use of each
    /// defines it again under a new key.
    fn forget_interned(&mut self) {
        self.string_base += self.string_values.len() as u32;
        self.string_values.clear();
        self.strings.clear();
        self.frames.clear();
    }

    /// Writes a `key: value` metadata pair.
    pub fn metadata(&mut self, key: &str, value: &str) -> io::Result<()> {
        let key = clean(key);
        let value = clean(value);
        Event::Metadata {
            key: &key,
            value: &value,
        }
        .encode(self.version, &mut self.buf);
        self.maybe_flush()
    }

    /// Interns a string and returns its key. NUL characters, which would end
    /// the string early in the stream, are replaced by U+FFFD.
    ///
    /// Meant for the few names a caller keeps keys of (a
    /// [`StackEntry::Kernel`]'s): the writer keeps their text for as long
    /// as it lives, past any forgetting of its tables.
    pub fn intern_string(&mut self, s: &str) -> StringId {
        if let Some(&id) = self.kept_keys.get(s) {
            return id;
        }
        let id = self.intern(s);
        self.kept_keys.insert(s.into(), id);
        self.kept.insert(id.0, clean(s).into());
        id
    }

    /// Interns a string for a frame (forgotten with the tables).
    fn intern(&mut self, s: &str) -> StringId {
        if let Some(&id) = self.strings.get(s) {
            return id;
        }
        if self.strings.len() >= self.intern_limit {
            self.forget_interned();
        }
        let id = StringId(self.string_base + self.string_values.len() as u32);
        let value: Box<str> = clean(s).into();
        Event::String {
            key: id.key(),
            value: &value,
        }
        .encode(self.version, &mut self.pending);
        self.strings.insert(s.into(), id);
        self.string_values.push(value);
        id
    }

    /// The text of an interned string (`None` for a frame's string from
    /// before the writer last forgot, see [`MojoWriter::set_intern_limit`]).
    pub fn string(&self, id: StringId) -> Option<&str> {
        text(&self.string_values, self.string_base, &self.kept, id)
    }

    /// Interns a frame (and its strings) and returns its key. The same
    /// description always gives the same key.
    pub fn intern_frame(&mut self, frame: &FrameSpec<'_>) -> FrameId {
        let key = FrameKey {
            filename: self.intern(frame.filename),
            scope: self.intern(frame.scope),
            line: frame.line,
            line_end: frame.line_end,
            column: frame.column,
            column_end: frame.column_end,
        };
        if let Some(&id) = self.frames.get(&key) {
            return id;
        }
        if self.frames.len() >= 2 * self.intern_limit {
            // Many lines of few files: the frames are forgotten alone (the
            // strings' keys stay good).
            self.frames.clear();
        }
        let id = FrameId(FIRST_FRAME_KEY + self.frame_native.len() as u32);
        Event::Frame {
            key: id.key(),
            filename: key.filename.key(),
            scope: key.scope.key(),
            line: key.line,
            line_end: key.line_end,
            column: key.column,
            column_end: key.column_end,
        }
        .encode(self.version, &mut self.pending);
        let filename = frame.filename;
        let native =
            !(filename.ends_with(".py") || (filename.starts_with('<') && filename.ends_with('>')));
        self.frames.insert(key, id);
        self.frame_native.push(native);
        id
    }

    fn is_native(&self, entry: StackEntry) -> bool {
        match entry {
            StackEntry::Frame(FrameId(k)) => self
                .frame_native
                .get(k.wrapping_sub(FIRST_FRAME_KEY) as usize)
                .copied()
                .unwrap_or(false),
            StackEntry::Kernel(_) => true,
            StackEntry::Invalid => false,
        }
    }

    /// Writes one sample: `STACK`, the definitions of what was interned
    /// since the last sample, the frame references (or, in v4, a
    /// `STACK_REPEAT` for the part shared with the thread's previous
    /// sample), `GC`, `IDLE` and the metrics.
    pub fn sample(&mut self, sample: &SampleRef<'_>) -> io::Result<()> {
        if self.buf.capacity() < FLUSH_AT {
            // The buffer's room for a flush's worth of samples, made by the
            // first sample rather than with the writer: by whoever samples,
            // with the allocator in effect there (echion's ticks in a signal
            // handler take theirs from memory a forked child gets empty, and
            // a block made before would sit in the program's heap, which
            // every fork copies).
            self.buf.reserve_exact(FLUSH_AT + 4096 - self.buf.len());
        }
        let buf = &mut self.buf;
        buf.push(id::STACK);
        varint::encode(self.pid, buf);
        if self.version >= Version::V3 {
            varint::encode(sample.iid, buf);
        }
        if sample.thread.as_bytes().contains(&0) {
            buf.extend_from_slice(clean(sample.thread).as_bytes());
        } else {
            buf.extend_from_slice(sample.thread.as_bytes());
        }
        buf.push(0);
        if !self.pending.is_empty() {
            buf.extend_from_slice(&self.pending);
            self.pending.clear();
        }

        let mut from = 0;
        if self.version >= Version::V4 {
            from = self.repeat_prefix(sample.thread, sample.stack);
            if from > 0 {
                self.buf.push(id::STACK_REPEAT);
            }
        }
        // Room for every frame reference at its longest (event byte and a
        // 32-bit key), so the loop below never reallocates.
        self.buf.reserve((sample.stack.len() - from) * 6 + 32);
        for &entry in &sample.stack[from..] {
            match entry {
                StackEntry::Frame(FrameId(k)) => {
                    // Keys are small and positive: one or two bytes cover
                    // the first 8192 frames without the general encoder.
                    if k < 0x40 {
                        self.buf.extend_from_slice(&[id::FRAME_REF, k as u8]);
                    } else if k < 0x2000 {
                        self.buf.extend_from_slice(&[
                            id::FRAME_REF,
                            0x80 | (k & 0x3f) as u8,
                            (k >> 6) as u8,
                        ]);
                    } else {
                        self.buf.push(id::FRAME_REF);
                        varint::encode(i64::from(k), &mut self.buf);
                    }
                }
                StackEntry::Kernel(s) => {
                    let name = text(&self.string_values, self.string_base, &self.kept, s)
                        .unwrap_or("<unknown>");
                    Event::FrameKernel { scope: name }.encode(self.version, &mut self.buf);
                }
                StackEntry::Invalid => self.buf.push(id::FRAME_INVALID),
            }
        }
        if sample.gc {
            self.buf.push(id::GC);
        }
        if sample.idle {
            self.buf.push(id::IDLE);
        }
        for metric in sample.metrics {
            let (event, n) = match *metric {
                Metric::Time(n) => (id::METRIC_TIME, n),
                Metric::Memory(n) => (id::METRIC_MEMORY, n),
            };
            self.buf.push(event);
            varint::encode(n, &mut self.buf);
        }
        self.maybe_flush()
    }

    /// How many leading entries of `stack` the v4 `STACK_REPEAT` of this
    /// thread stands for (0: none), and remembers `stack` as the thread's
    /// previous one. The reader's rule is mirrored exactly: the previous
    /// stack less its trailing native frames is put before the new frames.
    /// Stacks with kernel or invalid frames never take part, because
    /// Austin's readers keep no such frames in the previous stack.
    fn repeat_prefix(&mut self, thread: &str, stack: &[StackEntry]) -> usize {
        let plain = stack.iter().all(|e| matches!(e, StackEntry::Frame(_)));
        let mut from = 0;
        if let Some(prev) = self.previous.get(thread) {
            if !prev.is_empty() && prev.iter().all(|e| matches!(e, StackEntry::Frame(_))) {
                let mut base = prev.len();
                while base > 0 && self.is_native(prev[base - 1]) {
                    base -= 1;
                }
                if plain && base > 0 && stack.len() >= base && stack[..base] == prev[..base] {
                    from = base;
                }
            }
        }
        match self.previous.get_mut(thread) {
            Some(prev) => {
                prev.clear();
                prev.extend_from_slice(stack);
            }
            None => {
                if self.previous.len() >= PREVIOUS_LIMIT {
                    // Threads come and go: the next sample of each is
                    // written whole, which the reader needs nothing for.
                    self.previous.clear();
                }
                self.previous.insert(thread.into(), stack.to_vec());
            }
        }
        from
    }

    fn maybe_flush(&mut self) -> io::Result<()> {
        if self.buf.len() >= FLUSH_AT {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> io::Result<()> {
        if let Some(out) = self.out.as_mut() {
            if !self.buf.is_empty() {
                let result = out.write_all(&self.buf);
                self.buf.clear();
                result?;
            }
        }
        Ok(())
    }

    /// Hands everything buffered to the underlying writer and flushes it.
    /// A sample is never split across two flushes.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        self.out
            .as_ref()
            .expect("only finish and abandon take the writer")
    }

    /// Returns the underlying writer without writing what is buffered:
    /// after a write failed, to end the stream by other means.
    pub fn abandon(mut self) -> W {
        self.buf.clear();
        self.out
            .take()
            .expect("only finish and abandon take the writer")
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self
            .out
            .take()
            .expect("only finish and abandon take the writer"))
    }
}

impl<W: Write> Drop for MojoWriter<W> {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; `finish` reports them.
        let _ = self.flush();
    }
}

fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    if s.as_bytes().contains(&0) {
        std::borrow::Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// The text of string `id`: among the `values` interned since the tables
/// were last forgotten (the first has key `base`), or those `kept`.
fn text<'a>(
    values: &'a [Box<str>],
    base: u32,
    kept: &'a HashMap<u32, Box<str>>,
    id: StringId,
) -> Option<&'a str> {
    let recent = id.0.checked_sub(base).and_then(|i| values.get(i as usize));
    recent.or_else(|| kept.get(&id.0)).map(|s| &**s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Frame, Profile};

    fn frame(w: &mut MojoWriter<Vec<u8>>, file: &str) -> StackEntry {
        StackEntry::Frame(w.intern_frame(&FrameSpec {
            filename: file,
            scope: "f",
            line: 1,
            line_end: 1,
            column: 0,
            column_end: 0,
        }))
    }

    #[test]
    fn new_names_all_the_time_keep_the_tables_bounded_and_the_profile_exact() {
        // v4: each thread's last stack is kept too (for STACK_REPEAT).
        let v4 = WriterOptions {
            version: Version::V4,
        };
        let mut w = MojoWriter::with_options(Vec::new(), 1, v4).expect("vec");
        w.set_intern_limit(100);
        let main = frame(&mut w, "main.py");
        for i in 0..10_000 {
            let gen = frame(&mut w, &format!("<gen-{i}>"));
            let thread = format!("Thread-{i}");
            w.sample(&SampleRef {
                iid: 0,
                thread: &thread,
                stack: &[main, gen],
                metrics: &[Metric::Memory(i)],
                gc: false,
                idle: false,
            })
            .expect("vec");
            assert!(w.strings.len() <= 100 && w.string_values.len() <= 100);
            assert!(w.frames.len() <= 200 && w.previous.len() <= 4096);
        }
        // A kernel frame's name, interned before the tables were forgotten
        // (many times since), is still written.
        let kernel = StackEntry::Kernel(w.intern_string("do_syscall_64"));
        for i in 0..300 {
            let gen = frame(&mut w, &format!("<late-{i}>"));
            w.sample(&SampleRef {
                iid: 0,
                thread: "MainThread",
                stack: &[main, gen, kernel],
                metrics: &[Metric::Memory(1)],
                gc: false,
                idle: false,
            })
            .expect("vec");
        }
        // `main.py` was forgotten and defined again, `f` too: more keys
        // than names.
        assert!(w.string_count() > 10_002, "{}", w.string_count());
        let p = Profile::parse(&w.finish().expect("vec")).expect("parses");
        assert_eq!(p.samples.len(), 10_300);
        for s in &p.samples[10_000..] {
            assert!(
                matches!(s.frames.last(), Some(Frame::Kernel(k)) if &**k == "do_syscall_64"),
                "{:?}",
                s.frames.last()
            );
        }
        for (i, s) in p.samples[..10_000].iter().enumerate() {
            let names: Vec<_> = s
                .frames
                .iter()
                .map(|f| match f {
                    Frame::Frame(f) => format!("{}:{}", f.filename, f.scope),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(names, ["main.py:f".to_owned(), format!("<gen-{i}>:f")]);
            assert_eq!(s.memory, Some(i as i64));
        }
    }
}
