//! Recorded captures.
