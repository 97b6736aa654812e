//! The whole sampler over a memory image: where mode's dump (names read
//! from `threading`, asyncio found through `sys.modules`), rendered as text
//! and JSON, and two ticks of the engine in wall mode with every thread
//! shown and asyncio's task sets where the input says, into a MOJO writer.
//!
//! Input: the version (minor), `_PyRuntime`'s address, asyncio's scheduled
//! set, eager set and current-task dict, a thread id and the loop it runs
//! (u64 LE each), then a memory image (`SnapshotReader::to_bytes`). The
//! seeds are the images of real processes of every version that
//! `crates/sampler/tests/images.rs` replays (`scripts/fuzz` writes them).
//! Checked: no panic, no endless walk, and the profile written from
//! whatever was read is valid MOJO.
#![no_main]

use echion_cpython_layout::{Addr, Layout, PyVersion, SnapshotReader};
use echion_mojo::{MojoWriter, Profile};
use echion_sampler::codewatch::FreedCodes;
use echion_sampler::{Mode, Session, ThreadFilter, Update};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 1 + 6 * 8;

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER {
        return;
    }
    let version = PyVersion::new(3, 8 + data[0] % 6, 0);
    let Ok(layout) = Layout::for_version(version) else {
        return;
    };
    let word =
        |i: usize| u64::from_le_bytes(data[1 + 8 * i..9 + 8 * i].try_into().expect("8 bytes"));
    let Ok((snap, _)) = SnapshotReader::from_bytes(&data[HEADER..]) else {
        return;
    };
    let session = Session::new(&snap, 1, Addr(word(0)), layout, version);
    if let Ok(dump) = session.dump() {
        let mut out = Vec::new();
        dump.render_text(&mut out, true).expect("to a Vec");
        dump.render_json(&mut out, 1, "3").expect("to a Vec");
    }
    let names = session.thread_names();
    if word(1) != 0 {
        names.post(Update::AsyncioRoots {
            scheduled: word(1),
            eager: word(2),
            current: word(3),
        });
        names.post(Update::Loop {
            thread_id: word(4),
            event_loop: word(5),
        });
    }
    let writer = MojoWriter::new(Vec::new(), 1).expect("to a Vec");
    let Ok(mut engine) = session.engine(Mode::Wall, 1_000_000, writer) else {
        return;
    };
    engine.set_filter(ThreadFilter::Every);
    let freed = FreedCodes::new();
    for tick in 1..=2u64 {
        let _ = engine.tick(tick * 1_000_000, &names, &freed);
    }
    let bytes = engine.into_sink().finish().expect("to a Vec");
    Profile::parse(&bytes).expect("the profile of any image is valid MOJO");
});
