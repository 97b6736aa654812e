//! Property tests: what is written is read back, and no input makes the
//! readers panic.

use std::io::Read;

use echion_mojo::event::encode_header;
use echion_mojo::{
    Decoder, Event, EventReader, Frame, FrameSpec, Metric, MojoWriter, Profile, SampleRef,
    StackEntry, Version, WriterOptions,
};
use proptest::prelude::*;

/// An owned event, so that proptest can generate and shrink it.
#[derive(Debug, Clone, PartialEq)]
enum Owned {
    Metadata(String, String),
    Stack(i64, i64, String),
    Frame([i64; 7]),
    FrameInvalid,
    FrameRef(i64),
    FrameKernel(String),
    Gc,
    Idle,
    MetricTime(i64),
    MetricMemory(i64),
    String(i64, String),
    StringRef(i64),
    StackRepeat,
}

impl Owned {
    fn event(&self, v: Version) -> Event<'_> {
        match self {
            Owned::Metadata(k, val) => Event::Metadata { key: k, value: val },
            Owned::Stack(pid, iid, t) => Event::Stack {
                pid: *pid,
                iid: (v >= Version::V3).then_some(*iid),
                thread: t,
            },
            Owned::Frame(f) => {
                let cols = v >= Version::V2;
                Event::Frame {
                    key: f[0],
                    filename: f[1],
                    scope: f[2],
                    line: f[3],
                    line_end: if cols { f[4] } else { 0 },
                    column: if cols { f[5] } else { 0 },
                    column_end: if cols { f[6] } else { 0 },
                }
            }
            Owned::FrameInvalid => Event::FrameInvalid,
            Owned::FrameRef(k) => Event::FrameRef { key: *k },
            Owned::FrameKernel(s) => Event::FrameKernel { scope: s },
            Owned::Gc => Event::Gc,
            Owned::Idle => Event::Idle,
            Owned::MetricTime(n) => Event::MetricTime(*n),
            Owned::MetricMemory(n) => Event::MetricMemory(*n),
            Owned::String(k, s) => Event::String { key: *k, value: s },
            Owned::StringRef(k) => Event::StringRef { key: *k },
            Owned::StackRepeat => Event::StackRepeat,
        }
    }
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode text without NUL, which ends a string in the format.
    "[^\u{0}]{0,24}"
}

fn owned(v4: bool) -> impl Strategy<Value = Owned> {
    let n = any::<i64>();
    let mut options = vec![
        (text(), text())
            .prop_map(|(k, v)| Owned::Metadata(k, v))
            .boxed(),
        (n, n, text())
            .prop_map(|(p, i, t)| Owned::Stack(p, i, t))
            .boxed(),
        any::<[i64; 7]>().prop_map(Owned::Frame).boxed(),
        Just(Owned::FrameInvalid).boxed(),
        n.prop_map(Owned::FrameRef).boxed(),
        text().prop_map(Owned::FrameKernel).boxed(),
        Just(Owned::Gc).boxed(),
        Just(Owned::Idle).boxed(),
        n.prop_map(Owned::MetricTime).boxed(),
        n.prop_map(Owned::MetricMemory).boxed(),
        (n, text()).prop_map(|(k, s)| Owned::String(k, s)).boxed(),
        n.prop_map(Owned::StringRef).boxed(),
    ];
    if v4 {
        options.push(Just(Owned::StackRepeat).boxed());
    }
    proptest::strategy::Union::new(options)
}

fn versioned_events() -> impl Strategy<Value = (Version, Vec<Owned>)> {
    (1u8..=4).prop_flat_map(|n| {
        let v = Version::from_number(i64::from(n)).expect("1 to 4");
        proptest::collection::vec(owned(n == 4), 0..64).prop_map(move |e| (v, e))
    })
}

/// A reader that hands out at most `step` bytes a call, to exercise the
/// streaming reader's refills.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A random but well-formed profile: threads, frames and samples.
#[derive(Debug, Clone)]
struct Script {
    frames: Vec<(String, String, [i64; 4])>,
    samples: Vec<(u8, i64, Vec<usize>, i64, bool)>,
}

fn script() -> impl Strategy<Value = Script> {
    let frame = (
        prop_oneof![
            Just("a.py".to_string()),
            Just("<frozen x>".to_string()),
            Just("libc.so".to_string()),
            text()
        ],
        text(),
        any::<[i64; 4]>(),
    );
    proptest::collection::vec(frame, 1..20).prop_flat_map(|frames| {
        let n = frames.len();
        let sample = (
            0u8..4,
            0i64..3,
            proptest::collection::vec(0..n, 0..12),
            any::<i64>(),
            any::<bool>(),
        );
        proptest::collection::vec(sample, 0..40).prop_map(move |samples| Script {
            frames: frames.clone(),
            samples,
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// read(write(x)) == x for arbitrary event sequences of every version,
    /// through both decoders.
    #[test]
    fn events_round_trip((version, events) in versioned_events(), step in 1usize..64) {
        let mut bytes = Vec::new();
        encode_header(version, &mut bytes);
        for e in &events {
            e.event(version).encode(version, &mut bytes);
        }
        let mut d = Decoder::new(&bytes).expect("header");
        prop_assert_eq!(d.version(), version);
        for e in &events {
            prop_assert_eq!(d.next_event().expect("valid"), Some(e.event(version)));
        }
        prop_assert_eq!(d.next_event().expect("end"), None);

        let mut r = EventReader::new(Trickle { data: &bytes, step }).expect("header");
        for e in &events {
            let got = r.next_event().expect("valid");
            prop_assert_eq!(got, Some(e.event(version)));
        }
        prop_assert!(r.next_event().expect("end").is_none());
    }

    /// What the high-level writer is given is what the profile reader
    /// returns, in v3 and, with STACK_REPEAT, in v4.
    #[test]
    fn writer_round_trip(s in script(), v4 in any::<bool>()) {
        let version = if v4 { Version::V4 } else { Version::V3 };
        let mut w = MojoWriter::with_options(Vec::new(), 77, WriterOptions { version }).expect("vec");
        w.metadata("mode", "wall").expect("vec");
        let ids: Vec<_> = s.frames.iter().map(|(f, sc, n)| w.intern_frame(&FrameSpec {
            filename: f, scope: sc, line: n[0], line_end: n[1], column: n[2], column_end: n[3],
        })).collect();
        let threads = ["MainThread", "worker", "計算", "café"];
        for (t, iid, stack, metric, gc) in &s.samples {
            let stack: Vec<_> = stack.iter().map(|&i| StackEntry::Frame(ids[i])).collect();
            w.sample(&SampleRef {
                iid: *iid, thread: threads[*t as usize], stack: &stack,
                metrics: &[Metric::Time(*metric)], gc: *gc, idle: false,
            }).expect("vec");
        }
        let bytes = w.finish().expect("vec");
        let p = Profile::parse(&bytes).expect("our own output parses");
        prop_assert_eq!(p.version, version);
        prop_assert_eq!(p.metadata("mode"), Some("wall"));
        prop_assert_eq!(p.samples.len(), s.samples.len());
        for (got, (t, iid, stack, metric, gc)) in p.samples.iter().zip(&s.samples) {
            prop_assert_eq!(got.pid, 77);
            prop_assert_eq!(got.iid, Some(*iid));
            prop_assert_eq!(&got.thread, threads[*t as usize]);
            prop_assert_eq!(got.time, Some(*metric));
            prop_assert_eq!(got.gc, *gc);
            let frames: Vec<_> = got.frames.iter().map(|f| match f {
                Frame::Frame(i) => (i.filename.to_string(), i.scope.to_string(), [i.line, i.line_end, i.column, i.column_end]),
                other => panic!("unexpected {other:?}"),
            }).collect();
            let want: Vec<_> = stack.iter().map(|&i| s.frames[i].clone()).collect();
            prop_assert_eq!(frames, want);
        }
    }

    /// A writer that keeps only a few strings interned (it forgets them
    /// all, and defines again under new keys what is used after, while
    /// samples are being written) writes what the reader reads back.
    #[test]
    fn forgetting_writer_round_trip(s in script(), v4 in any::<bool>(), limit in 1usize..6) {
        let version = if v4 { Version::V4 } else { Version::V3 };
        let mut w = MojoWriter::with_options(Vec::new(), 77, WriterOptions { version }).expect("vec");
        w.set_intern_limit(limit);
        let threads = ["MainThread", "worker", "計算", "café"];
        for (t, iid, stack, metric, gc) in &s.samples {
            let stack: Vec<_> = stack.iter().map(|&i| {
                let (f, sc, n) = &s.frames[i];
                StackEntry::Frame(w.intern_frame(&FrameSpec {
                    filename: f, scope: sc, line: n[0], line_end: n[1], column: n[2], column_end: n[3],
                }))
            }).collect();
            w.sample(&SampleRef {
                iid: *iid, thread: threads[*t as usize], stack: &stack,
                metrics: &[Metric::Time(*metric)], gc: *gc, idle: false,
            }).expect("vec");
        }
        let bytes = w.finish().expect("vec");
        let p = Profile::parse(&bytes).expect("our own output parses");
        prop_assert_eq!(p.samples.len(), s.samples.len());
        for (got, (_, _, stack, metric, _)) in p.samples.iter().zip(&s.samples) {
            prop_assert_eq!(got.time, Some(*metric));
            let frames: Vec<_> = got.frames.iter().map(|f| match f {
                Frame::Frame(i) => (i.filename.to_string(), i.scope.to_string(), [i.line, i.line_end, i.column, i.column_end]),
                other => panic!("unexpected {other:?}"),
            }).collect();
            let want: Vec<_> = stack.iter().map(|&i| s.frames[i].clone()).collect();
            prop_assert_eq!(frames, want);
        }
    }

    /// No input makes the readers panic, and errors name an offset inside
    /// the input.
    #[test]
    fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), version in 1u8..=6) {
        let mut bytes = b"MOJ".to_vec();
        bytes.push(version);
        bytes.extend_from_slice(&body);
        for data in [&bytes[..], &body[..]] {
            match Profile::parse_partial(data) {
                Ok((_, Some(e))) | Err(e) => prop_assert!(e.offset <= data.len() as u64),
                Ok((_, None)) => {}
            }
            if let Ok(r) = EventReader::new(Trickle { data, step: 7 }) {
                let mut r = r;
                let mut n = 0;
                while let Ok(Some(_)) = r.next_event() {
                    n += 1;
                    prop_assert!(n <= data.len());
                }
            }
        }
    }
}

#[test]
fn truncation_is_reported_with_offset() {
    let mut w = MojoWriter::new(Vec::new(), 1).expect("vec");
    let f = w.intern_frame(&FrameSpec {
        filename: "a.py",
        scope: "f",
        line: 1,
        line_end: 1,
        column: 0,
        column_end: 0,
    });
    for _ in 0..2 {
        w.sample(&SampleRef {
            iid: 0,
            thread: "MainThread",
            stack: &[StackEntry::Frame(f)],
            metrics: &[Metric::Time(5)],
            gc: false,
            idle: false,
        })
        .expect("vec");
    }
    let bytes = w.finish().expect("vec");
    for cut in 4..bytes.len() {
        let data = &bytes[..cut];
        let (p, err) = Profile::parse_partial(data).expect("header");
        if let Some(err) = err {
            assert!(err.offset < cut as u64, "cut {cut}: {err}");
            assert!(err.to_string().contains("byte offset"), "{err}");
        }
        // Every kept sample is whole.
        assert!(p
            .samples
            .iter()
            .all(|s| s.time == Some(5) && s.frames.len() == 1));
    }
    assert!(Profile::parse(&bytes[..bytes.len() - 1]).is_err());
    let err = Profile::parse(b"MOX\x03").expect_err("not MOJO");
    assert_eq!(
        err.to_string(),
        "not a MOJO stream (no MOJ header) at byte offset 0"
    );
    let err = Profile::parse(b"MOJ\x09").expect_err("version 9");
    assert_eq!(
        err.to_string(),
        "unsupported MOJO version 9 at byte offset 0"
    );
}

#[test]
fn nul_in_strings_is_replaced() {
    let mut w = MojoWriter::new(Vec::new(), 1).expect("vec");
    w.metadata("k\0", "v\0v").expect("vec");
    let f = w.intern_frame(&FrameSpec {
        filename: "a\0.py",
        scope: "f",
        line: 1,
        line_end: 1,
        column: 0,
        column_end: 0,
    });
    w.sample(&SampleRef {
        iid: 0,
        thread: "T\0",
        stack: &[StackEntry::Frame(f)],
        metrics: &[Metric::Time(1)],
        gc: false,
        idle: false,
    })
    .expect("vec");
    let p = Profile::parse(&w.finish().expect("vec")).expect("valid");
    assert_eq!(p.metadata("k\u{fffd}"), Some("v\u{fffd}v"));
    assert_eq!(p.samples[0].thread, "T\u{fffd}");
}

#[test]
fn v4_repeats_shared_prefix() {
    let mut w = MojoWriter::with_options(
        Vec::new(),
        1,
        WriterOptions {
            version: Version::V4,
        },
    )
    .expect("vec");
    let spec = |scope| FrameSpec {
        filename: "a.py",
        scope,
        line: 1,
        line_end: 1,
        column: 0,
        column_end: 0,
    };
    let a = StackEntry::Frame(w.intern_frame(&spec("a")));
    let b = StackEntry::Frame(w.intern_frame(&spec("b")));
    let sample = |w: &mut MojoWriter<Vec<u8>>, stack: &[StackEntry]| {
        w.sample(&SampleRef {
            iid: 0,
            thread: "MainThread",
            stack,
            metrics: &[Metric::Time(1)],
            gc: false,
            idle: false,
        })
        .expect("vec")
    };
    sample(&mut w, &[a, b]);
    let before = w.finish().expect("vec").len();
    let mut w = MojoWriter::with_options(
        Vec::new(),
        1,
        WriterOptions {
            version: Version::V4,
        },
    )
    .expect("vec");
    let a = StackEntry::Frame(w.intern_frame(&spec("a")));
    let b = StackEntry::Frame(w.intern_frame(&spec("b")));
    sample(&mut w, &[a, b]);
    sample(&mut w, &[a, b]);
    let bytes = w.finish().expect("vec");
    // The repeated sample is STACK + STACK_REPEAT + metric: no frame refs.
    let stack_len = 1 + 1 + 1 + "MainThread".len() + 1;
    assert_eq!(bytes.len() - before, stack_len + 1 + 2);
    let events: Vec<_> = Decoder::new(&bytes)
        .expect("header")
        .collect::<Result<_, _>>()
        .expect("valid");
    assert!(events.contains(&Event::StackRepeat));
}

/// Found by the fuzzer: several `STACK_REPEAT`s in one sample each repeated
/// the stack built so far, so that a few hundred bytes grew stacks
/// exponentially. One per sample is allowed; a second is an error.
#[test]
fn one_stack_repeat_per_sample() {
    let stream = |repeats: usize| {
        let mut out = Vec::new();
        encode_header(Version::V4, &mut out);
        for _ in 0..3 {
            Event::Stack {
                pid: 1,
                iid: Some(0),
                thread: "t",
            }
            .encode(Version::V4, &mut out);
            Event::FrameInvalid.encode(Version::V4, &mut out);
            for _ in 0..repeats {
                Event::StackRepeat.encode(Version::V4, &mut out);
            }
            Event::MetricTime(1).encode(Version::V4, &mut out);
        }
        out
    };
    let p = Profile::parse(&stream(1)).expect("one repeat per sample");
    let depths: Vec<_> = p.samples.iter().map(|s| s.frames.len()).collect();
    assert_eq!(depths, [1, 2, 3]);
    let err = Profile::parse(&stream(2)).expect_err("two repeats");
    assert!(
        err.to_string().contains("more than one STACK_REPEAT"),
        "{err}"
    );
}

/// Frame keys of every encoded length (one, two and three or more bytes)
/// and stacks longer than the writer's encoding block, with invalid frames
/// among them, read back as written.
#[test]
fn long_stacks_of_large_keys_round_trip() {
    let mut w = MojoWriter::new(Vec::new(), 5).expect("vec");
    let ids: Vec<_> = (0..20_000)
        .map(|i| {
            w.intern_frame(&FrameSpec {
                filename: "m.py",
                scope: &format!("f{i}"),
                line: i,
                line_end: i,
                column: 0,
                column_end: 0,
            })
        })
        .collect();
    let mut stacks = Vec::new();
    for len in [1usize, 39, 40, 41, 79, 80, 81, 300, 1000] {
        let stack: Vec<Option<usize>> = (0..len)
            .map(|j| {
                let i = (j * 7919 + len * 31) % ids.len();
                (j % 97 != 96).then_some(i)
            })
            .collect();
        stacks.push(stack);
    }
    for stack in &stacks {
        let entries: Vec<_> = stack
            .iter()
            .map(|i| i.map_or(StackEntry::Invalid, |i| StackEntry::Frame(ids[i])))
            .collect();
        w.sample(&SampleRef {
            iid: 0,
            thread: "MainThread",
            stack: &entries,
            metrics: &[Metric::Time(1)],
            gc: false,
            idle: false,
        })
        .expect("vec");
    }
    let p = Profile::parse(&w.finish().expect("vec")).expect("parses");
    assert_eq!(p.samples.len(), stacks.len());
    for (got, want) in p.samples.iter().zip(&stacks) {
        let got: Vec<Option<String>> = got
            .frames
            .iter()
            .map(|f| match f {
                Frame::Frame(i) => Some(i.scope.to_string()),
                Frame::Invalid => None,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let want: Vec<Option<String>> = want.iter().map(|i| i.map(|i| format!("f{i}"))).collect();
        assert_eq!(got, want);
    }
}
