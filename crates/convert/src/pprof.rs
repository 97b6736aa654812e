//! pprof's `profile.proto` (the messages written; field numbers from the
//! format's specification), encoded by `prost` and gzipped.

use std::io::{self, Write};

use hashbrown::HashMap;
use prost::Message;

use crate::aggregate::{Aggregate, Metric};

#[derive(Clone, PartialEq, Message)]
struct Profile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
    #[prost(int64, tag = "10")]
    duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    period: i64,
    #[prost(int64, repeated, tag = "13")]
    comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    default_sample_type: i64,
}

#[derive(Clone, PartialEq, Message)]
struct ValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(int64, tag = "1")]
    key: i64,
    #[prost(int64, tag = "2")]
    str: i64,
    #[prost(int64, tag = "3")]
    num: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Location {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
struct Line {
    #[prost(uint64, tag = "1")]
    function_id: u64,
    #[prost(int64, tag = "2")]
    line: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Function {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
    #[prost(int64, tag = "3")]
    system_name: i64,
    #[prost(int64, tag = "4")]
    filename: i64,
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// Writes `agg` as a gzipped pprof profile: sample types `samples`/`count`
/// and `wall`, `cpu` (`microseconds`) or `space` (`bytes`); one location
/// per distinct frame, one function per (name, file); each distinct stack
/// one sample (leaf first) labelled `pid`, `thread` and, when known,
/// `interpreter`.
pub fn write<W: Write>(agg: &Aggregate, out: W) -> io::Result<()> {
    let mut strings = Strings::default();
    strings.id("");
    let metric = agg.metric();
    let value_name = match metric {
        Metric::Wall => "wall",
        Metric::Cpu => "cpu",
        Metric::Memory => "space",
    };
    let sample_type = vec![
        ValueType {
            r#type: strings.id("samples"),
            unit: strings.id("count"),
        },
        ValueType {
            r#type: strings.id(value_name),
            unit: strings.id(metric.unit()),
        },
    ];
    let mut functions = Vec::new();
    let mut function_ids: HashMap<(i64, i64), u64> = HashMap::new();
    let mut location = Vec::with_capacity(agg.frames.len());
    for (i, f) in agg.frames.iter().enumerate() {
        let name = strings.id(&f.scope);
        let filename = strings.id(&f.filename);
        let next = functions.len() as u64 + 1;
        let id = *function_ids.entry((name, filename)).or_insert_with(|| {
            functions.push(Function {
                id: next,
                name,
                system_name: name,
                filename,
            });
            next
        });
        location.push(Location {
            id: i as u64 + 1,
            line: vec![Line {
                function_id: id,
                line: f.line.max(0),
            }],
        });
    }
    let (k_pid, k_thread, k_iid) = (
        strings.id("pid"),
        strings.id("thread"),
        strings.id("interpreter"),
    );
    let thread_names: Vec<i64> = agg
        .threads
        .iter()
        .map(|t| strings.id(&t.shown_name()))
        .collect();
    let mut sample = Vec::with_capacity(agg.stacks.len());
    for s in &agg.stacks {
        let t = &agg.threads[s.thread as usize];
        let mut label = vec![
            Label {
                key: k_pid,
                str: 0,
                num: t.pid,
            },
            Label {
                key: k_thread,
                str: thread_names[s.thread as usize],
                num: 0,
            },
        ];
        if let Some(iid) = t.iid {
            label.push(Label {
                key: k_iid,
                str: 0,
                num: iid,
            });
        }
        sample.push(Sample {
            location_id: s.frames.iter().rev().map(|&f| u64::from(f) + 1).collect(),
            value: vec![s.samples as i64, s.value],
            label,
        });
    }
    let interval: i64 = agg
        .meta("interval")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let duration_us: i64 = agg
        .meta("duration")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let comment = vec![strings.id(concat!("echion ", env!("CARGO_PKG_VERSION")))];
    let period_type = Some(ValueType {
        r#type: strings.id(value_name),
        unit: strings.id(metric.unit()),
    });
    let sample_type_name = strings.id(value_name);
    let profile = Profile {
        sample_type,
        sample,
        location,
        function: functions,
        string_table: strings.table,
        duration_nanos: duration_us.saturating_mul(1000),
        period_type,
        period: interval,
        comment,
        default_sample_type: sample_type_name,
    };
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let bytes = profile.encode_to_vec();
    gz.write_all(&bytes)?;
    gz.finish()?.flush()
}
