//! `execnet run` on several ssh gateways, against the test sshd of the library's tests.

#[path = "../../execnet/tests/common/sshd.rs"]
mod sshd;

use std::process::{Command, Output};

fn execnet(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_execnet")).args(args).output().expect("running execnet")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn args(specs: &[String], code: &str) -> Vec<String> {
    let mut a = vec!["run".to_string()];
    for spec in specs {
        a.push("-x".into());
        a.push(spec.clone());
    }
    a.push("-c".into());
    a.push(code.into());
    a
}

#[test]
fn run_on_several_hosts_with_a_summary() {
    let Some(s) = sshd::sshd() else { return };
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let specs = [
        s.spec(""),
        s.direct_spec(""),
        format!("ssh={}", s.host_args(unused, &s.key)),
        s.spec("ssh_share"),
    ];
    let out = execnet(&args(&specs, "import os\nchannel.send(channel.gateway.id)"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "an unreachable host gives status 2\n{stderr}");
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort();
    assert_eq!(lines, ["[gw0] 'gw0'", "[gw1] 'gw1'", "[gw3] 'gw3'"], "stdout holds the items only");
    assert!(stderr.contains("execnet: 4 gateways in "), "{stderr}");
    assert!(stderr.contains("3 ok, 1 unreachable"), "{stderr}");
    let summary_line = |id: &str| {
        stderr.lines().find(|l| l.starts_with(&format!("  {id} "))).unwrap_or_else(|| panic!("{id}: {stderr}"))
    };
    assert!(summary_line("gw0").contains(" ok "), "{stderr}");
    let gw2 = summary_line("gw2");
    assert!(gw2.contains(" unreachable ") && gw2.contains("host unreachable"), "{gw2}");
    assert!(stderr.contains("Connection refused"), "ssh's message on stderr: {stderr}");
}

#[test]
fn remote_error_on_one_host_gives_status_1() {
    let Some(s) = sshd::sshd() else { return };
    let specs = [s.spec("id=fine"), s.spec("id=fails")];
    let code = "if channel.gateway.id == 'fails':\n    raise KeyError('nope')\nchannel.send('done')";
    let out = execnet(&args(&specs, code));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stdout, "[fine] 'done'\n");
    assert!(stderr.contains("KeyError: 'nope'") && stderr.contains("Traceback"), "{stderr}");
    assert!(stderr.contains("1 ok, 1 remote error"), "{stderr}");
}

#[test]
fn one_gateway_off_a_terminal_prints_no_summary() {
    let Some(s) = sshd::sshd() else { return };
    let out = execnet(&args(&[s.spec("")], "channel.send(42)"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "42\n");
    assert_eq!(text(&out.stderr), "", "no progress bar and no summary when stderr is not a terminal");
}
