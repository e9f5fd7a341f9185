//! Starting an `ironsift serve` child: the one place that reads its "listening" line.
//!
//! The server prints `ironsift: listening on http://ADDR/` on stdout once it accepts
//! connections (`--listen 127.0.0.1:0` picks a free port). [`spawn_listening`] starts the
//! command with stdout piped, waits (bounded) for that line, keeps draining stdout so the
//! server never blocks on a full pipe, and kills the child when anything goes wrong.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::{Result, show};

const LISTENING: &str = "ironsift: listening on http://";

/// Spawns `cmd` and returns it with the address it listens on, once it printed it (within
/// `limit`). `log`, when given, is named in errors (where the server's stderr went).
pub(crate) fn spawn_listening(
    cmd: &mut Command,
    limit: Duration,
    log: Option<&Path>,
) -> Result<(Child, SocketAddr)> {
    cmd.stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", show(cmd)))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let _ = tx.send(r.read_line(&mut line).map(|_| line));
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    let see_log = log.map_or(String::new(), |l| format!(" (log: {})", l.display()));
    let fail = |child: &mut Child, why: String| {
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("{why}{see_log}"))
    };
    let line = match rx.recv_timeout(limit) {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => return fail(&mut child, format!("cannot read the server's stdout: {e}")),
        Err(_) => {
            return fail(
                &mut child,
                format!(
                    "`{}` printed no address within {} s",
                    show(cmd),
                    limit.as_secs()
                ),
            );
        }
    };
    let addr = line
        .trim()
        .strip_prefix(LISTENING)
        .and_then(|a| a.trim_end_matches('/').parse().ok());
    match addr {
        Some(addr) => Ok((child, addr)),
        None => fail(
            &mut child,
            format!("unexpected first line from the server: {line:?}"),
        ),
    }
}
