//! The events of a MOJO stream and their encoding.

use crate::varint;

/// A MOJO format version. Version 1 has no columns and no interpreter id,
/// version 2 adds `line_end`, `column` and `column_end` to frames, version 3
/// adds the interpreter id to stacks and version 4 adds `STACK_REPEAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(u8);

impl Version {
    /// MOJO v1 (Austin 3.0).
    pub const V1: Version = Version(1);
    /// MOJO v2 (Austin 3.4): frame positions with end line and columns.
    pub const V2: Version = Version(2);
    /// MOJO v3 (Austin 3.5, echion 0.3): stacks carry an interpreter id.
    pub const V3: Version = Version(3);
    /// MOJO v4 (Austin 4): `STACK_REPEAT`.
    pub const V4: Version = Version(4);

    /// The version for a number read from a header, if it is one we know.
    pub fn from_number(n: i64) -> Option<Version> {
        match n {
            1..=4 => Some(Version(n as u8)),
            _ => None,
        }
    }

    /// The number written in the header.
    pub fn number(self) -> u8 {
        self.0
    }

    pub(crate) fn has_columns(self) -> bool {
        self.0 >= 2
    }

    pub(crate) fn has_iid(self) -> bool {
        self.0 >= 3
    }
}

impl Default for Version {
    fn default() -> Self {
        Version::V3
    }
}

/// The one-byte identifiers of the events.
#[allow(missing_docs)]
pub mod id {
    pub const RESERVED: u8 = 0;
    pub const METADATA: u8 = 1;
    pub const STACK: u8 = 2;
    pub const FRAME: u8 = 3;
    pub const FRAME_INVALID: u8 = 4;
    pub const FRAME_REF: u8 = 5;
    pub const FRAME_KERNEL: u8 = 6;
    pub const GC: u8 = 7;
    pub const IDLE: u8 = 8;
    pub const METRIC_TIME: u8 = 9;
    pub const METRIC_MEMORY: u8 = 10;
    pub const STRING: u8 = 11;
    pub const STRING_REF: u8 = 12;
    pub const STACK_REPEAT: u8 = 13;
}

/// One MOJO event, with its strings borrowed from the input or the caller.
///
/// `line_end`, `column` and `column_end` of a frame are written from v2 on
/// and read as 0 from a v1 stream; the interpreter id of a stack is written
/// from v3 on and read as `None` before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A `key: value` pair about the whole profile.
    Metadata {
        /// Metadata key, e.g. `mode`.
        key: &'a str,
        /// Metadata value, e.g. `wall`.
        value: &'a str,
    },
    /// The start of a sample: the thread it was taken from.
    Stack {
        /// Process id.
        pid: i64,
        /// Interpreter id (v3 and later).
        iid: Option<i64>,
        /// Thread name (Austin writes the thread id in hex here).
        thread: &'a str,
    },
    /// The definition of a frame, referenced later by its key.
    Frame {
        /// Key of the frame within its process.
        key: i64,
        /// Key of the file name string.
        filename: i64,
        /// Key of the scope (function or qualified name) string.
        scope: i64,
        /// First line.
        line: i64,
        /// Last line (v2 and later).
        line_end: i64,
        /// First column (v2 and later).
        column: i64,
        /// End column (v2 and later).
        column_end: i64,
    },
    /// A frame that could not be read.
    FrameInvalid,
    /// A reference to a frame defined before, as the next frame of the
    /// current sample (outermost first).
    FrameRef {
        /// Key of the frame.
        key: i64,
    },
    /// A kernel frame, with its name inline.
    FrameKernel {
        /// Kernel function name.
        scope: &'a str,
    },
    /// The sample was taken while the garbage collector ran.
    Gc,
    /// The thread was idle.
    Idle,
    /// The time metric of the current sample, in microseconds.
    MetricTime(i64),
    /// The memory metric of the current sample, in bytes.
    MetricMemory(i64),
    /// The definition of a string, referenced later by its key.
    String {
        /// Key of the string within its process.
        key: i64,
        /// The string.
        value: &'a str,
    },
    /// A reference to a string defined before.
    StringRef {
        /// Key of the string.
        key: i64,
    },
    /// (v4) The frames of the thread's previous sample, less any trailing
    /// native frames, go before the frames of the current sample.
    StackRepeat,
}

impl Event<'_> {
    /// The identifier byte of the event.
    pub fn id(&self) -> u8 {
        match self {
            Event::Metadata { .. } => id::METADATA,
            Event::Stack { .. } => id::STACK,
            Event::Frame { .. } => id::FRAME,
            Event::FrameInvalid => id::FRAME_INVALID,
            Event::FrameRef { .. } => id::FRAME_REF,
            Event::FrameKernel { .. } => id::FRAME_KERNEL,
            Event::Gc => id::GC,
            Event::Idle => id::IDLE,
            Event::MetricTime(_) => id::METRIC_TIME,
            Event::MetricMemory(_) => id::METRIC_MEMORY,
            Event::String { .. } => id::STRING,
            Event::StringRef { .. } => id::STRING_REF,
            Event::StackRepeat => id::STACK_REPEAT,
        }
    }

    /// Appends the encoding of the event for `version` to `out`.
    ///
    /// Fields that `version` does not have are left out; strings must not
    /// contain NUL (it would end them early), which the high-level writer
    /// guarantees by replacing it.
    pub fn encode(&self, version: Version, out: &mut Vec<u8>) {
        out.push(self.id());
        match *self {
            Event::Metadata { key, value } => {
                put_str(key, out);
                put_str(value, out);
            }
            Event::Stack { pid, iid, thread } => {
                varint::encode(pid, out);
                if version.has_iid() {
                    varint::encode(iid.unwrap_or(0), out);
                }
                put_str(thread, out);
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
                varint::encode(key, out);
                varint::encode(filename, out);
                varint::encode(scope, out);
                varint::encode(line, out);
                if version.has_columns() {
                    varint::encode(line_end, out);
                    varint::encode(column, out);
                    varint::encode(column_end, out);
                }
            }
            Event::FrameRef { key } | Event::StringRef { key } => varint::encode(key, out),
            Event::FrameKernel { scope } => put_str(scope, out),
            Event::MetricTime(n) | Event::MetricMemory(n) => varint::encode(n, out),
            Event::String { key, value } => {
                varint::encode(key, out);
                put_str(value, out);
            }
            Event::FrameInvalid | Event::Gc | Event::Idle | Event::StackRepeat => {}
        }
    }
}

fn put_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// Appends the stream header (`MOJ` and the version) to `out`.
pub fn encode_header(version: Version, out: &mut Vec<u8>) {
    out.extend_from_slice(b"MOJ");
    varint::encode(i64::from(version.number()), out);
}
