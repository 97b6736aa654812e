//! The text formats: collapsed stacks, the flame graph SVG (by `inferno`)
//! and speedscope's JSON.

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::aggregate::{Aggregate, Metric, ThreadRec};
use crate::Options;

/// A frame of Austin's text format: `file:scope:line` (`:GC:` and
/// `:INVALID:` as austin-python writes them, `kernel:name:0`).
fn austin_frame(agg: &Aggregate, i: u32, out: &mut String) {
    use crate::aggregate::FrameKind;
    let f = &agg.frames[i as usize];
    match f.kind {
        FrameKind::Python | FrameKind::Native => {
            out.push_str(&f.filename);
            out.push(':');
            out.push_str(&f.scope);
            out.push(':');
            out.push_str(&f.line.to_string());
        }
        FrameKind::Kernel => {
            out.push_str("kernel:");
            out.push_str(&f.scope);
            out.push_str(":0");
        }
        FrameKind::Invalid => out.push_str(":INVALID:"),
        FrameKind::Gc => out.push_str(":GC:"),
    }
}

fn austin_thread(t: &ThreadRec, out: &mut String) {
    out.push_str(&format!("P{};T", t.pid));
    if let Some(iid) = t.iid {
        out.push_str(&format!("{iid}:"));
    }
    out.push_str(&t.shown_name());
}

/// Collapsed stacks in Austin's text format, one line per distinct stack:
/// `P<pid>;T<iid>:<thread>;<file>:<scope>:<line>;… <sum>`, after a
/// `# key: value` line for each input's metadata (as `mojo2austin`
/// renders them). Summing austin-python's lines for a stack gives ours.
pub fn collapsed<W: Write>(agg: &Aggregate, mut out: W) -> io::Result<()> {
    for (_, k, v) in &agg.metadata {
        writeln!(out, "# {k}: {v}")?;
    }
    let mut line = String::new();
    for s in &agg.stacks {
        line.clear();
        austin_thread(&agg.threads[s.thread as usize], &mut line);
        for &f in s.frames.iter() {
            line.push(';');
            austin_frame(agg, f, &mut line);
        }
        writeln!(out, "{line} {}", s.value)?;
    }
    Ok(())
}

/// A label with no `;` (the separator of folded stacks).
fn clean(label: String) -> String {
    if label.contains(';') {
        label.replace(';', ",")
    } else {
        label
    }
}

/// The flame graph: one tower per process, and in it one per thread
/// (unless merged), each frame labelled `scope (file:line)`. Memory
/// profiles show the stacks with live bytes (a stack that nets to zero or
/// less has nothing to draw).
pub fn svg<W: Write>(agg: &Aggregate, options: &Options, out: W) -> io::Result<()> {
    let labels: Vec<String> = agg.frames.iter().map(|f| clean(f.label())).collect();
    let pids: std::collections::BTreeSet<i64> = agg.threads.iter().map(|t| t.pid).collect();
    let thread_roots: Vec<String> = agg
        .threads
        .iter()
        .map(|t| {
            let mut root = String::new();
            if pids.len() > 1 || options.merge_threads {
                root.push_str(&format!("process {}", t.pid));
            }
            if !options.merge_threads {
                if !root.is_empty() {
                    root.push(';');
                }
                root.push_str(&clean(match t.iid {
                    Some(iid) if iid != 0 => {
                        format!("thread {} (interpreter {iid})", t.shown_name())
                    }
                    _ => format!("thread {}", t.shown_name()),
                }));
            }
            root
        })
        .collect();
    let mut lines = Vec::with_capacity(agg.stacks.len());
    for s in &agg.stacks {
        if s.value <= 0 {
            continue;
        }
        let mut line = thread_roots[s.thread as usize].clone();
        for &f in s.frames.iter() {
            if !line.is_empty() {
                line.push(';');
            }
            line.push_str(&labels[f as usize]);
        }
        if line.is_empty() {
            line.push_str("(no frames)");
        }
        line.push(' ');
        line.push_str(&s.value.to_string());
        lines.push(line);
    }
    let mut opt = inferno::flamegraph::Options::default();
    opt.title = options.title.clone().unwrap_or_else(|| default_title(agg));
    opt.subtitle = Some(subtitle(agg));
    opt.count_name = match agg.metric() {
        Metric::Memory => "bytes".to_owned(),
        _ => "µs".to_owned(),
    };
    opt.name_type = "Function:".to_owned();
    opt.hash = true;
    opt.deterministic = true;
    opt.colors =
        inferno::flamegraph::Palette::Multi(inferno::flamegraph::color::MultiPalette::Python);
    if lines.is_empty() {
        // inferno refuses an empty graph: say so in the picture instead.
        lines.push("(no samples) 1".to_owned());
    }
    inferno::flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), out)
        .map_err(io::Error::other)
}

/// `echion: wall time of pid 12` (or of the input files).
pub fn default_title(agg: &Aggregate) -> String {
    let what = match agg.metric() {
        Metric::Wall => "wall time",
        Metric::Cpu => "CPU time",
        Metric::Memory => "memory",
    };
    let pids: std::collections::BTreeSet<i64> = agg.threads.iter().map(|t| t.pid).collect();
    match pids.len() {
        1 => format!("{what} of pid {}", pids.iter().next().unwrap_or(&0)),
        0 => what.to_owned(),
        n => format!("{what} of {n} processes"),
    }
}

fn subtitle(agg: &Aggregate) -> String {
    let total = agg.total();
    let total = match agg.metric() {
        Metric::Memory => format!("{total} bytes"),
        _ => format!("{:.3} s", total as f64 / 1e6),
    };
    let inputs: Vec<String> = agg
        .inputs
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    format!(
        "{} samples, {total}, from {}",
        agg.samples - agg.left_out,
        inputs.join(", ")
    )
}

/// speedscope's file format: the frames shared, one `sampled` profile per
/// thread (named `pid N · thread`), each distinct stack once with its
/// summed weight, in the order first seen. Memory profiles keep the stacks
/// with live bytes.
pub fn speedscope<W: Write>(agg: &Aggregate, options: &Options, mut out: W) -> io::Result<()> {
    let frames: Vec<Value> = agg
        .frames
        .iter()
        .map(|f| {
            let mut v = json!({ "name": f.scope.as_ref() });
            if !f.filename.is_empty() {
                v["file"] = json!(f.filename.as_ref());
            }
            if f.line > 0 {
                v["line"] = json!(f.line);
            }
            v
        })
        .collect();
    let unit = match agg.metric() {
        Metric::Memory => "bytes",
        _ => "microseconds",
    };
    let mut per_thread: Vec<(Vec<&[u32]>, Vec<i64>)> =
        vec![(Vec::new(), Vec::new()); agg.threads.len()];
    for s in &agg.stacks {
        if s.value <= 0 {
            continue;
        }
        let t = &mut per_thread[s.thread as usize];
        t.0.push(&s.frames);
        t.1.push(s.value);
    }
    let mut profiles = Vec::new();
    for (t, (stacks, weights)) in agg.threads.iter().zip(per_thread) {
        if stacks.is_empty() {
            continue;
        }
        let end: i64 = weights.iter().sum();
        profiles.push(json!({
            "type": "sampled",
            "name": t.title(),
            "unit": unit,
            "startValue": 0,
            "endValue": end,
            "samples": stacks,
            "weights": weights,
        }));
    }
    let doc = json!({
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": { "frames": frames },
        "profiles": profiles,
        "name": options.title.clone().unwrap_or_else(|| default_title(agg)),
        "activeProfileIndex": 0,
        "exporter": concat!("echion ", env!("CARGO_PKG_VERSION")),
    });
    serde_json::to_writer(&mut out, &doc)?;
    out.write_all(b"\n")
}
