//! `echion -w PID`: what every thread of a running process is doing, read
//! from outside (nothing is injected, the process is never stopped).

use std::io::{IsTerminal, Write};

use echion_sampler::Session;

use crate::error::CliError;

/// Prints the stacks of every thread of process `pid` on stdout, as text
/// (coloured on a terminal unless `NO_COLOR` is set) or as JSON. Returns the
/// exit status: 0 once printed.
pub(crate) fn show(pid: u32, json: bool) -> Result<i32, CliError> {
    let fail = |reason: String| CliError::Where { pid, reason };
    let session = Session::attach(pid).map_err(|e| fail(e.to_string()))?;
    let dump = session.dump().map_err(|e| fail(e.to_string()))?;
    let stdout = std::io::stdout();
    let colour = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut out = stdout.lock();
    let written = if json {
        dump.render_json(&mut out, pid, &session.version().to_string())
    } else {
        dump.render_text(&mut out, colour)
    };
    // A closed stdout (`echion -w PID | head`) is not an error of ours.
    let _ = written.and_then(|()| out.flush());
    if let Some((_, n)) = dump.metadata().iter().find(|(k, _)| k == "unreadable") {
        eprintln!("echion: {n} thread stack(s) of pid {pid} changed while read and are not shown");
    }
    Ok(0)
}
