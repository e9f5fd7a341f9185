//! `cargo xtask bless`: rewrites the golden suite's expected results on purpose.
//!
//! The golden test (`tests/golden.rs`) writes `tests/golden/expected.json` instead of comparing
//! when `IRONSIFT_BLESS` is set; this runs it that way and shows what changed, so a ranking or
//! parsing change lands together with its reviewed effect on the results.

use std::process::ExitCode;

use crate::{Result, cargo, run_status};

const EXPECTED: &str = "tests/golden/expected.json";

pub(crate) fn bless() -> Result<ExitCode> {
    let mut test = cargo(["test", "--package", "ironsift", "--test", "golden"]);
    test.env("IRONSIFT_BLESS", "1");
    println!("==> {}", crate::show(&test));
    run_status(&mut test)?;
    println!("<== rewrote {EXPECTED}; changes against the last commit:");
    // Only informative: outside a git checkout there is just nothing to show.
    let _ = std::process::Command::new("git")
        .args(["--no-pager", "diff", "--stat", "--", EXPECTED])
        .current_dir(crate::workspace_root())
        .status();
    Ok(ExitCode::SUCCESS)
}
