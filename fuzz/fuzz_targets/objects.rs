//! The views over another process's memory (echion-cpython-layout), object
//! by object: strings of every kind, bytes, ints, type names, C strings,
//! code objects and their line tables, frame chains, interpreters and their
//! thread states, dicts, lists, sets, weak references, asyncio tasks and
//! generators, `threading`'s names, for the layout of every version.
//!
//! Input: the version (minor, micro), the view to run, the address it
//! starts at (u64 LE), then a memory image (`SnapshotReader::to_bytes`).
//! The seeds are the images of real processes (`scripts/fuzz` writes them),
//! started at the addresses of the objects the sampler read there.
//! Checked: no panic, no endless walk (libFuzzer's timeout), no allocation
//! beyond what the views bound.
#![no_main]

use std::ops::ControlFlow;

use echion_cpython_layout::views::Target;
use echion_cpython_layout::{Addr, Layout, PyVersion, SnapshotReader};
use libfuzzer_sys::fuzz_target;

/// Views run per input; the selector picks one.
const VIEWS: u8 = 15;

fuzz_target!(|data: &[u8]| {
    if data.len() < 11 {
        return;
    }
    let version = PyVersion::new(3, 8 + data[0] % 6, data[1] % 20);
    let Ok(layout) = Layout::for_version(version) else {
        return;
    };
    let view = data[2] % VIEWS;
    let addr = Addr(u64::from_le_bytes(data[3..11].try_into().expect("8 bytes")));
    let Ok((snap, _)) = SnapshotReader::from_bytes(&data[11..]) else {
        return;
    };
    let t = Target::new(&snap, layout);
    let mut text = String::new();
    let mut bytes = Vec::new();
    match view {
        0 => drop(t.read_str(addr, &mut text)),
        1 => drop(t.read_bytes(addr, 1 << 20, &mut bytes)),
        2 => drop(t.read_int(addr)),
        3 => drop(t.type_name(addr, &mut text)),
        4 => drop(t.read_cstr(addr, 4096, &mut text)),
        5 => {
            if let Ok(code) = t.code(addr) {
                for offset in [0, 2, 10, 100, u32::MAX] {
                    let _ = t.location(&code, offset, &mut bytes);
                }
            }
            let _ = t.code_source(addr);
            let _ = t.code_firsttraceable(addr);
        }
        6 => {
            for f in t.frames(addr) {
                let Ok(f) = f else { break };
                if f.is_python() {
                    let _ = t.code_source(f.code);
                }
            }
        }
        7 => {
            for interp in t.interpreters(addr) {
                let Ok(interp) = interp else { break };
                for thread in t.threads(&interp) {
                    let Ok(thread) = thread else { break };
                    for f in t.frames(thread.frame) {
                        if f.is_err() {
                            break;
                        }
                    }
                }
                let _ = t.threading_names(interp.addr);
            }
        }
        8 => drop(t.dict_items(addr, &mut |k, _| {
            let _ = t.read_str(k, &mut text);
            Ok(ControlFlow::Continue(()))
        })),
        9 => drop(t.list_items(addr, 1 << 16, &mut |_| {})),
        10 => {
            if let Ok(shape) = t.set_shape(addr) {
                let _ = t.set_entries(&shape, 0, shape.slots.min(1 << 16), &mut |_, _| true);
                let _ = t.set_entries(&shape, shape.slots / 2, 7, &mut |_, _| true);
            }
            let _ = t.set_keys(addr, 1 << 16, &mut |_| true);
        }
        11 => {
            if let Ok(task) = t.task(addr) {
                let _ = t.task_name(&task, &mut text);
                let _ = t.generator(task.coro);
            }
        }
        12 => {
            let _ = t.generator(addr);
            let _ = t.generator_mark(addr);
            let _ = t.asend_generator(addr);
        }
        13 => {
            let _ = t.weakref(addr);
            let _ = t.frame_of_object(addr);
        }
        _ => {
            let _ = t.threading_names(addr);
            let _ = t.module(addr, "asyncio");
            let _ = t.instance_attr(addr, "_name");
        }
    }
});
