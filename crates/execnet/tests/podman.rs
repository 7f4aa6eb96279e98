//! The `podman=CONTAINER` preset against a real podman: an image made here with
//! `podman import` from a tarball of this machine's Python (the interpreter, its shared
//! libraries and standard library; no registry is used), a container started from it
//! with no network, and gateways into it.
//!
//! Podman runs as root here, inside a machine that may itself be a container: the test's
//! own containers.conf (CONTAINERS_CONF) picks runc and cgroupfs and lowers the default
//! ulimits, which is what lets podman start containers in such a sandbox. Without podman
//! (or root) the test skips loudly outside CI; under CI=true that is a failure
//! (scripts/test.sh installs podman and runc).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use execnet::Error;

const IMAGE: &str = "localhost/execnet-test-python:latest";
const PYTHON: &str = "/usr/bin/python3.11";

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman").args(args).stdin(Stdio::null()).output().expect("podman runs")
}

fn ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(out.status.success(), "podman {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Packs the interpreter with what it loads into a tarball and imports it as an image.
fn import_image(dir: &Path) {
    let ldd = Command::new("ldd").arg(PYTHON).output().unwrap();
    let mut paths: Vec<String> = vec![PYTHON.into(), "/usr/bin/env".into(), "/usr/lib/python3.11".into()];
    for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
        if word.starts_with('/') {
            paths.push(word.to_string());
        }
    }
    let tarball = dir.join("python.tar");
    let status = Command::new("tar")
        .args(["-C", "/", "-chf"])
        .arg(&tarball)
        .args(["--exclude=usr/lib/python3.11/test", "--exclude=__pycache__"])
        .args(paths.iter().map(|p| p.trim_start_matches('/')))
        .status()
        .unwrap();
    assert!(status.success(), "tar of the Python tree failed");
    ok(&["import", tarball.to_str().unwrap(), IMAGE]);
}

/// Removes the container and the image at the end, whatever happened.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
        let _ = podman(&["rmi", "-f", IMAGE]);
    }
}

fn lost_reason(made: execnet::Result<execnet::Gateway>) -> String {
    let err = match made {
        Ok(gw) => gw.wait_ready(common::LONG).expect_err("the gateway should not start"),
        Err(e) => e,
    };
    match err {
        Error::GatewayLost(info) => info.to_string(),
        other => panic!("expected a lost gateway, got: {other}"),
    }
}

#[test]
fn podman_preset_runs_the_worker_inside_a_local_container() {
    if Command::new("podman").arg("--version").output().is_err() {
        return common::missing("podman (apt-get install podman runc)");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new(PYTHON).exists() {
        return common::missing(&format!("root and {PYTHON} (to build the test image)"));
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
         [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n",
    )
    .unwrap();
    // The only test in this binary: no other thread reads the environment meanwhile.
    std::env::set_var("CONTAINERS_CONF", &conf);

    let name = format!("execnet-test-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    import_image(dir.path());
    ok(&["run", "-d", "--name", &name, "--network", "none", IMAGE, PYTHON, "-c", "import signal; signal.pause()"]);

    let gw = execnet::makegateway(format!("podman={name}//python={PYTHON}//env:EXECNET_IN=podman//chdir=/tmp"))
        .unwrap();
    let (host, env, cwd, pid): (String, String, String, u32) = gw
        .remote_exec("import os\nchannel.send((os.uname().nodename, os.environ['EXECNET_IN'], os.getcwd(), os.getpid()))")
        .unwrap()
        .receive()
        .unwrap();
    let id = ok(&["inspect", "--format", "{{.Id}}", &name]);
    assert!(id.starts_with(&host), "the worker runs in the container (hostname {host}, container {id})");
    assert_eq!((env.as_str(), cwd.as_str()), ("podman", "/tmp"));
    assert!(pid < 100, "a pid of the container's own pid namespace, got {pid}");
    let items: Vec<i64> = {
        let ch = gw.remote_exec("for i in range(1000): channel.send(i)").unwrap();
        ch.iter::<i64>().collect::<execnet::Result<_>>().unwrap()
    };
    assert_eq!(items, (0..1000).collect::<Vec<_>>());
    gw.exit().unwrap();

    let text = lost_reason(execnet::makegateway("podman=execnet-no-such-container"));
    assert!(text.contains("no such container or pod"), "{text}");
    ok(&["stop", "-t", "0", &name]);
    let text = lost_reason(execnet::makegateway(format!("podman={name}//python={PYTHON}")));
    assert!(text.contains("the container is not running"), "{text}");
}
