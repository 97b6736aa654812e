//! Frame walks and code objects.

use super::{get, get_addr, Target, ViewError, MAX_FRAMES, MAX_LINETABLE, SPAN};
use crate::addr::Addr;
use crate::layout::FrameLayout;
use crate::linetable::{self, Location, TableFormat};
use crate::reader::{MemError, MemoryReader};
use crate::version::PyVersion;

/// What a frame is, for a stack to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A Python function's frame: show it.
    Python,
    /// A shim frame owned by the C stack (`FRAME_OWNED_BY_CSTACK`, 3.12+):
    /// it marks a C-level entry into the interpreter and has no Python code.
    /// Skip it.
    Shim,
    /// A frame that has not reached its first traceable instruction yet
    /// (`_PyFrame_IsIncomplete`, 3.11+): CPython hides it too. Skip it.
    Incomplete,
}

/// One frame of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// The frame's address.
    pub addr: Addr,
    /// Its code object (`f_code`, or `f_executable` on 3.13, which is not a
    /// code object in shim frames).
    pub code: Addr,
    /// Byte offset of the current instruction from the start of the
    /// bytecode (`co_code` ≤ 3.10, `_PyCode_CODE(co)` 3.11+), as the line
    /// table decoder takes it; `None` before the first instruction.
    pub offset: Option<u32>,
    /// Whether to show or skip it.
    pub kind: FrameKind,
    /// `is_entry` (3.11): the first frame of a C-level call of the
    /// interpreter. On 3.12+ the same is marked by the [`FrameKind::Shim`]
    /// frame that the walk yields right after the entry frame; ≤ 3.10 every
    /// frame is entered from C and this is `false`.
    pub is_entry: bool,
    /// `f_lineno` (≤ 3.10; only meaningful while tracing, else 0).
    pub f_lineno: Option<i32>,
    /// The `owner` field (3.11+).
    pub owner: Option<u8>,
}

impl FrameInfo {
    /// Whether this frame belongs in a Python stack.
    pub fn is_python(&self) -> bool {
        self.kind == FrameKind::Python
    }
}

/// A code object's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeInfo {
    /// Its address.
    pub addr: Addr,
    /// `co_filename` (a `str`).
    pub filename: Addr,
    /// `co_name` (a `str`).
    pub name: Addr,
    /// `co_qualname` (a `str`, 3.11+).
    pub qualname: Option<Addr>,
    /// `co_firstlineno`.
    pub firstlineno: i32,
    /// `co_lnotab` (3.8, 3.9) or `co_linetable` (3.10+): a `bytes`.
    pub linetable: Addr,
}

/// A code object as a profile shows it ([`Target::code_source`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeSource {
    /// `co_filename`.
    pub filename: String,
    /// `co_qualname` (3.11+) or `co_name`.
    pub scope: String,
    /// `co_firstlineno`.
    pub firstlineno: i32,
    /// `co_lnotab` / `co_linetable`, for [`crate::linetable`].
    pub linetable: Vec<u8>,
}

impl<'r, R: MemoryReader + ?Sized> Target<'r, R> {
    /// Walks the frames from `frame` (a thread's current frame, or a
    /// generator's) outwards. Yields every frame, shims included (check
    /// [`FrameInfo::kind`]); stops at the first error or after
    /// [`MAX_FRAMES`] with [`ViewError::TooDeep`].
    pub fn frames(&self, frame: Addr) -> Frames<'r, R> {
        Frames {
            target: *self,
            walk: Walk {
                next: frame,
                count: 0,
            },
        }
    }

    /// Reads one frame (not following `previous`/`f_back`); returns it and
    /// the address of the next outer frame.
    pub fn frame(&self, addr: Addr) -> Result<(FrameInfo, Addr), ViewError> {
        self.frame_with(addr, &mut |code| self.code_firsttraceable(code))
    }

    /// The code object field (`f_code`, or `f_executable` on 3.13) of the
    /// frame at `addr`, alone: one read, to tell whether a frame address
    /// that a walk started from still holds the same function's frame.
    pub fn frame_code(&self, addr: Addr) -> Result<Addr, ViewError> {
        let offset = match &self.layout.frame {
            FrameLayout::Object(l) => l.f_code,
            FrameLayout::Interpreter(l) => l.code,
        };
        self.field_addr(addr, offset)
    }

    /// [`Target::frame`], with `first_traceable(code)` giving a code
    /// object's `_co_firsttraceable` (3.11+), so that a caller with a cache
    /// of code objects saves a read per frame.
    pub fn frame_with(
        &self,
        addr: Addr,
        first_traceable: &mut dyn FnMut(Addr) -> Result<i32, ViewError>,
    ) -> Result<(FrameInfo, Addr), ViewError> {
        let mut buf = [0u8; SPAN];
        match &self.layout.frame {
            FrameLayout::Object(l) => {
                let end = (l.f_back + 8)
                    .max(l.f_code + 8)
                    .max(l.f_lasti + 4)
                    .max(l.f_lineno + 4);
                let b = self.span(addr, end, &mut buf)?;
                let code = get_addr(b, l.f_code)?;
                if code.is_null() {
                    return Err(ViewError::Null("f_code"));
                }
                let lasti: i32 = get(b, l.f_lasti)?;
                let offset = if lasti < 0 {
                    None
                } else {
                    let o = u64::from(lasti.unsigned_abs()) * l.lasti_unit;
                    Some(u32::try_from(o).map_err(|_| ViewError::Invalid("f_lasti"))?)
                };
                let info = FrameInfo {
                    addr,
                    code,
                    offset,
                    kind: FrameKind::Python,
                    is_entry: false,
                    f_lineno: Some(get(b, l.f_lineno)?),
                    owner: None,
                };
                Ok((info, get_addr(b, l.f_back)?))
            }
            FrameLayout::Interpreter(l) => {
                let mut end = (l.code + 8)
                    .max(l.previous + 8)
                    .max(l.instr_ptr + 8)
                    .max(l.owner + 1);
                if let Some(e) = l.is_entry {
                    end = end.max(e + 1);
                }
                let b = self.span(addr, end, &mut buf)?;
                let previous = get_addr(b, l.previous)?;
                let owner: u8 = get(b, l.owner)?;
                let code = get_addr(b, l.code)?;
                let is_entry = match l.is_entry {
                    Some(off) => get::<u8>(b, off)? != 0,
                    None => false,
                };
                let mut info = FrameInfo {
                    addr,
                    code,
                    offset: None,
                    kind: FrameKind::Python,
                    is_entry,
                    f_lineno: None,
                    owner: Some(owner),
                };
                if Some(owner) == l.owned_by_cstack {
                    info.kind = FrameKind::Shim;
                    return Ok((info, previous));
                }
                if code.is_null() {
                    return Err(ViewError::Null("f_code"));
                }
                let adaptive = self
                    .layout
                    .code
                    .code_adaptive
                    .ok_or(ViewError::Unsupported("co_code_adaptive"))?;
                let start = code.offset(adaptive).ok_or(MemError::Overflow)?;
                let instr = get_addr(b, l.instr_ptr)?;
                // why: `_PyFrame_IsIncomplete` (Include/internal/pycore_frame.h,
                // v3.11.7 to v3.13.0): a frame not owned by a generator is
                // incomplete while its instruction pointer is before
                // `_PyCode_CODE(co) + co->_co_firsttraceable`.
                let offset = instr.distance_from(start);
                if owner != l.owned_by_generator {
                    let first = first_traceable(code)?;
                    let first_bytes = u64::from(first.unsigned_abs()) * 2;
                    if offset.is_none_or(|o| o < first_bytes) {
                        info.kind = FrameKind::Incomplete;
                    }
                }
                info.offset = match offset {
                    Some(o) => Some(
                        u32::try_from(o).map_err(|_| ViewError::Invalid("instruction pointer"))?,
                    ),
                    None if info.kind == FrameKind::Incomplete => None,
                    None => return Err(ViewError::Invalid("instruction pointer")),
                };
                Ok((info, previous))
            }
        }
    }

    /// A code object's `_co_firsttraceable` (3.11+): the index of the
    /// first instruction a traceback may show.
    pub fn code_firsttraceable(&self, code: Addr) -> Result<i32, ViewError> {
        let off = self
            .layout
            .code
            .firsttraceable
            .ok_or(ViewError::Unsupported("_co_firsttraceable"))?;
        let mut b = [0u8; 4];
        self.reader
            .read(code.offset(off).ok_or(MemError::Overflow)?, &mut b)?;
        let v = i32::from_ne_bytes(b);
        if v < 0 {
            return Err(ViewError::Invalid("_co_firsttraceable"));
        }
        Ok(v)
    }

    /// Reads a code object's header.
    pub fn code(&self, addr: Addr) -> Result<CodeInfo, ViewError> {
        let l = &self.layout.code;
        let mut end = (l.filename + 8)
            .max(l.name + 8)
            .max(l.firstlineno + 4)
            .max(l.linetable + 8);
        if let Some(q) = l.qualname {
            end = end.max(q + 8);
        }
        let mut buf = [0u8; SPAN];
        let b = self.span(addr, end, &mut buf)?;
        let info = CodeInfo {
            addr,
            filename: get_addr(b, l.filename)?,
            name: get_addr(b, l.name)?,
            qualname: match l.qualname {
                Some(off) => Some(get_addr(b, off)?),
                None => None,
            },
            firstlineno: get(b, l.firstlineno)?,
            linetable: get_addr(b, l.linetable)?,
        };
        if info.filename.is_null() || info.name.is_null() || info.linetable.is_null() {
            return Err(ViewError::Null("code object field"));
        }
        Ok(info)
    }

    /// What a profile shows of the code object at `addr`: its file name,
    /// its qualified name (3.11+; its name before) and its first line, with
    /// its line table to place instructions.
    pub fn code_source(&self, addr: Addr) -> Result<CodeSource, ViewError> {
        let info = self.code(addr)?;
        let mut filename = String::new();
        self.read_str(info.filename, &mut filename)?;
        let mut scope = String::new();
        self.read_str(info.qualname.unwrap_or(info.name), &mut scope)?;
        let mut linetable = Vec::new();
        self.linetable(&info, &mut linetable)?;
        Ok(CodeSource {
            filename,
            scope,
            firstlineno: info.firstlineno,
            linetable,
        })
    }

    /// Copies a code object's line table (`co_lnotab` / `co_linetable`
    /// bytes) into `out`, bounded by [`MAX_LINETABLE`]. Decode it with
    /// [`crate::linetable`].
    pub fn linetable(&self, code: &CodeInfo, out: &mut Vec<u8>) -> Result<(), ViewError> {
        self.read_bytes(code.linetable, MAX_LINETABLE, out)
    }

    /// The source location of the instruction at byte `offset` of `code`,
    /// decoding its line table (read into `scratch`, which is reused).
    pub fn location(
        &self,
        code: &CodeInfo,
        offset: u32,
        scratch: &mut Vec<u8>,
    ) -> Result<Location, ViewError> {
        let (major, minor) = self.layout.python;
        let format = TableFormat::for_version(PyVersion::new(major, minor, 0))?;
        self.linetable(code, scratch)?;
        Ok(linetable::location(
            format,
            scratch,
            code.firstlineno,
            offset,
        )?)
    }
}

/// What a stack walk hands each frame to: the one way this crate walks a
/// stack (the sampler's tick, where mode and every later caller use it).
///
/// `first_traceable` lets a caller with a cache of code objects answer
/// `_co_firsttraceable` (3.11+) without a read; `frame` gets every frame,
/// innermost first, shims and incomplete frames included (check
/// [`FrameInfo::kind`]: the markers are where native frames interleave).
/// Errors of the walk itself come back through `From<ViewError>`.
pub trait FrameVisitor<R: MemoryReader + ?Sized> {
    /// The visitor's error; walk errors are converted into it.
    type Error: From<ViewError>;

    /// `_co_firsttraceable` of the code object at `code` (3.11+).
    fn first_traceable(&mut self, target: &Target<'_, R>, code: Addr) -> Result<i32, ViewError> {
        target.code_firsttraceable(code)
    }

    /// Takes one frame. An error ends the walk with that error.
    fn frame(&mut self, target: &Target<'_, R>, frame: &FrameInfo) -> Result<(), Self::Error>;
}

/// The state of one walk: where it is and how far it went. Both
/// [`Target::walk`] and [`Frames`] step through it, so the two end the same
/// way on the same memory: [`ViewError::TooDeep`] past [`MAX_FRAMES`],
/// [`ViewError::Cycle`] on a frame that is its own parent, and the first
/// read error.
#[derive(Debug, Clone, Copy)]
struct Walk {
    next: Addr,
    count: usize,
}

impl Walk {
    // Inlined into each walk: returning the frame through a call costs a
    // tenth of a sampler's tick.
    #[inline(always)]
    fn step<R: MemoryReader + ?Sized>(
        &mut self,
        target: &Target<'_, R>,
        first_traceable: &mut dyn FnMut(Addr) -> Result<i32, ViewError>,
    ) -> Option<Result<FrameInfo, ViewError>> {
        if self.next.is_null() {
            return None;
        }
        if self.count >= MAX_FRAMES {
            self.next = Addr::NULL;
            return Some(Err(ViewError::TooDeep));
        }
        self.count += 1;
        let result = target
            .frame_with(self.next, first_traceable)
            .and_then(|(info, previous)| {
                if previous == info.addr {
                    Err(ViewError::Cycle("frames"))
                } else {
                    self.next = previous;
                    Ok(info)
                }
            });
        if result.is_err() {
            self.next = Addr::NULL;
        }
        Some(result)
    }
}

impl<'r, R: MemoryReader + ?Sized> Target<'r, R> {
    /// Walks the stack from `frame` outwards, handing every frame to
    /// `visitor` as it is read (nothing is collected). Returns how many
    /// frames were visited.
    pub fn walk<V: FrameVisitor<R>>(
        &self,
        frame: Addr,
        visitor: &mut V,
    ) -> Result<usize, V::Error> {
        let mut walk = Walk {
            next: frame,
            count: 0,
        };
        loop {
            let step = walk.step(self, &mut |code| visitor.first_traceable(self, code));
            match step {
                None => return Ok(walk.count),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(info)) => visitor.frame(self, &info)?,
            }
        }
    }
}

/// Iterator over the frames of a stack, innermost first (the walk of
/// [`Target::walk`] as an iterator, reading `_co_firsttraceable` each time).
#[derive(Debug)]
pub struct Frames<'r, R: MemoryReader + ?Sized> {
    target: Target<'r, R>,
    walk: Walk,
}

impl<R: MemoryReader + ?Sized> Iterator for Frames<'_, R> {
    type Item = Result<FrameInfo, ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        let target = self.target;
        self.walk
            .step(&target, &mut |code| target.code_firsttraceable(code))
    }
}

impl<R: MemoryReader + ?Sized> Target<'_, R> {
    /// The frame that the frame object at `frame_object` (what Python code
    /// holds, e.g. a greenlet's `gr_frame`) stands for, as the walker takes
    /// it: the object itself up to 3.10, its `f_frame` from 3.11.
    pub fn frame_of_object(&self, frame_object: Addr) -> Result<Addr, ViewError> {
        match &self.layout.frame {
            FrameLayout::Object(_) => Ok(frame_object),
            FrameLayout::Interpreter(l) => {
                let f = self.field_addr(frame_object, l.frame_object_frame)?;
                if f.is_null() {
                    return Err(ViewError::Null("f_frame"));
                }
                Ok(f)
            }
        }
    }
}
