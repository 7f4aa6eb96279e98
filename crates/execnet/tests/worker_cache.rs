//! The compiled-worker cache of popen gateways (crates/execnet/src/worker/cache.rs): the
//! first gateway for an interpreter writes the entry, later ones run it, and a damaged,
//! foreign or missing entry only costs the compile it would have saved.
//!
//! One test function in its own binary: it sets EXECNET_RS_CACHE_DIR for the process.

mod common;

use std::path::{Path, PathBuf};

use common::popen;

/// The cache entries in `dir`.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// Starts a popen gateway and returns what remote code finds in the worker's globals
/// under `marker` (None when absent), checking that the gateway works.
fn start_and_probe(marker: &str) -> Option<i64> {
    execnet::worker::cache::forget();
    let gw = execnet::makegateway(popen("")).expect("gateway starts");
    let ch = gw
        .remote_exec(format!(
            "import __main__\nchannel.send(getattr(__main__, {marker:?}, None))\n\
             channel.send(channel.receive() * 2)"
        ))
        .unwrap();
    let found: Option<i64> = ch.receive().unwrap();
    ch.send(&21).unwrap();
    assert_eq!(ch.receive::<i64>().unwrap(), 42);
    gw.exit().unwrap();
    found
}

/// The interpreter's bytecode magic number and the marshal data of the worker source
/// with `extra` appended, base64 encoded: a cache entry as a worker would write it.
fn entry_text(extra: &str, magic_override: Option<&str>) -> String {
    let script = r#"
import base64, importlib.util, marshal, sys
source = sys.stdin.read()
magic = importlib.util.MAGIC_NUMBER if sys.argv[1] == "-" else bytes.fromhex(sys.argv[1])
code = compile(source, "<execnet-rs worker>", "exec")
sys.stdout.write(base64.b64encode(magic + marshal.dumps(code)).decode())
"#;
    let mut child = std::process::Command::new(common::python())
        .args(["-c", script, magic_override.unwrap_or("-")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(execnet::worker::WORKER_SOURCE.as_bytes()).unwrap();
    stdin.write_all(extra.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_first_gateway_fills_the_cache_and_later_ones_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::env::set_var(execnet::worker::cache::CACHE_DIR_ENV, &cache);

    // No entry yet: the worker compiles its source and writes one, in a private directory.
    assert_eq!(start_and_probe("CACHE_MARKER"), None);
    let files = entries(&cache);
    assert_eq!(files.len(), 1, "one entry for one interpreter: {files:?}");
    let entry = files[0].clone();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o700);
    let written = std::fs::read_to_string(&entry).unwrap();
    assert!(written.len() > 10_000 && written.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));

    // An entry is run as it is: one that defines a marker shows it in the worker.
    std::fs::write(&entry, entry_text("\nCACHE_MARKER = 7\n", None)).unwrap();
    assert_eq!(start_and_probe("CACHE_MARKER"), Some(7));
    assert_eq!(start_and_probe("CACHE_MARKER"), Some(7), "the entry is kept");

    // An entry for another interpreter version (another magic number) is not run: the
    // worker compiles its source and replaces the entry with its own.
    std::fs::write(&entry, entry_text("\nCACHE_MARKER = 8\n", Some("00000d0a"))).unwrap();
    assert_eq!(start_and_probe("CACHE_MARKER"), None);
    let rewritten = std::fs::read_to_string(&entry).unwrap();
    assert!(!rewritten.is_empty() && !rewritten.contains("CACHE_MARKER"));

    // Damaged entries: valid base64 of garbage, text that is not base64, an empty file.
    for damaged in ["AAAAAAAAAAAAAAAAAAAA", "not base64 at all!\n", ""] {
        std::fs::write(&entry, damaged).unwrap();
        assert_eq!(start_and_probe("CACHE_MARKER"), None, "entry {damaged:?}");
    }

    // A directory that cannot be made: gateways start without a cache.
    let blocked = dir.path().join("a-file");
    std::fs::write(&blocked, "").unwrap();
    std::env::set_var(execnet::worker::cache::CACHE_DIR_ENV, blocked.join("cache"));
    assert_eq!(start_and_probe("CACHE_MARKER"), None);

    // Caching off: gateways start from source, and no cache directory is in force.
    for off in ["off", ""] {
        std::env::set_var(execnet::worker::cache::CACHE_DIR_ENV, off);
        assert!(execnet::worker::cache::cache_dir().is_none());
        assert_eq!(execnet::worker::cache::lookup(&common::python()), Default::default());
        assert_eq!(start_and_probe("CACHE_MARKER"), None);
    }

    // -B (dont_write_bytecode) reads an entry but never writes one.
    let fresh = dir.path().join("fresh");
    std::env::set_var(execnet::worker::cache::CACHE_DIR_ENV, &fresh);
    execnet::worker::cache::forget();
    let gw = execnet::makegateway(popen("dont_write_bytecode")).unwrap();
    gw.remote_exec("channel.send(1)").unwrap().receive::<i32>().unwrap();
    gw.exit().unwrap();
    assert!(entries(&fresh).is_empty(), "{:?}", entries(&fresh));
}
