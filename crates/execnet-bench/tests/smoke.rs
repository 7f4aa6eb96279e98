//! `execnet-bench --quick` on a couple of scenarios: the table and the JSON appear. No
//! timing is asserted: speed is for the benchmark, not for tests.
//!
//! Needs an interpreter with the execnet package: $EXECNET_PYTHON (scripts/test.sh sets
//! it). Without it the test skips loudly, or fails under CI=true.

use std::process::Command;

fn execnet_python() -> Option<String> {
    match std::env::var("EXECNET_PYTHON") {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let ci = std::env::var("CI")
                .map(|v| v == "true" || v == "1")
                .unwrap_or(false);
            if ci {
                panic!("the execnet package is required under CI, but $EXECNET_PYTHON is not set (scripts/test.sh sets it)");
            }
            eprintln!("\n!!! SKIPPED: execnet-bench smoke test: $EXECNET_PYTHON unset; run scripts/test.sh for the full suite\n");
            None
        }
    }
}

#[test]
fn quick_run_prints_the_table_and_writes_json_and_chart() {
    let Some(python) = execnet_python() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_execnet-bench"))
        .args([
            "--quick",
            "--only",
            "startup,roundtrip,ssh-startup",
            "--python",
            &python,
            "--out",
        ])
        .arg(out.path())
        .output()
        .expect("running execnet-bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        run.status
    );

    // The table: a Markdown header, and one row per scenario with figures on both sides.
    assert!(stdout.contains("| scenario"), "{stdout}");
    assert!(stdout.contains("QUICK"), "{stdout}");
    for id in ["startup", "roundtrip"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {id} ")))
            .unwrap_or_else(|| panic!("no row {id} in\n{stdout}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        for cell in &cells[3..6] {
            assert!(
                cell.parse::<f64>().is_ok(),
                "row {id}: {cell:?} is not a number in {row}"
            );
        }
    }
    assert!(stdout.contains("bare `python -c pass`"), "{stdout}");
    let ssh = stdout
        .lines()
        .find(|l| l.starts_with("| ssh-startup "))
        .expect("ssh-startup row");
    assert!(
        ssh.contains("skipped:") || ssh.contains("yes") || ssh.contains("no:"),
        "{ssh}"
    );

    // The raw figures.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(json["meta"]["quick"], true);
    let scenarios = json["scenarios"].as_array().unwrap();
    let startup = scenarios.iter().find(|s| s["id"] == "startup").unwrap();
    assert!(!startup["rs"][0]["samples"].as_array().unwrap().is_empty());
    assert!(!startup["py"][0]["samples"].as_array().unwrap().is_empty());
    assert!(json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == "roundtrip" && r["ratio"].is_number()));

    // The chart: a PNG file.
    let png = std::fs::read(out.path().join("ratios.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
}
