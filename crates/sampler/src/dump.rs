//! Where mode's picture of a process: one stack per thread, as text for a
//! person (echion 0.3's `🐴 Echion reporting for duty`) or JSON for tools.
//!
//! [`Dump`] is a [`Sink`]: the engine samples every thread once into it;
//! [`Dump::render_text`] and [`Dump::render_json`] print what it holds.

use std::io::{self, Write};

use echion_mojo::{FrameId, FrameSpec, SampleRef, StackEntry};

use crate::sink::{Sink, ThreadIds};

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpFrame {
    /// The file name (`native@…` for native frames).
    pub filename: String,
    /// The function (qualified name from 3.11).
    pub scope: String,
    /// The line (0 if unknown).
    pub line: i64,
}

/// One thread's stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadStack {
    /// The interpreter id (0: the main interpreter).
    pub iid: i64,
    /// The thread's name (`threading`'s, or `Thread-<native id>`).
    pub name: String,
    /// Its ids.
    pub ids: ThreadIds,
    /// Its frames, outermost first (`None`: a frame that could not be
    /// read).
    pub frames: Vec<Option<FrameId>>,
}

/// Every thread's stack at one moment.
#[derive(Debug, Clone, Default)]
pub struct Dump {
    frames: Vec<DumpFrame>,
    threads: Vec<ThreadStack>,
    metadata: Vec<(String, String)>,
}

impl Dump {
    /// An empty dump.
    pub fn new() -> Self {
        Self::default()
    }

    /// The threads, in the order they were sampled (interpreters newest
    /// first, threads newest first, as CPython lists them) unless
    /// reversed.
    pub fn threads(&self) -> &[ThreadStack] {
        &self.threads
    }

    /// The frame an id stands for.
    pub fn frame(&self, id: FrameId) -> Option<&DumpFrame> {
        let i = usize::try_from(id.key()).ok()?.checked_sub(1)?;
        self.frames.get(i)
    }

    /// The metadata given to the sink.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// Reverses the order of the threads.
    pub fn reverse_threads(&mut self) {
        self.threads.reverse();
    }

    /// Prints the dump the way echion 0.3's where mode does: a header, then
    /// per thread `🧵 NAME:` and its frames outermost first, `func
    /// (file:line)`. With `colour`, ANSI colours as echion 0.3 uses them.
    /// Threads of subinterpreters say their interpreter's id.
    pub fn render_text(&self, out: &mut dyn Write, colour: bool) -> io::Result<()> {
        let paint = |code: &'static str| if colour { code } else { "" };
        let (reset, func, file, line, nfunc, nfile, dim) = (
            paint("\x1b[0m"),
            paint("\x1b[33;1m"),
            paint("\x1b[36m"),
            paint("\x1b[32m"),
            paint("\x1b[38;5;248;1m"),
            paint("\x1b[38;5;246m"),
            paint("\x1b[2m"),
        );
        writeln!(out, "🐴 Echion reporting for duty")?;
        writeln!(out)?;
        for t in &self.threads {
            if t.iid == 0 {
                writeln!(out, "    🧵 {}:", t.name)?;
            } else {
                writeln!(out, "    🧵 {} (interpreter {}):", t.name, t.iid)?;
            }
            if t.frames.is_empty() {
                writeln!(out, "          {dim}(no Python frame){reset}")?;
            }
            for id in &t.frames {
                match id.and_then(|id| self.frame(id)) {
                    Some(f) if f.filename.starts_with("native@") => writeln!(
                        out,
                        "          {nfunc}{}{reset} {nfile}({}{reset}:{nfile}{}){reset}",
                        f.scope, f.filename, f.line
                    )?,
                    Some(f) => writeln!(
                        out,
                        "          {func}{}{reset} ({file}{}{reset}:{line}{}{reset})",
                        f.scope, f.filename, f.line
                    )?,
                    None => writeln!(out, "          {dim}<invalid frame>{reset}")?,
                }
            }
            writeln!(out)?;
        }
        Ok(())
    }

    /// Prints the dump as one JSON object (see the README): `pid`,
    /// `python`, and `threads`, each with `interpreter`, `name`,
    /// `thread_id`, `native_id` (null if unknown) and `frames` outermost
    /// first (`function`, `filename`, `line`; null for a frame that could
    /// not be read).
    pub fn render_json(&self, out: &mut dyn Write, pid: u32, python: &str) -> io::Result<()> {
        use serde_json::{json, Value};
        let threads: Vec<Value> = self
            .threads
            .iter()
            .map(|t| {
                let frames: Vec<Value> = t
                    .frames
                    .iter()
                    .map(|id| match id.and_then(|id| self.frame(id)) {
                        Some(f) => json!({
                            "function": f.scope,
                            "filename": f.filename,
                            "line": f.line,
                        }),
                        None => Value::Null,
                    })
                    .collect();
                json!({
                    "interpreter": t.iid,
                    "name": t.name,
                    "thread_id": t.ids.thread_id,
                    "native_id": (t.ids.native_id != 0).then_some(t.ids.native_id),
                    "frames": frames,
                })
            })
            .collect();
        let doc = json!({ "pid": pid, "python": python, "threads": threads });
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)
    }
}

impl Sink for Dump {
    fn metadata(&mut self, key: &str, value: &str) -> io::Result<()> {
        self.metadata.push((key.to_owned(), value.to_owned()));
        Ok(())
    }

    fn intern_frame(&mut self, frame: &FrameSpec<'_>) -> FrameId {
        self.frames.push(DumpFrame {
            filename: frame.filename.to_owned(),
            scope: frame.scope.to_owned(),
            line: frame.line,
        });
        FrameId::new(u32::try_from(self.frames.len()).unwrap_or(u32::MAX))
    }

    fn sample(&mut self, thread: ThreadIds, sample: &SampleRef<'_>) -> io::Result<()> {
        self.threads.push(ThreadStack {
            iid: sample.iid,
            name: sample.thread.to_owned(),
            ids: thread,
            frames: sample
                .stack
                .iter()
                .map(|e| match e {
                    StackEntry::Frame(id) => Some(*id),
                    _ => None,
                })
                .collect(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echion_mojo::Metric;

    fn dump() -> Dump {
        let mut d = Dump::new();
        let spec = |scope, line| FrameSpec {
            filename: "app.py",
            scope,
            line,
            line_end: line,
            column: 0,
            column_end: 0,
        };
        let main = d.intern_frame(&spec("<module>", 9));
        let leaf = d.intern_frame(&spec("leaf", 3));
        let stack = [StackEntry::Frame(main), StackEntry::Frame(leaf)];
        let ids = ThreadIds {
            thread_id: 7,
            native_id: 42,
        };
        for (iid, name) in [(0, "MainThread"), (2, "sub")] {
            d.sample(
                ids,
                &SampleRef {
                    iid,
                    thread: name,
                    stack: &stack,
                    metrics: &[Metric::Time(1)],
                    gc: false,
                    idle: false,
                },
            )
            .expect("vec");
        }
        d.sample(
            ThreadIds::default(),
            &SampleRef {
                iid: 0,
                thread: "idle",
                stack: &[],
                metrics: &[Metric::Time(1)],
                gc: false,
                idle: false,
            },
        )
        .expect("vec");
        d
    }

    #[test]
    fn text_is_echions_where_output() {
        let mut out = Vec::new();
        dump().render_text(&mut out, false).expect("vec");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "🐴 Echion reporting for duty\n\n\
             \x20   🧵 MainThread:\n\
             \x20         <module> (app.py:9)\n\
             \x20         leaf (app.py:3)\n\n\
             \x20   🧵 sub (interpreter 2):\n\
             \x20         <module> (app.py:9)\n\
             \x20         leaf (app.py:3)\n\n\
             \x20   🧵 idle:\n\
             \x20         (no Python frame)\n\n"
        );
        let mut out = Vec::new();
        dump().render_text(&mut out, true).expect("vec");
        let coloured = String::from_utf8(out).expect("utf-8");
        assert!(coloured.contains("\x1b[33;1mleaf\x1b[0m (\x1b[36mapp.py\x1b[0m:\x1b[32m3\x1b[0m)"));
    }

    #[test]
    fn json_has_every_thread_and_frame() {
        let mut out = Vec::new();
        dump().render_json(&mut out, 99, "3.12.1").expect("vec");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["pid"], 99);
        assert_eq!(v["python"], "3.12.1");
        let threads = v["threads"].as_array().expect("threads");
        assert_eq!(threads.len(), 3);
        assert_eq!(threads[0]["name"], "MainThread");
        assert_eq!(threads[0]["native_id"], 42);
        assert_eq!(threads[1]["interpreter"], 2);
        assert_eq!(threads[2]["native_id"], serde_json::Value::Null);
        assert_eq!(threads[0]["frames"][1]["function"], "leaf");
        assert_eq!(threads[0]["frames"][1]["line"], 3);
        assert_eq!(threads[2]["frames"].as_array().map(Vec::len), Some(0));
    }
}
