//! The MOJO readers (echion-mojo). Any bytes, with or without a MOJO
//! header in front: the decoders and the profile reader return errors,
//! never panic, loop or allocate without bound. Seeded with the first 16 KB
//! of the MOJO files Austin and echion 0.3 wrote (the shared fixtures).
#![no_main]

use echion_mojo::{EventReader, Profile, SampleReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut framed = b"MOJ\x03".to_vec();
    if let Some((&v, rest)) = data.split_first() {
        framed[3] = v % 6;
        framed.extend_from_slice(rest);
    }
    for input in [data, &framed[..]] {
        if let Ok((p, err)) = Profile::parse_partial(input) {
            assert!(p.samples.len() <= input.len());
            if let Some(e) = err {
                assert!(e.offset <= input.len() as u64);
            }
        }
        // The streaming reader (what echion-convert uses) ends too, and
        // gives no more samples than the whole-profile reader's bound.
        if let Ok(mut r) = SampleReader::new(input) {
            let mut calls = 0usize;
            while !matches!(r.next_sample(), Ok(None)) {
                calls += 1;
                assert!(calls <= input.len() + 2);
            }
        }
        if let Ok(mut r) = EventReader::new(input) {
            let mut n = 0usize;
            while let Ok(Some(_)) = r.next_event() {
                n += 1;
                assert!(n <= input.len());
            }
        }
    }
});
