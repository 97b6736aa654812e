//! Dicts, instance attributes and module globals: enough to read what
//! `threading` knows of a process's threads (`threading._active`).

use std::ops::ControlFlow;

use super::{get, get_addr, Target, ViewError, SPAN};
use crate::addr::Addr;
use crate::layout::{DictKeysLayout, ManagedDict, DICT_KEY_ENTRY, DICT_UNICODE_ENTRY};
use crate::reader::{MemError, MemoryReader};

/// Most entries one dict walk reads (used or deleted slots).
pub const MAX_DICT_ENTRIES: u64 = 1 << 20;

/// Longest attribute or module name compared, in bytes.
const MAX_KEY: usize = 256;

/// Where the entries of a dict (or of an instance's split attributes) are.
#[derive(Debug, Clone, Copy)]
struct Entries {
    /// The first entry.
    base: Addr,
    /// Bytes per entry.
    stride: u64,
    /// Offset of the key and of the value inside an entry.
    key: u64,
    value: u64,
    /// How many entries are in use or deleted (`dk_nentries`).
    count: u64,
    /// The split values array (values come from there, by entry index),
    /// or null for a combined table.
    values: Addr,
}

impl<R: MemoryReader + ?Sized> Target<'_, R> {
    /// Where the entries of the keys object at `keys` are, with values from
    /// `values` (null: in the entries).
    fn entries(&self, keys: Addr, values: Addr) -> Result<Entries, ViewError> {
        let mut buf = [0u8; SPAN];
        let (base, stride, key, value, count) = match self.layout.dict.keys {
            DictKeysLayout::Sized {
                dk_size,
                dk_nentries,
                dk_indices,
            } => {
                let b = self.span(keys, dk_indices, &mut buf)?;
                let size: i64 = get(b, dk_size)?;
                let count: i64 = get(b, dk_nentries)?;
                if !(0..=MAX_DICT_ENTRIES as i64 * 2).contains(&size)
                    || !(0..=size).contains(&count)
                {
                    return Err(ViewError::Length {
                        what: "dict keys",
                        len: size as u64,
                    });
                }
                // why: DK_IXSIZE (Objects/dictobject.c, v3.8.18 to v3.10.13):
                // each index is as wide as the table size needs.
                let width: u64 = match size {
                    0..=0xff => 1,
                    0x100..=0xffff => 2,
                    0x1_0000..=0xffff_ffff => 4,
                    _ => 8,
                };
                let base = keys
                    .offset(dk_indices + size as u64 * width)
                    .ok_or(MemError::Overflow)?;
                (base, DICT_KEY_ENTRY, 8, 16, count as u64)
            }
            DictKeysLayout::Log2 {
                dk_log2_index_bytes,
                dk_kind,
                dk_nentries,
                dk_indices,
            } => {
                let b = self.span(keys, dk_indices, &mut buf)?;
                let log2_bytes: u8 = get(b, dk_log2_index_bytes)?;
                let kind: u8 = get(b, dk_kind)?;
                let count: i64 = get(b, dk_nentries)?;
                if log2_bytes > 40 || !(0..=MAX_DICT_ENTRIES as i64).contains(&count) {
                    return Err(ViewError::Length {
                        what: "dict keys",
                        len: count as u64,
                    });
                }
                let base = keys
                    .offset(dk_indices + (1u64 << log2_bytes))
                    .ok_or(MemError::Overflow)?;
                // why: DICT_KEYS_GENERAL is 0; the unicode and split kinds
                // store `PyDictUnicodeEntry` (Include/internal/pycore_dict.h,
                // v3.11.7 to v3.13.0).
                match kind {
                    0 => (base, DICT_KEY_ENTRY, 8, 16, count as u64),
                    1 | 2 => (base, DICT_UNICODE_ENTRY, 0, 8, count as u64),
                    _ => return Err(ViewError::Invalid("dict kind")),
                }
            }
        };
        Ok(Entries {
            base,
            stride,
            key,
            value,
            count: count.min(MAX_DICT_ENTRIES),
            values,
        })
    }

    /// Calls `visit(key, value)` for every item of the entries, in
    /// insertion order, until it breaks.
    fn visit_entries(
        &self,
        e: &Entries,
        visit: &mut dyn FnMut(Addr, Addr) -> Result<ControlFlow<()>, ViewError>,
    ) -> Result<(), ViewError> {
        for i in 0..e.count {
            let at = e.base.offset(i * e.stride).ok_or(MemError::Overflow)?;
            let mut b = [0u8; 24];
            self.reader.read(at, &mut b[..e.stride as usize])?;
            let key = get_addr(&b, e.key)?;
            if key.is_null() {
                continue;
            }
            let value = if e.values.is_null() {
                get_addr(&b, e.value)?
            } else {
                let v = e.values.offset(i * 8).ok_or(MemError::Overflow)?;
                Addr(self.read_u64(v)?)
            };
            if value.is_null() {
                continue;
            }
            if visit(key, value)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Calls `visit(key, value)` for every item of the dict at `dict` until
    /// it breaks. Deleted entries are skipped; at most
    /// [`MAX_DICT_ENTRIES`] are read.
    pub fn dict_items(
        &self,
        dict: Addr,
        visit: &mut dyn FnMut(Addr, Addr) -> Result<ControlFlow<()>, ViewError>,
    ) -> Result<(), ViewError> {
        let d = &self.layout.dict;
        let keys = self.field_addr(dict, d.ma_keys)?;
        let mut values = self.field_addr(dict, d.ma_values)?;
        if !values.is_null() {
            values = values.offset(d.values).ok_or(MemError::Overflow)?;
        }
        let e = self.entries(keys, values)?;
        self.visit_entries(&e, visit)
    }

    /// The value under the `str` key `name` in the dict at `dict`, if any.
    pub fn dict_get_str(&self, dict: Addr, name: &str) -> Result<Option<Addr>, ViewError> {
        let mut found = None;
        let mut key_text = String::new();
        self.dict_items(dict, &mut |k, v| {
            if self.str_equals(k, name, &mut key_text) {
                found = Some(v);
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(found)
    }

    /// Whether the object at `key` is a `str` equal to `name` (anything
    /// unreadable or longer than a name is not).
    fn str_equals(&self, key: Addr, name: &str, scratch: &mut String) -> bool {
        scratch.clear();
        self.str_len(key)
            .is_ok_and(|n| n == name.chars().count() as u64)
            && self.read_str(key, scratch).is_ok()
            && scratch == name
    }

    /// The length in code points of the `str` at `addr`, without reading
    /// its characters.
    fn str_len(&self, addr: Addr) -> Result<u64, ViewError> {
        let n = self.read_u64(
            addr.offset(self.layout.unicode.length)
                .ok_or(MemError::Overflow)?,
        )? as i64;
        if n < 0 || n as usize > MAX_KEY {
            return Err(ViewError::Length {
                what: "str key",
                len: n as u64,
            });
        }
        Ok(n as u64)
    }

    /// The attribute `name` of the object at `obj`, looked up in its
    /// instance dict only (where `__init__` puts attributes): the dict at
    /// `tp_dictoffset`, or the managed dict or split values of 3.11+.
    pub fn instance_attr(&self, obj: Addr, name: &str) -> Result<Option<Addr>, ViewError> {
        let d = &self.layout.dict;
        let ty = self.ob_type(obj)?;
        let mut buf = [0u8; SPAN];
        let head = (d.tp_flags + 8).max(d.tp_basicsize + 8);
        let b = self.span(ty, head, &mut buf)?;
        let flags: u64 = get(b, d.tp_flags)?;
        let basicsize: i64 = get(b, d.tp_basicsize)?;
        let managed = d.managed_flag != 0 && flags & d.managed_flag != 0;
        if !managed {
            let dictoffset =
                self.read_u64(ty.offset(d.tp_dictoffset).ok_or(MemError::Overflow)?)? as i64;
            // A negative offset counts from the end of a variable-size
            // object; no class whose instances we read has one.
            if dictoffset <= 0 {
                return Ok(None);
            }
            let dict = self.field_addr(obj, dictoffset as u64)?;
            if dict.is_null() {
                return Ok(None);
            }
            return self.dict_get_str(dict, name);
        }
        let before = |off: i64| -> Result<Addr, ViewError> {
            let at = obj.0.checked_add_signed(off).ok_or(MemError::Overflow)?;
            Ok(Addr(self.read_u64(Addr(at))?))
        };
        let (dict, values) = match d.managed {
            ManagedDict::No => return Ok(None),
            ManagedDict::Split { dict, values } => (before(dict)?, before(values)?),
            ManagedDict::Tagged { at } => {
                let word = before(at)?;
                if word.0 & 1 == 1 {
                    (Addr::NULL, Addr(word.0.wrapping_add(1)))
                } else {
                    (word, Addr::NULL)
                }
            }
            ManagedDict::Inline {
                dict,
                inline_flag,
                valid,
            } => {
                let dict = before(dict)?;
                let mut values = Addr::NULL;
                if dict.is_null() && flags & inline_flag != 0 && basicsize > 0 {
                    let v = obj.offset(basicsize as u64).ok_or(MemError::Overflow)?;
                    let mut ok = [0u8; 1];
                    self.reader
                        .read(v.offset(valid).ok_or(MemError::Overflow)?, &mut ok)?;
                    if ok[0] != 0 {
                        values = v;
                    }
                }
                (dict, values)
            }
        };
        if !dict.is_null() {
            return self.dict_get_str(dict, name);
        }
        if values.is_null() {
            return Ok(None);
        }
        let cached = d
            .ht_cached_keys
            .ok_or(ViewError::Unsupported("ht_cached_keys"))?;
        let keys = self.field_addr(ty, cached)?;
        let values = values.offset(d.values).ok_or(MemError::Overflow)?;
        let e = self.entries(keys, values)?;
        let mut found = None;
        let mut key_text = String::new();
        self.visit_entries(&e, &mut |k, v| {
            if self.str_equals(k, name, &mut key_text) {
                found = Some(v);
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(found)
    }

    /// The address of `sys.modules` of the interpreter at `interp` (null
    /// before the interpreter has one).
    pub fn modules_dict(&self, interp: Addr) -> Result<Addr, ViewError> {
        self.field_addr(interp, self.layout.dict.interp_modules)
    }

    /// The module `name` of the interpreter at `interp` (`sys.modules`), if
    /// it is imported.
    pub fn module(&self, interp: Addr, name: &str) -> Result<Option<Addr>, ViewError> {
        let modules = self.field_addr(interp, self.layout.dict.interp_modules)?;
        if modules.is_null() {
            return Ok(None);
        }
        self.dict_get_str(modules, name)
    }

    /// The global `name` of the module object at `module` (its `__dict__`,
    /// found through its type's `tp_dictoffset`).
    pub fn module_global(&self, module: Addr, name: &str) -> Result<Option<Addr>, ViewError> {
        let ty = self.ob_type(module)?;
        let off = self.read_u64(
            ty.offset(self.layout.dict.tp_dictoffset)
                .ok_or(MemError::Overflow)?,
        )? as i64;
        if off <= 0 {
            return Err(ViewError::Invalid("module dict offset"));
        }
        let dict = self.field_addr(module, off as u64)?;
        if dict.is_null() {
            return Ok(None);
        }
        self.dict_get_str(dict, name)
    }

    /// What `threading` of the interpreter at `interp` knows of its
    /// threads: each `Thread` in `threading._active`, by the `pthread_t`
    /// that a thread state's `thread_id` holds, and echion's own sampler
    /// thread (`echion.bootstrap._sampler_thread`), which echion keeps out
    /// of `_active` so that the program does not see it. Empty when the
    /// interpreter never imported `threading`. Threads whose name cannot be
    /// read are left out.
    pub fn threading_names(&self, interp: Addr) -> Result<Vec<ThreadName>, ViewError> {
        let mut out = Vec::new();
        let Some(threading) = self.module(interp, "threading")? else {
            return Ok(out);
        };
        let Some(active) = self.module_global(threading, "_active")? else {
            return Ok(out);
        };
        self.dict_items(active, &mut |ident, thread| {
            if let Ok(ident) = self.read_int(ident) {
                out.extend(self.thread_name(ident, thread));
            }
            if out.len() >= super::MAX_THREADS {
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        let sampler = self
            .module(interp, "echion.bootstrap")
            .ok()
            .flatten()
            .and_then(|m| self.module_global(m, "_sampler_thread").ok().flatten());
        if let Some(thread) = sampler {
            let ident = self
                .instance_attr(thread, "_ident")
                .ok()
                .flatten()
                .and_then(|i| self.read_int(i).ok());
            if let Some(ident) = ident.filter(|&i| !out.iter().any(|t| t.ident == i as u64)) {
                out.extend(self.thread_name(ident, thread));
            }
        }
        Ok(out)
    }

    /// A `Thread` object's name and kernel id, known by `ident`.
    fn thread_name(&self, ident: i64, thread: Addr) -> Option<ThreadName> {
        let name = self.instance_attr(thread, "_name").ok().flatten()?;
        let mut text = String::new();
        self.read_str(name, &mut text).ok()?;
        let native_id = self
            .instance_attr(thread, "_native_id")
            .ok()
            .flatten()
            .and_then(|n| self.read_int(n).ok())
            .and_then(|n| u64::try_from(n).ok())
            .filter(|&n| n != 0);
        Some(ThreadName {
            ident: ident as u64,
            name: text,
            native_id,
        })
    }
}

/// A thread as `threading` knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadName {
    /// `Thread.ident` (the `pthread_t`, a thread state's `thread_id`).
    pub ident: u64,
    /// `Thread.name`.
    pub name: String,
    /// `Thread.native_id` (the kernel tid), once the thread has started.
    pub native_id: Option<u64>,
}
