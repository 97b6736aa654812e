//! The text a run prints at its end: samples taken, errors, and the
//! functions with the most own and total time (or memory).

use std::fmt::Write as _;

use hashbrown::{HashMap, HashSet};

use crate::aggregate::{Aggregate, Metric};

/// A function's share of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `scope (file:line of its first sample)`.
    pub label: String,
    /// Metric of the stacks it is the leaf of.
    pub own: i64,
    /// Metric of the stacks it is in (counted once per stack).
    pub total: i64,
}

/// The functions of `agg` (scope and file), with their own and total
/// metric, most own first.
pub fn functions(agg: &Aggregate) -> Vec<Row> {
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut of_frame = Vec::with_capacity(agg.frames.len());
    for f in &agg.frames {
        let key = (f.scope.as_ref(), f.filename.as_ref());
        let i = *index.entry(key).or_insert_with(|| {
            rows.push(Row {
                label: if f.filename.is_empty() {
                    f.scope.to_string()
                } else {
                    format!("{} ({})", f.scope, short(&f.filename))
                },
                own: 0,
                total: 0,
            });
            rows.len() - 1
        });
        of_frame.push(i);
    }
    let mut seen = HashSet::new();
    for s in &agg.stacks {
        seen.clear();
        for &f in s.frames.iter() {
            let r = of_frame[f as usize];
            if seen.insert(r) {
                rows[r].total += s.value;
            }
        }
        if let Some(&leaf) = s.frames.last() {
            rows[of_frame[leaf as usize]].own += s.value;
        }
    }
    rows.sort_by(|a, b| b.own.cmp(&a.own).then(b.total.cmp(&a.total)));
    rows
}

/// The last two parts of a path: enough to tell files apart on one line.
fn short(path: &str) -> &str {
    let mut cut = path.len();
    for _ in 0..2 {
        match path[..cut].rfind('/') {
            Some(i) => cut = i,
            None => return path,
        }
    }
    &path[cut + 1..]
}

fn amount(metric: Metric, v: i64) -> String {
    match metric {
        Metric::Memory => {
            let b = v as f64;
            if b.abs() >= 1048576.0 {
                format!("{:.1} MiB", b / 1048576.0)
            } else if b.abs() >= 1024.0 {
                format!("{:.1} KiB", b / 1024.0)
            } else {
                format!("{v} B")
            }
        }
        _ => format!("{:.3} s", v as f64 / 1e6),
    }
}

/// What a run took, for the summary's first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Taken {
    /// Ticks taken.
    pub ticks: u64,
    /// Ticks the interval asked for over the run.
    pub asked: u64,
    /// Samples skipped (threads that could not be read).
    pub errors: u64,
}

/// The summary: a line of counts, then the top `n` functions by own and by
/// total metric, in at most `n * 2 + 5` lines of at most `width` columns.
pub fn render(agg: &Aggregate, taken: Option<Taken>, n: usize, width: usize) -> String {
    let metric = agg.metric();
    let mut out = String::new();
    let total = agg.total();
    match taken {
        Some(t) => {
            let share = if t.asked > 0 {
                format!(
                    " ({:.0} % of the {} asked for)",
                    100.0 * t.ticks as f64 / t.asked as f64,
                    t.asked
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "echion: {} ticks{share}, {} samples, {} errors; {} {}",
                t.ticks,
                agg.samples - agg.left_out,
                t.errors,
                amount(metric, total),
                metric.name()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "echion: {} samples; {} {}",
                agg.samples - agg.left_out,
                amount(metric, total),
                metric.name()
            );
        }
    }
    let rows = functions(agg);
    if rows.is_empty() || total == 0 {
        return out;
    }
    let pct = |v: i64| 100.0 * v as f64 / total as f64;
    let line = |out: &mut String, r: &Row, v: i64| {
        let mut l = format!(
            "  {:>5.1} %  {:>11}  {}",
            pct(v),
            amount(metric, v),
            r.label
        );
        if l.chars().count() > width {
            l = l.chars().take(width.saturating_sub(1)).collect::<String>() + "…";
        }
        let _ = writeln!(out, "{l}");
    };
    let _ = writeln!(out, " top by own {}:", metric.name());
    for r in rows.iter().filter(|r| r.own > 0).take(n) {
        line(&mut out, r, r.own);
    }
    let mut by_total: Vec<&Row> = rows.iter().collect();
    by_total.sort_by_key(|r| std::cmp::Reverse(r.total));
    let _ = writeln!(out, " top by total {}:", metric.name());
    for r in by_total.into_iter().filter(|r| r.total > 0).take(n) {
        line(&mut out, r, r.total);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_shortened_to_their_last_two_parts() {
        assert_eq!(short("/a/b/c.py"), "b/c.py");
        assert_eq!(short("b/c.py"), "b/c.py");
        assert_eq!(short("c.py"), "c.py");
    }
}
