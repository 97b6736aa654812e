#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod decode;
pub mod event;
pub mod profile;
pub mod varint;
pub mod writer;

pub use decode::{DecodeError, DecodeErrorKind, Decoder, EventReader, ReadError};
pub use event::{Event, Version};
pub use profile::{Frame, FrameInfo, Profile, Sample, SampleReader};
pub use writer::{
    FrameId, FrameSpec, Metric, MojoWriter, SampleRef, StackEntry, StringId, WriterOptions,
    INTERN_LIMIT,
};
