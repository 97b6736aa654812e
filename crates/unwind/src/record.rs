//! Captures saved with what unwinding them needs, so that unwinding is
//! tested on real processes' stacks without a live process.
//!
//! A [`Recording`] holds one capture (registers, stack bytes), the modules
//! its frames are in (each one's address range, load bias, unwind sections
//! and the symbols its frames are named by) and what the live unwind
//! found (each frame's address, name and whether it is the evaluation
//! loop). Unwind entries (FDEs) that no recorded frame needs are zeroed in
//! the saved `.eh_frame` and left out of its lookup table
//! (`.eh_frame_hdr`), so the file compresses to a few kilobytes.
//!
//! The format is this crate's own: a magic line, then length-prefixed
//! little-endian fields (see [`Recording::to_bytes`]).

use std::ops::Range;

use framehop::ExplicitModuleSectionInfo;

use crate::capture::{Captured, Registers};
use crate::modules::{LoadedModule, ModuleMap};
use crate::symbols::Symbols;
use crate::unwinder::NativeUnwinder;

const MAGIC: &[u8] = b"echion-native-capture 1\n";

/// Why a recording cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// It does not start with the magic line.
    #[error("not an echion native capture")]
    Magic,
    /// It ends in the middle of a field.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// A string is not UTF-8.
    #[error("invalid text at byte {0}")]
    Text(usize),
}

/// One module of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordedModule {
    /// Its path when recorded.
    pub path: String,
    /// The addresses it covered.
    pub range: Range<u64>,
    /// Its load bias.
    pub bias: u64,
    /// `.text`'s file addresses (its bytes are not kept).
    pub text_svma: Option<Range<u64>>,
    /// `.eh_frame`'s file addresses and bytes (unneeded entries zeroed).
    pub eh_frame_svma: Option<Range<u64>>,
    /// See `eh_frame_svma`.
    pub eh_frame: Vec<u8>,
    /// `.eh_frame_hdr`'s file addresses and bytes.
    pub eh_frame_hdr_svma: Option<Range<u64>>,
    /// See `eh_frame_hdr_svma`.
    pub eh_frame_hdr: Vec<u8>,
    /// `.got`'s file addresses.
    pub got_svma: Option<Range<u64>>,
    /// The symbols the recorded frames are named by: (start, size, name).
    pub symbols: Vec<(u64, u64, String)>,
}

/// One recorded frame: its address and what the live unwind named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFrame {
    /// The instruction pointer or return address.
    pub pc: u64,
    /// The function's name.
    pub name: String,
    /// Whether it is the evaluation loop.
    pub eval: bool,
}

/// A capture and all it takes to unwind it again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recording {
    /// What it is (free text).
    pub label: String,
    /// The registers.
    pub regs: Registers,
    /// The stack from `regs.sp` upwards.
    pub stack: Vec<u8>,
    /// The modules the frames are in.
    pub modules: Vec<RecordedModule>,
    /// The frames the live unwind found, innermost first.
    pub frames: Vec<RecordedFrame>,
}

impl Recording {
    /// Records `cap` of this process, unwound live by `unwinder` into
    /// `pcs`, with the sections of the modules its frames are in (read
    /// again from their files).
    pub fn record(
        label: &str,
        unwinder: &NativeUnwinder,
        cap: &Captured<'_>,
        pcs: &[u64],
    ) -> Option<Recording> {
        let map = unwinder.modules();
        let mut modules: Vec<RecordedModule> = Vec::new();
        let mut frames = Vec::new();
        for (i, &pc) in pcs.iter().enumerate() {
            let sym = unwinder.symbol(pc, i);
            frames.push(RecordedFrame {
                pc,
                name: sym.name,
                eval: sym.eval,
            });
            let lookup = if i == 0 { pc } else { pc.saturating_sub(1) };
            let Some(m) = map.module_at(lookup) else {
                continue;
            };
            let at = match modules.iter().position(|r| r.range == m.range) {
                Some(at) => at,
                None => {
                    modules.push(recorded_module(map, m)?);
                    modules.len() - 1
                }
            };
            let rec = &mut modules[at];
            let file_addr = lookup.wrapping_sub(m.bias);
            if let Some((start, size, name)) = m.symbols.lookup_entry(file_addr) {
                if !rec.symbols.iter().any(|s| s.0 == start) {
                    rec.symbols.push((start, size, name.to_owned()));
                }
            }
        }
        // Keep only the unwind entries the frames need.
        for rec in &mut modules {
            let keep: Vec<u64> = pcs
                .iter()
                .enumerate()
                .map(|(i, &pc)| if i == 0 { pc } else { pc.saturating_sub(1) })
                .filter(|a| rec.range.contains(a))
                .map(|a| a.wrapping_sub(rec.bias))
                .collect();
            if let Some(svma) = &rec.eh_frame_svma {
                let kept = crate::ehframe::zero_unneeded(&mut rec.eh_frame, svma.start, &keep);
                if let Some(hdr_svma) = &rec.eh_frame_hdr_svma {
                    crate::ehframe::trim_hdr(
                        &mut rec.eh_frame_hdr,
                        hdr_svma.start,
                        svma.start,
                        &kept,
                    );
                }
            }
        }
        Some(Recording {
            label: label.to_owned(),
            regs: cap.regs,
            stack: cap.stack.to_vec(),
            modules,
            frames,
        })
    }

    /// The capture as the unwinder takes it.
    pub fn captured(&self) -> Captured<'_> {
        Captured {
            regs: self.regs,
            stack: &self.stack,
        }
    }

    /// An unwinder that knows the recorded modules only.
    pub fn unwinder(&self) -> NativeUnwinder {
        let parts = self
            .modules
            .iter()
            .map(|m| {
                let mut symbols = Symbols::default();
                for (start, size, name) in &m.symbols {
                    symbols.push(*start, *size, name);
                }
                symbols.finish();
                let module = LoadedModule {
                    path: m.path.clone(),
                    range: m.range.clone(),
                    bias: m.bias,
                    symbols,
                };
                let info = ExplicitModuleSectionInfo {
                    base_svma: 0,
                    text_svma: m.text_svma.clone(),
                    got_svma: m.got_svma.clone(),
                    eh_frame_svma: m.eh_frame_svma.clone(),
                    eh_frame: Some(m.eh_frame.clone()),
                    eh_frame_hdr_svma: m.eh_frame_hdr_svma.clone(),
                    eh_frame_hdr: (!m.eh_frame_hdr.is_empty()).then(|| m.eh_frame_hdr.clone()),
                    ..Default::default()
                };
                (module, info)
            })
            .collect();
        NativeUnwinder::with_map(ModuleMap::from_parts(parts))
    }

    /// The recording as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(MAGIC);
        put_str(&mut w, &self.label);
        for r in [self.regs.ip, self.regs.sp, self.regs.bp] {
            put_u64(&mut w, r);
        }
        put_bytes(&mut w, &self.stack);
        put_u64(&mut w, self.modules.len() as u64);
        for m in &self.modules {
            put_str(&mut w, &m.path);
            put_range(&mut w, &Some(m.range.clone()));
            put_u64(&mut w, m.bias);
            put_range(&mut w, &m.text_svma);
            put_range(&mut w, &m.eh_frame_svma);
            put_bytes(&mut w, &m.eh_frame);
            put_range(&mut w, &m.eh_frame_hdr_svma);
            put_bytes(&mut w, &m.eh_frame_hdr);
            put_range(&mut w, &m.got_svma);
            put_u64(&mut w, m.symbols.len() as u64);
            for (start, size, name) in &m.symbols {
                put_u64(&mut w, *start);
                put_u64(&mut w, *size);
                put_str(&mut w, name);
            }
        }
        put_u64(&mut w, self.frames.len() as u64);
        for f in &self.frames {
            put_u64(&mut w, f.pc);
            put_str(&mut w, &f.name);
            put_u64(&mut w, u64::from(f.eval));
        }
        w
    }

    /// Reads what [`Recording::to_bytes`] wrote.
    pub fn from_bytes(data: &[u8]) -> Result<Recording, RecordError> {
        let rest = data.strip_prefix(MAGIC).ok_or(RecordError::Magic)?;
        let mut r = Reader {
            data: rest,
            at: 0,
            base: MAGIC.len(),
        };
        let label = r.str()?;
        let regs = Registers {
            ip: r.u64()?,
            sp: r.u64()?,
            bp: r.u64()?,
        };
        let stack = r.bytes()?.to_vec();
        let n = r.count()?;
        let mut modules = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let path = r.str()?;
            let range = r.range()?.unwrap_or(0..0);
            let bias = r.u64()?;
            let text_svma = r.range()?;
            let eh_frame_svma = r.range()?;
            let eh_frame = r.bytes()?.to_vec();
            let eh_frame_hdr_svma = r.range()?;
            let eh_frame_hdr = r.bytes()?.to_vec();
            let got_svma = r.range()?;
            let k = r.count()?;
            let mut symbols = Vec::with_capacity(k.min(1024));
            for _ in 0..k {
                symbols.push((r.u64()?, r.u64()?, r.str()?));
            }
            modules.push(RecordedModule {
                path,
                range,
                bias,
                text_svma,
                eh_frame_svma,
                eh_frame,
                eh_frame_hdr_svma,
                eh_frame_hdr,
                got_svma,
                symbols,
            });
        }
        let n = r.count()?;
        let mut frames = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            frames.push(RecordedFrame {
                pc: r.u64()?,
                name: r.str()?,
                eval: r.u64()? != 0,
            });
        }
        Ok(Recording {
            label,
            regs,
            stack,
            modules,
            frames,
        })
    }
}

fn recorded_module(map: &ModuleMap, m: &LoadedModule) -> Option<RecordedModule> {
    let (_, info) = map.reload(m)?;
    Some(RecordedModule {
        path: m.path.clone(),
        range: m.range.clone(),
        bias: m.bias,
        text_svma: info.text_svma,
        eh_frame_svma: info.eh_frame_svma,
        eh_frame: info.eh_frame.unwrap_or_default(),
        eh_frame_hdr_svma: info.eh_frame_hdr_svma,
        eh_frame_hdr: info.eh_frame_hdr.unwrap_or_default(),
        got_svma: info.got_svma,
        symbols: Vec::new(),
    })
}

fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_u64(w, b.len() as u64);
    w.extend_from_slice(b);
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_bytes(w, s.as_bytes());
}

fn put_range(w: &mut Vec<u8>, r: &Option<Range<u64>>) {
    match r {
        Some(r) => {
            put_u64(w, 1);
            put_u64(w, r.start);
            put_u64(w, r.end);
        }
        None => put_u64(w, 0),
    }
}

struct Reader<'d> {
    data: &'d [u8],
    at: usize,
    base: usize,
}

impl<'d> Reader<'d> {
    fn take(&mut self, n: usize) -> Result<&'d [u8], RecordError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(RecordError::Truncated(self.base + self.at))?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// A count, bounded by what is left (each element takes a byte at
    /// least).
    fn count(&mut self) -> Result<usize, RecordError> {
        let n = self.u64()?;
        let left = (self.data.len() - self.at) as u64;
        if n > left {
            return Err(RecordError::Truncated(self.base + self.at));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<&'d [u8], RecordError> {
        let n = self.count()?;
        self.take(n)
    }

    fn str(&mut self) -> Result<String, RecordError> {
        let at = self.base + self.at;
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| RecordError::Text(at))
    }

    fn range(&mut self) -> Result<Option<Range<u64>>, RecordError> {
        match self.u64()? {
            0 => Ok(None),
            _ => Ok(Some(self.u64()?..self.u64()?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Recording {
        Recording {
            label: "a test".into(),
            regs: Registers {
                ip: 0x1000,
                sp: 0x7ff0,
                bp: 0,
            },
            stack: vec![1, 2, 3, 4, 5, 6, 7, 8],
            modules: vec![RecordedModule {
                path: "/lib/x.so".into(),
                range: 0x1000..0x2000,
                bias: 0x1000,
                eh_frame_svma: Some(0x10..0x20),
                eh_frame: vec![9; 16],
                symbols: vec![(0x0, 0x100, "f".into())],
                ..Default::default()
            }],
            frames: vec![RecordedFrame {
                pc: 0x1000,
                name: "f".into(),
                eval: false,
            }],
        }
    }

    #[test]
    fn recordings_read_back_as_written() {
        let r = sample();
        let bytes = r.to_bytes();
        assert_eq!(Recording::from_bytes(&bytes), Ok(r));
    }

    #[test]
    fn damaged_recordings_are_errors_not_panics() {
        let bytes = sample().to_bytes();
        assert_eq!(Recording::from_bytes(b"nope"), Err(RecordError::Magic));
        for cut in MAGIC.len()..bytes.len() {
            assert!(
                Recording::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut huge = bytes.clone();
        // The label's length, made enormous.
        huge[MAGIC.len()..MAGIC.len() + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            Recording::from_bytes(&huge),
            Err(RecordError::Truncated(_))
        ));
    }
}
