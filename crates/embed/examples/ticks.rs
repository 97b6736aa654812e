//! A fixed number of in-process ticks, for counting instructions: run it
//! under `valgrind --tool=callgrind --toggle-collect='*Engine*tick*'` to
//! get the instructions one tick costs, a number that does not depend on
//! what else the machine is doing (criterion's times do).
//!
//! `ECHION_EMBED_LIB=<libpython3.X.so> PYTHONHOME=<prefix> ticks [N]`: the
//! interpreter is embedded, a thread 50 frames deep is sampled N times
//! (default 1000) with fault-guarded loads.

use std::time::{Duration, Instant};

use echion_cpython_layout::Layout;
use echion_embed::Embedded;
use echion_mojo::MojoWriter;
use echion_sampler::codewatch::FreedCodes;
use echion_sampler::mem::guarded::{self, GuardedReader};
use echion_sampler::{Engine, Mode, RegistryQueue};

const TARGET: &str = r#"
import time
def f(n):
    if n == 0:
        time.sleep(1e9)
    f(n - 1)
f(48)
"#;

fn main() {
    let lib = std::env::var("ECHION_EMBED_LIB").expect("ECHION_EMBED_LIB=<libpython3.X.so>");
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(1000, |a| a.parse().expect("a number of ticks"));
    let python = Embedded::start(lib.as_ref(), TARGET).expect("embed python");
    let layout = Layout::for_version(python.version()).expect("supported version");
    guarded::prepare_thread();
    let reader = GuardedReader::new().expect("own process");
    let registry = RegistryQueue::default();
    let freed = FreedCodes::new();
    let mut engine = Engine::new(
        &reader,
        layout,
        python.runtime(),
        Mode::Wall,
        1_000_000,
        MojoWriter::new(std::io::sink(), 1).expect("sink"),
    )
    .expect("engine");
    // Until the 50 frames are there and cached.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut now = 1_000_000u64;
    while engine.stats().samples == 0 || engine.stats().skipped_total() > 0 {
        engine.tick(now, &registry, &freed).expect("tick");
        now += 1_000_000;
        assert!(Instant::now() < deadline, "no stack");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    engine.tick(now, &registry, &freed).expect("tick");
    let before = engine.stats().samples;
    for _ in 0..n {
        now += 1_000_000;
        engine.tick(now, &registry, &freed).expect("tick");
    }
    assert_eq!(engine.stats().samples - before, n, "one sample a tick");
    println!("{n} ticks, python {}", python.version());
}
