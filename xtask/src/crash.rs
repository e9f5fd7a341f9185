//! `cargo xtask crash`: the long form of the crash test (`tests/crash.rs`), in release: clients
//! stream upserts and deletes, the server is SIGKILLed at a random moment and restarted, every
//! acknowledged operation is checked, round after round. Prints the test's summary (rounds,
//! operations acknowledged, operations lost) and the seed to replay a failure.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Result, cargo, fmt_duration, show};

/// Rounds when `--rounds` is not given: the long form (CI runs 30).
const DEFAULT_ROUNDS: u32 = 300;
/// Bound on one round (restart, checks, writes, kill) and on the release build: a run that
/// outlasts `BUILD + rounds × ROUND` is stuck and is killed.
const ROUND: Duration = Duration::from_secs(30);
const BUILD: Duration = Duration::from_secs(30 * 60);
/// The lines of `tests/crash.rs` worth repeating at the end.
const PREFIX: &str = "crash test: ";

struct Options {
    rounds: u32,
    seed: Option<u64>,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        rounds: DEFAULT_ROUNDS,
        seed: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("crash: {name} needs a value"))
        };
        match flag {
            "--rounds" => {
                let v = value("--rounds")?;
                opts.rounds = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("crash: --rounds must be a positive integer, not {v:?}")
                })?;
            }
            "--seed" => {
                let v = value("--seed")?;
                opts.seed = Some(
                    v.parse()
                        .map_err(|_| format!("crash: --seed must be an integer, not {v:?}"))?,
                );
            }
            other => {
                return Err(format!(
                    "crash: unknown option {other:?} (see `cargo xtask help`)"
                ));
            }
        }
    }
    Ok(opts)
}

/// The figures of the summary line `crash test: R rounds in Ts, A operations acknowledged, C
/// documents checked, 0 acknowledged operations lost, L unacknowledged ...`.
fn figure(line: &str, after_number: &str) -> Option<String> {
    let end = line.find(after_number)?;
    let start = line[..end].rfind([' ', ','])? + 1;
    Some(line[start..end].trim().to_string())
}

pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let opts = parse_args(args)?;
    let mut cmd = cargo([
        "test",
        "--release",
        "-p",
        "ironsift",
        "--test",
        "crash",
        "--",
        "--nocapture",
    ]);
    cmd.env("IRONSIFT_CRASH_ROUNDS", opts.rounds.to_string())
        .stderr(Stdio::piped())
        // Its own process group, so a run past the bound can be stopped with the servers it
        // started (`kill -- -PGID`).
        .process_group(0);
    match opts.seed {
        Some(s) => cmd.env("IRONSIFT_CRASH_SEED", s.to_string()),
        None => cmd.env_remove("IRONSIFT_CRASH_SEED"),
    };
    println!(
        "==> IRONSIFT_CRASH_ROUNDS={}{} {}",
        opts.rounds,
        opts.seed
            .map_or(String::new(), |s| format!(" IRONSIFT_CRASH_SEED={s}")),
        show(&cmd)
    );
    let started = Instant::now();
    let limit = BUILD + ROUND * opts.rounds;
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", show(&cmd)))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    // Echo the test's stderr as it comes, keeping the summary lines.
    let (tx, rx) = mpsc::channel();
    let echo = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            eprintln!("{line}");
            if line.starts_with(PREFIX) {
                let _ = tx.send(line);
            }
        }
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(200)),
            Ok(None) => {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                return Err(format!(
                    "the crash test did not finish within {}; killed",
                    fmt_duration(limit)
                ));
            }
            Err(e) => return Err(format!("cannot wait for the crash test: {e}")),
        }
    };
    let _ = echo.join();
    let lines: Vec<String> = rx.try_iter().collect();
    let seed = lines
        .iter()
        .find_map(|l| l.split("IRONSIFT_CRASH_SEED=").nth(1))
        .map(|s| s.trim().to_string());
    let summary = lines.iter().find(|l| l.contains("operations acknowledged"));
    println!();
    match (status.success(), summary) {
        (true, Some(line)) => {
            let get = |what: &str| figure(line, what).unwrap_or_else(|| "?".into());
            println!(
                "crash: {} rounds, {} operations acknowledged, {} lost ({} documents checked, {} \
                 unacknowledged in-flight operations found applied); seed {}; {}",
                get(" rounds in"),
                get(" operations acknowledged"),
                get(" acknowledged operations lost"),
                get(" documents checked"),
                get(" unacknowledged"),
                seed.as_deref().unwrap_or("?"),
                fmt_duration(started.elapsed())
            );
            Ok(ExitCode::SUCCESS)
        }
        (true, None) => Err("the crash test passed but printed no summary line".into()),
        (false, _) => Err(format!(
            "the crash test failed ({status}); replay it with `cargo xtask crash --rounds {} \
             --seed {}`",
            opts.rounds,
            seed.as_deref().unwrap_or("SEED")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_figures_are_read_from_the_test_line() {
        let line = "crash test: 300 rounds in 512.3s, 123456 operations acknowledged, 600 \
                    documents checked, 0 acknowledged operations lost, 17 unacknowledged \
                    in-flight operations found applied";
        assert_eq!(figure(line, " rounds in").as_deref(), Some("300"));
        assert_eq!(
            figure(line, " operations acknowledged").as_deref(),
            Some("123456")
        );
        assert_eq!(
            figure(line, " acknowledged operations lost").as_deref(),
            Some("0")
        );
        assert_eq!(figure(line, " unacknowledged").as_deref(), Some("17"));
    }

    #[test]
    fn options() {
        let o = parse_args(&["--rounds".into(), "5".into(), "--seed=7".into()]).unwrap();
        assert_eq!((o.rounds, o.seed), (5, Some(7)));
        assert_eq!(parse_args(&[]).unwrap().rounds, DEFAULT_ROUNDS);
        assert!(parse_args(&["--rounds".into(), "0".into()]).is_err());
        assert!(parse_args(&["--bogus".into()]).is_err());
    }
}
