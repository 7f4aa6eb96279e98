//! Shared helpers for the integration tests: which interpreters to use, and the rule
//! that a test needing a real part skips loudly on a developer machine but fails in CI.
#![allow(dead_code)]

use std::time::Duration;

/// The interpreter for popen gateways in tests (EXECNET_TEST_PYTHON, default python3).
pub fn python() -> String {
    std::env::var("EXECNET_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A popen spec for the test interpreter with extra `//`-items appended.
pub fn popen(extra: &str) -> String {
    let mut spec = format!("popen//python={}", python());
    if !extra.is_empty() {
        spec.push_str("//");
        spec.push_str(extra);
    }
    spec
}

fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// Returns the value of env var `name`, or None after printing a loud skip notice.
/// Under CI=true a missing part is a failure, never a skip.
pub fn required_part(name: &str, what: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if in_ci() {
                panic!("{what} is required under CI, but ${name} is not set (scripts/test.sh sets it)");
            }
            eprintln!("\n!!! SKIPPED: {what} not available (${name} unset); run scripts/test.sh for the full suite\n");
            None
        }
    }
}

/// For a part that is not there (root, sudo, podman, namespaces): a loud skip notice,
/// or under CI=true a failure.
pub fn missing(what: &str) {
    if in_ci() {
        panic!("{what} is required under CI (scripts/test.sh provides it)");
    }
    eprintln!("\n!!! SKIPPED: {what} is not available here; CI=true makes this a failure\n");
}

/// Several seconds: generous limits for waits that should end at once.
pub const LONG: Duration = Duration::from_secs(20);

/// True when a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

/// Waits up to `limit` for `cond`.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}
pub mod sshd;
