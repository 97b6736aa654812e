//! Where what sampling produces goes: metadata, interned frames, samples.
//!
//! The engine knows nothing of files or formats: it hands every frame it
//! decodes to [`Sink::intern_frame`] once (and afterwards only the id that
//! came back), and every stack to [`Sink::sample`]. [`MojoWriter`] is the
//! sink of run mode; [`crate::dump::Dump`] collects one sample per thread
//! for where mode and the `SIGQUIT` dump; exporters are more sinks.

use std::io::{self, Write};

use echion_mojo::{FrameId, FrameSpec, MojoWriter, SampleRef};

/// The thread a sample belongs to, beyond the name a MOJO sample carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThreadIds {
    /// The thread state's `thread_id` (`threading.get_ident()`).
    pub thread_id: u64,
    /// The kernel thread id, 0 if unknown.
    pub native_id: u64,
}

/// A consumer of samples.
///
/// Frame ids must be collision-free within one sink: the engine caches the
/// id of each `(code object, instruction)` and hands it back in later
/// samples instead of the frame.
pub trait Sink {
    /// A key/value pair about the whole profile.
    fn metadata(&mut self, key: &str, value: &str) -> io::Result<()>;

    /// Interns a frame and returns its id.
    fn intern_frame(&mut self, frame: &FrameSpec<'_>) -> FrameId;

    /// One stack of one thread (frames outermost first) with its metric.
    fn sample(&mut self, thread: ThreadIds, sample: &SampleRef<'_>) -> io::Result<()>;

    /// The end of a tick: whatever was buffered may go out now.
    fn end_tick(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Sink for MojoWriter<W> {
    fn metadata(&mut self, key: &str, value: &str) -> io::Result<()> {
        MojoWriter::metadata(self, key, value)
    }

    fn intern_frame(&mut self, frame: &FrameSpec<'_>) -> FrameId {
        MojoWriter::intern_frame(self, frame)
    }

    fn sample(&mut self, _thread: ThreadIds, sample: &SampleRef<'_>) -> io::Result<()> {
        MojoWriter::sample(self, sample)
    }

    /// Hands the tick's bytes to the output in one write.
    fn end_tick(&mut self) -> io::Result<()> {
        self.flush()
    }
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn metadata(&mut self, key: &str, value: &str) -> io::Result<()> {
        (**self).metadata(key, value)
    }

    fn intern_frame(&mut self, frame: &FrameSpec<'_>) -> FrameId {
        (**self).intern_frame(frame)
    }

    fn sample(&mut self, thread: ThreadIds, sample: &SampleRef<'_>) -> io::Result<()> {
        (**self).sample(thread, sample)
    }

    fn end_tick(&mut self) -> io::Result<()> {
        (**self).end_tick()
    }
}
