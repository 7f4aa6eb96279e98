//! Command transports with real commands: `exec=` with env(1) and unshare(1), `sudo=` with
//! a real sudo and users this test makes (it needs root: CI runs as root and
//! scripts/test.sh installs sudo), and sudo through an ssh gateway (via=).
//!
//! Outside CI a missing part (not root, no sudo, no user namespaces) skips loudly.

mod common;

use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use common::sshd::sshd;
use execnet::{Error, Group};

/// The error of a gateway that never starts (makegateway returns at once; waiting for
/// the worker's ready byte reports the failure).
fn start_failure(made: execnet::Result<execnet::Gateway>) -> Error {
    match made {
        Ok(gw) => gw.wait_ready(common::LONG).expect_err("the gateway should not start"),
        Err(e) => e,
    }
}

fn lost_reason(err: Error) -> String {
    match err {
        Error::GatewayLost(info) => info.to_string(),
        other => panic!("expected a lost gateway, got: {other}"),
    }
}

/// The interpreter every user can run (the test's own may live under /root).
fn system_python() -> &'static str {
    "/usr/bin/python3"
}

#[test]
fn exec_runs_the_command_with_the_bootstrap_and_popen_keys_apply() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        "exec=env EXECNET_FROM_COMMAND=yes//python={}//env:EXECNET_FROM_SPEC=1 2//chdir={}",
        common::python(),
        dir.path().display()
    );
    let gw = execnet::makegateway(spec).unwrap();
    let (a, b, cwd): (String, String, String) = gw
        .remote_exec(
            "import os\nchannel.send((os.environ['EXECNET_FROM_COMMAND'], os.environ['EXECNET_FROM_SPEC'], os.getcwd()))",
        )
        .unwrap()
        .receive()
        .unwrap();
    assert_eq!((a.as_str(), b.as_str(), cwd.as_str()), ("yes", "1 2", dir.path().to_str().unwrap()));
    let pid = gw.local_pid().unwrap();
    gw.exit().unwrap();
    assert!(common::eventually(common::LONG, || !common::process_alive(pid)));
}

#[test]
fn exec_unshare_gives_a_worker_in_its_own_network_namespace() {
    let probe = Command::new("unshare").args(["--user", "--map-root-user", "--net", "true"]).status();
    if !matches!(probe, Ok(s) if s.success()) {
        return common::missing("unshare with user and network namespaces");
    }
    let gw = execnet::makegateway(format!("exec=unshare --user --map-root-user --net//python={}", common::python()))
        .unwrap();
    let devices: Vec<String> = gw
        .remote_exec(
            "lines = open('/proc/self/net/dev').read().splitlines()[2:]\n\
             channel.send([l.split(':')[0].strip() for l in lines])",
        )
        .unwrap()
        .receive()
        .unwrap();
    assert_eq!(devices, ["lo"], "a new network namespace holds only loopback");
    let uid: u32 = gw.remote_exec("import os; channel.send(os.getuid())").unwrap().receive().unwrap();
    assert_eq!(uid, 0, "--map-root-user maps us to root inside");
}

#[test]
fn a_command_that_is_not_there_is_a_spawn_error_naming_it() {
    let err = execnet::makegateway("exec=execnet-no-such-command -x").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Spawn { .. }), "{text}");
    assert!(text.contains("\"execnet-no-such-command\" was not found on PATH"), "{text}");
}

#[test]
fn an_interpreter_missing_at_the_other_end_is_named() {
    let err = start_failure(execnet::makegateway("exec=env//python=execnet-no-such-python"));
    let text = lost_reason(err);
    assert!(text.contains("could not find the interpreter \"execnet-no-such-python\""), "{text}");
}

// ---- sudo --------------------------------------------------------------------------------

/// Two users made for the test: A may run commands as B, but only with a password.
struct SudoUsers {
    a: String,
    b: String,
    sudoers: &'static str,
}

const USER_A: &str = "execnet-sudo-a";
const USER_B: &str = "execnet-sudo-b";
const SUDOERS: &str = "/etc/sudoers.d/execnet-test";

/// The sudo tests share the users and the sudoers file: one at a time.
fn sudo_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn sudo_users() -> Option<SudoUsers> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::missing("root (to make the sudo test users)");
        return None;
    }
    if Command::new("sudo").arg("-V").output().is_err() {
        common::missing("sudo (apt-get install sudo)");
        return None;
    }
    for user in [USER_A, USER_B] {
        let known = Command::new("id").arg("-u").arg(user).output().unwrap().status.success();
        if !known {
            let status = Command::new("useradd").args(["--system", "--no-create-home", user]).status().unwrap();
            assert!(status.success(), "useradd {user} failed");
        }
    }
    std::fs::write(SUDOERS, format!("{USER_A} ALL=({USER_B}) ALL\n")).unwrap();
    let status = Command::new("chmod").args(["0440", SUDOERS]).status().unwrap();
    assert!(status.success());
    Some(SudoUsers { a: USER_A.into(), b: USER_B.into(), sudoers: SUDOERS })
}

impl Drop for SudoUsers {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.sudoers);
        for user in [&self.a, &self.b] {
            let _ = Command::new("userdel").arg(user).status();
        }
    }
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").arg("-u").arg(user).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

#[test]
fn sudo_runs_the_worker_as_the_user_and_says_why_when_it_cannot() {
    let _one = sudo_lock();
    let Some(users) = sudo_users() else { return };
    let group = Group::new();
    let gw = group
        .makegateway(format!("sudo={}//python={}//id=as-a//chdir=/tmp//env:EXECNET_SUDO=1", users.a, system_python()))
        .unwrap();
    let (uid, cwd, env): (u32, String, String) = gw
        .remote_exec("import os\nchannel.send((os.getuid(), os.getcwd(), os.environ['EXECNET_SUDO']))")
        .unwrap()
        .receive()
        .unwrap();
    assert_eq!((uid, cwd.as_str(), env.as_str()), (uid_of(&users.a), "/tmp", "1"));

    // From A's worker, sudo to B needs a password: a clear error, at once.
    let err = start_failure(group.makegateway(format!("sudo={}//python={}//via=as-a", users.b, system_python())));
    let text = lost_reason(err);
    assert!(text.contains("sudo needs a password"), "{text}");
    assert!(text.contains("sudo -n -u execnet-sudo-b"), "{text}");

    let err = start_failure(group.makegateway("sudo=execnet-no-such-user"));
    let text = lost_reason(err);
    assert!(text.contains("sudo does not know that user"), "{text}");

    // The gateway made before is unaffected by the failures.
    let two: i64 = gw.remote_exec("channel.send(1 + 1)").unwrap().receive().unwrap();
    assert_eq!(two, 2);
    group.terminate(common::LONG);
}

#[test]
fn sudo_on_a_remote_host_through_ssh() {
    let _one = sudo_lock();
    let Some(users) = sudo_users() else { return };
    let Some(server) = sshd() else { return };
    let group = Group::new();
    group.makegateway(server.spec("id=remote")).unwrap();
    let gw = group.makegateway(format!("sudo={}//python={}//via=remote", users.a, system_python())).unwrap();
    let uid: u32 = gw.remote_exec("import os; channel.send(os.getuid())").unwrap().receive().unwrap();
    assert_eq!(uid, uid_of(&users.a));
    assert_eq!(gw.local_pid(), None, "the sudo process runs on the via gateway's host");
    group.terminate(common::LONG);
}
