#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod addr;
pub mod layout;
pub mod linetable;
pub mod process;
pub mod reader;
pub mod version;
pub mod views;

pub use addr::Addr;
pub use layout::Layout;
pub use reader::{
    MemError, MemoryReader, ProcessReader, ReadExt, RecordingReader, SnapshotError, SnapshotReader,
};
pub use version::PyVersion;
