//! The command-line tool, run as a user would.

use std::process::{Command, Output};

fn execnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_execnet")).args(args).output().expect("running execnet")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn run_prints_python_literals() {
    let out = execnet(&["run", "-c", "channel.send((1, 'a', None, b'x', {'k': [1.5]}))\nchannel.send(2**70)"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "(1, 'a', None, b'x', {'k': [1.5]})\n1180591620717411303424\n");
}

#[test]
fn run_json_lines() {
    let out = execnet(&["run", "--json", "-c", "channel.send({'a': (1, 2), 'b': None})"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = text(&out.stdout).lines().next().unwrap_or_default().to_string();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v, serde_json::json!({"gateway": "gw0", "item": {"a": [1, 2], "b": null}}));
}

#[test]
fn run_on_several_gateways_prefixes_ids() {
    let out = execnet(&["run", "-x", "popen", "-x", "popen//id=second", "-c", "channel.send(channel.gateway.id)"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, vec!["[gw0] 'gw0'", "[second] 'second'"]);
}

#[test]
fn remote_error_goes_to_stderr_with_status_1() {
    let out = execnet(&["run", "-c", "channel.send(1)\n1/0"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "1\n");
    let err = text(&out.stderr);
    assert!(err.contains("ZeroDivisionError") && err.contains("Traceback"), "{err}");
}

#[test]
fn run_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.py");
    std::fs::write(&path, "import sys\nchannel.send(sys.version_info[0])\n").unwrap();
    let out = execnet(&["run", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "3\n");
}

#[test]
fn bad_spec_and_missing_python_exit_2_with_advice() {
    let out = execnet(&["run", "-x", "popen//python=/no/such/python", "-c", "pass"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/no/such/python"), "{}", text(&out.stderr));
    let out = execnet(&["run", "-x", "popen//x=1//x=2", "-c", "pass"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("duplicate key"), "{}", text(&out.stderr));
}

#[test]
fn timeout_gives_up() {
    let out = execnet(&["run", "--timeout", "0.5", "-c", "import time; time.sleep(30)"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("timed out"), "{}", text(&out.stderr));
}

#[test]
fn info_shows_a_table() {
    let out = execnet(&["info", "-x", "popen", "-x", "popen//chdir=/tmp"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 3, "{s}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("VERSION"), "{s}");
    assert!(lines[2].contains("gw1") && lines[2].trim_end().ends_with("/tmp"), "{s}");
}

#[test]
fn help_teaches() {
    let out = execnet(&["--help"]);
    let s = text(&out.stdout);
    assert!(s.contains("SPEC syntax") && s.contains("execnet run"), "{s}");
    let out = execnet(&["run"]);
    assert_eq!(out.status.code(), Some(2));
}
