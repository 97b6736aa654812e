//! Decoding MOJO streams into events, from a byte slice or any `io::Read`.

use std::fmt;
use std::io::{self, Read};

use crate::event::{id, Event, Version};
use crate::varint::{self, VarintError};

/// The longest string the decoders accept, NUL included. Real names are far
/// shorter; the bound keeps a corrupt stream from making the streaming
/// reader buffer without limit.
pub const MAX_STRING_LEN: usize = 1 << 20;

/// What is wrong with the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The input does not start with `MOJ`.
    NotMojo,
    /// The header names a version this crate does not know.
    UnsupportedVersion(i64),
    /// The input ends in the middle of an event.
    Truncated,
    /// An integer does not fit in 64 bits.
    IntegerOverflow,
    /// An event identifier that no MOJO version defines (0 is reserved).
    UnknownEvent(u8),
    /// `STACK_REPEAT` in a stream of version 3 or earlier.
    EventNotInVersion(u8),
    /// A string is not valid UTF-8.
    InvalidUtf8,
    /// A string is longer than [`MAX_STRING_LEN`].
    StringTooLong,
    /// A frame reference to a key that was never defined.
    UnknownFrame(i64),
    /// A string reference to a key that was never defined.
    UnknownString(i64),
    /// A frame, metric or marker that belongs to a sample, before any `STACK`.
    OutsideSample(u8),
    /// A second `STACK_REPEAT` in one sample (each would repeat the stack
    /// built so far, so that a few bytes could stand for unbounded stacks).
    RepeatedStackRepeat,
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotMojo => write!(f, "not a MOJO stream (no MOJ header)"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported MOJO version {v}"),
            Self::Truncated => write!(f, "truncated event"),
            Self::IntegerOverflow => write!(f, "integer does not fit in 64 bits"),
            Self::UnknownEvent(e) => write!(f, "unknown event {e}"),
            Self::EventNotInVersion(e) => write!(f, "event {e} is not part of this MOJO version"),
            Self::InvalidUtf8 => write!(f, "string is not valid UTF-8"),
            Self::StringTooLong => write!(f, "string longer than {MAX_STRING_LEN} bytes"),
            Self::UnknownFrame(k) => write!(f, "reference to undefined frame {k}"),
            Self::UnknownString(k) => write!(f, "reference to undefined string {k}"),
            Self::OutsideSample(e) => write!(f, "event {e} outside of any sample"),
            Self::RepeatedStackRepeat => write!(f, "more than one STACK_REPEAT in a sample"),
        }
    }
}

/// A decoding failure and the byte offset of the event it happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte offset {offset}")]
pub struct DecodeError {
    /// Offset from the start of the stream of the event that failed.
    pub offset: u64,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

/// A failure of [`EventReader`]: the input could not be read, or decoded.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The underlying reader failed.
    #[error("reading MOJO input: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a valid MOJO stream.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl From<VarintError> for DecodeErrorKind {
    fn from(e: VarintError) -> Self {
        match e {
            VarintError::Truncated => Self::Truncated,
            VarintError::Overflow => Self::IntegerOverflow,
        }
    }
}

/// Parses the header at the start of `data`; returns the version and the
/// header's length.
pub(crate) fn decode_header(data: &[u8]) -> Result<(Version, usize), DecodeErrorKind> {
    if data.len() < 3 {
        return Err(if b"MOJ".starts_with(data) {
            DecodeErrorKind::Truncated
        } else {
            DecodeErrorKind::NotMojo
        });
    }
    if &data[..3] != b"MOJ" {
        return Err(DecodeErrorKind::NotMojo);
    }
    let (n, len) = varint::decode(&data[3..])?;
    let version = Version::from_number(n).ok_or(DecodeErrorKind::UnsupportedVersion(n))?;
    Ok((version, 3 + len))
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn int(&mut self) -> Result<i64, DecodeErrorKind> {
        let (n, len) = varint::decode(&self.data[self.pos..])?;
        self.pos += len;
        Ok(n)
    }

    #[inline]
    fn string(&mut self) -> Result<&'a str, DecodeErrorKind> {
        let rest = &self.data[self.pos..];
        let window = &rest[..rest.len().min(MAX_STRING_LEN)];
        match window.iter().position(|&b| b == 0) {
            Some(end) => {
                let s = std::str::from_utf8(&window[..end])
                    .map_err(|_| DecodeErrorKind::InvalidUtf8)?;
                self.pos += end + 1;
                Ok(s)
            }
            None if rest.len() >= MAX_STRING_LEN => Err(DecodeErrorKind::StringTooLong),
            None => Err(DecodeErrorKind::Truncated),
        }
    }
}

/// Decodes the event that starts at `data[0]`; returns it and its length.
#[inline]
pub(crate) fn decode_event(
    data: &[u8],
    version: Version,
) -> Result<(Event<'_>, usize), DecodeErrorKind> {
    let event_id = *data.first().ok_or(DecodeErrorKind::Truncated)?;
    let mut c = Cursor { data, pos: 1 };
    let event = match event_id {
        id::METADATA => Event::Metadata {
            key: c.string()?,
            value: c.string()?,
        },
        id::STACK => Event::Stack {
            pid: c.int()?,
            iid: if version.has_iid() {
                Some(c.int()?)
            } else {
                None
            },
            thread: c.string()?,
        },
        id::FRAME => {
            let key = c.int()?;
            let filename = c.int()?;
            let scope = c.int()?;
            let line = c.int()?;
            let (line_end, column, column_end) = if version.has_columns() {
                (c.int()?, c.int()?, c.int()?)
            } else {
                (0, 0, 0)
            };
            Event::Frame {
                key,
                filename,
                scope,
                line,
                line_end,
                column,
                column_end,
            }
        }
        id::FRAME_INVALID => Event::FrameInvalid,
        id::FRAME_REF => Event::FrameRef { key: c.int()? },
        id::FRAME_KERNEL => Event::FrameKernel { scope: c.string()? },
        id::GC => Event::Gc,
        id::IDLE => Event::Idle,
        id::METRIC_TIME => Event::MetricTime(c.int()?),
        id::METRIC_MEMORY => Event::MetricMemory(c.int()?),
        id::STRING => Event::String {
            key: c.int()?,
            value: c.string()?,
        },
        id::STRING_REF => Event::StringRef { key: c.int()? },
        id::STACK_REPEAT if version >= Version::V4 => Event::StackRepeat,
        id::STACK_REPEAT => return Err(DecodeErrorKind::EventNotInVersion(event_id)),
        other => return Err(DecodeErrorKind::UnknownEvent(other)),
    };
    Ok((event, c.pos))
}

/// Decodes the events of a MOJO stream held in memory, borrowing strings
/// from it. This is the fast path: no allocation per event.
///
/// After the first error the decoder yields nothing more.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    version: Version,
    failed: bool,
}

impl<'a> Decoder<'a> {
    /// Checks the header of `data` and positions the decoder on the first
    /// event.
    pub fn new(data: &'a [u8]) -> Result<Self, DecodeError> {
        let (version, pos) = decode_header(data).map_err(|kind| DecodeError { offset: 0, kind })?;
        Ok(Self {
            data,
            pos,
            version,
            failed: false,
        })
    }

    /// The version named in the header.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Offset of the next event from the start of the stream.
    pub fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// The next event, `Ok(None)` at the end of the input.
    #[inline]
    pub fn next_event(&mut self) -> Result<Option<Event<'a>>, DecodeError> {
        if self.failed || self.pos >= self.data.len() {
            return Ok(None);
        }
        let data: &'a [u8] = self.data;
        match decode_event(&data[self.pos..], self.version) {
            Ok((event, len)) => {
                self.pos += len;
                Ok(Some(event))
            }
            Err(kind) => {
                self.failed = true;
                Err(DecodeError {
                    offset: self.pos as u64,
                    kind,
                })
            }
        }
    }
}

impl<'a> Iterator for Decoder<'a> {
    type Item = Result<Event<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

/// Decodes a MOJO stream from any reader, a chunk at a time, holding at most
/// one event (and so at most [`MAX_STRING_LEN`] bytes plus a chunk) in
/// memory beyond what the caller keeps.
#[derive(Debug)]
pub struct EventReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    offset: u64,
    version: Version,
    eof: bool,
    failed: bool,
}

const CHUNK: usize = 64 * 1024;

impl<R: Read> EventReader<R> {
    /// Reads and checks the header.
    pub fn new(inner: R) -> Result<Self, ReadError> {
        let mut reader = Self {
            inner,
            buf: Vec::with_capacity(CHUNK),
            start: 0,
            offset: 0,
            version: Version::V1,
            eof: false,
            failed: false,
        };
        loop {
            match decode_header(&reader.buf) {
                Ok((version, len)) => {
                    reader.version = version;
                    reader.start = len;
                    reader.offset = len as u64;
                    return Ok(reader);
                }
                Err(DecodeErrorKind::Truncated) if !reader.eof => reader.fill()?,
                Err(kind) => return Err(DecodeError { offset: 0, kind }.into()),
            }
        }
    }

    /// The version named in the header.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Offset of the next event from the start of the stream.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + CHUNK, 0);
        let n = loop {
            match self.inner.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(old + n);
        if n == 0 {
            self.eof = true;
        }
        Ok(())
    }

    /// The next event, `Ok(None)` at the end of the input. The event borrows
    /// the reader's buffer until the next call.
    pub fn next_event(&mut self) -> Result<Option<Event<'_>>, ReadError> {
        if self.failed {
            return Ok(None);
        }
        // First find out whether a whole event is buffered, reading more
        // until it is; then decode it for real, borrowing the buffer.
        loop {
            if self.start >= self.buf.len() {
                if self.eof {
                    return Ok(None);
                }
                self.fill()?;
                continue;
            }
            match decode_event(&self.buf[self.start..], self.version) {
                Ok(_) => break,
                Err(DecodeErrorKind::Truncated) if !self.eof => self.fill()?,
                Err(kind) => {
                    self.failed = true;
                    return Err(DecodeError {
                        offset: self.offset,
                        kind,
                    }
                    .into());
                }
            }
        }
        let (event, len) =
            decode_event(&self.buf[self.start..], self.version).map_err(|kind| DecodeError {
                offset: self.offset,
                kind,
            })?;
        self.start += len;
        self.offset += len as u64;
        Ok(Some(event))
    }
}
