//! `execnet run` as people who run code on many hosts use it: remote output, host lists,
//! fan-out, retries, stdin, a closed stdout, Ctrl-C and bad input, against real popen
//! workers and a real `execnet serve`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn execnet_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_execnet"));
    cmd.args(args);
    cmd
}

/// Runs the tool with stdin from `input` (empty when None), giving it at most 60 s.
fn run_with(args: &[&str], input: Option<&[u8]>) -> Output {
    let mut child = execnet_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting execnet");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.unwrap_or_default().to_vec();
    let feeder = thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = wait_output(child, Duration::from_secs(60));
    feeder.join().unwrap();
    out
}

fn run(args: &[&str]) -> Output {
    run_with(args, None)
}

/// Collects a child's output, killing it (and failing) if it outlives `limit`.
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = wait_status(&mut child, limit);
    Output { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap() }
}

fn wait_status(child: &mut Child, limit: Duration) -> ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("execnet did not end within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sorted_lines(b: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = text(b).lines().map(String::from).collect();
    lines.sort();
    lines
}

#[test]
fn remote_output_reaches_the_user_tagged_per_host() {
    // One gateway: as it comes, untagged.
    let out = run(&["run", "-c", "import sys, os\nprint('hi')\nprint('oops', file=sys.stderr)\nos.system('echo from a shell')\nchannel.send('done')"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // print() output keeps its place before the item; a subprocess's output is read from
    // the fd pipe by another thread, and may come after the item (it failed under load).
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("hi\n"), "{stdout}");
    assert_eq!(sorted_lines(out.stdout.as_slice()), ["'done'", "from a shell", "hi"], "{stdout}");
    assert_eq!(text(&out.stderr), "oops\n");
    // Three: every line tagged, stdout and stderr kept apart, lines kept whole.
    let out = run(&[
        "run",
        "-x",
        "3*popen",
        "-c",
        "import sys\nsys.stdout.write('part ')\nsys.stdout.flush()\nprint('whole')\nprint('warn', file=sys.stderr)\nchannel.send(1)",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut expected = Vec::new();
    for id in ["gw0", "gw1", "gw2"] {
        expected.push(format!("[{id}] 1"));
        expected.push(format!("[{id}] part whole"));
    }
    expected.sort();
    assert_eq!(sorted_lines(&out.stdout), expected);
    let err = text(&out.stderr);
    for id in ["gw0", "gw1", "gw2"] {
        assert!(err.contains(&format!("[{id}] warn\n")), "{err}");
    }
    assert!(err.contains("3 gateways in") && err.contains("3 ok"), "{err}");
}

#[test]
fn output_and_items_keep_their_order() {
    let out = run(&["run", "-c", "for i in range(50):\n    print('line', i)\n    channel.send(i)"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected: String = (0..50).map(|i| format!("line {i}\n{i}\n")).collect();
    assert_eq!(text(&out.stdout), expected);
}

#[test]
fn json_lines_are_objects_for_every_kind() {
    let out = run(&[
        "run",
        "--json",
        "-x",
        "popen",
        "-x",
        "popen//id=b",
        "-c",
        "import sys\nprint('out')\nprint('err', file=sys.stderr)\nchannel.send({'a': (1, 2)})\nif channel.gateway.id == 'b': 1/0",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let objects: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    for id in ["gw0", "b"] {
        let of = |key: &str| objects.iter().filter(|o| o["gateway"] == id && o.get(key).is_some()).count();
        assert_eq!(of("item"), 1, "{id}: {objects:?}");
        assert_eq!(of("stdout"), 1, "{id}: {objects:?}");
        assert_eq!(of("stderr"), 1, "{id}: {objects:?}");
        assert_eq!(of("status"), 1, "{id}: {objects:?}");
    }
    assert!(objects.iter().any(|o| o["gateway"] == "gw0" && o["item"] == serde_json::json!({"a": [1, 2]})));
    assert!(objects.iter().any(|o| o["gateway"] == "gw0" && o["stdout"] == "out"));
    let error = objects.iter().find(|o| o.get("error").is_some()).expect("an error object");
    assert_eq!(error["gateway"], "b");
    assert!(error["error"].as_str().unwrap().contains("ZeroDivisionError"));
    assert!(objects.iter().any(|o| o["gateway"] == "b" && o["status"] == "remote error"));
    // One gateway: objects too.
    let out = run(&["run", "--json", "-c", "channel.send(None)"]);
    let first: serde_json::Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(first, serde_json::json!({"gateway": "gw0", "item": null}));
}

#[test]
fn bad_flags_and_specs_are_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["--timeout=-1"], "out of range"),
        (&["--timeout=nan"], "out of range"),
        (&["--timeout=inf"], "out of range"),
        (&["--timeout=1e30"], "out of range"),
        (&["--timeout=0"], "out of range"),
        (&["--timeout=soon"], "not a number"),
        (&["--fanout=0"], "fanout"),
        (&["--retries=-1"], "retries"),
        (&["--stdin=words"], "stdin"),
        (&["-x", "popen//chdir"], "chdir needs a value"),
        (&["-x", "popen//python="], "python needs a value"),
        (&["-x", "popen//nice=high"], "nice"),
        (&["-x", "0*popen"], "between 1 and"),
        (&["-x", "2*popen//id=a"], "cannot share one id"),
        (&["-x", "popen//id=a", "-x", "popen//id=a"], "unique"),
        (&["-x", "popen//via=later", "-x", "popen//id=later"], "listed before"),
        (&["--hosts", "/no/such/hosts/file"], "cannot read the hosts file"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-c", "channel.send(1)"]);
        let out = run(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(message), "{flags:?}: {err}");
        assert!(!err.contains("panicked"), "{flags:?}: {err}");
        assert!(out.stdout.is_empty(), "{flags:?}: nothing may run");
    }
}

#[test]
fn unknown_keys_are_warned_about_with_a_suggestion() {
    let out = run(&["run", "-x", "popen//pyhton=python3", "-c", "channel.send(1)"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1\n");
    let err = text(&out.stderr);
    assert!(err.contains("warning: unknown key \"pyhton\"") && err.contains("did you mean \"python\""), "{err}");
}

#[test]
fn without_stdin_the_code_sees_the_end_of_its_input() {
    let out = run_with(
        &["run", "-c", "try:\n    channel.receive()\nexcept EOFError:\n    channel.send('end of input')"],
        Some(b"x\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "'end of input'\n");
}

#[test]
fn stdin_goes_to_every_gateway_as_lines_or_bytes() {
    let out = run_with(
        &["run", "-x", "2*popen", "--stdin", "-c", "channel.send([int(line) * 2 for line in channel])"],
        Some(b"1\n2\n3\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sorted_lines(&out.stdout), ["[gw0] [2, 4, 6]", "[gw1] [2, 4, 6]"]);
    // A file-like reader over the lines; the last line without its newline.
    let out = run_with(&["run", "--stdin", "-c", "channel.send(channel.makefile('r').read())"], Some(b"a\nb"));
    assert_eq!(text(&out.stdout), "'a\\nb'\n", "{}", text(&out.stderr));
    // Bytes, binary and big.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let out = run_with(
        &["run", "--stdin=bytes", "-c", "import hashlib\nchannel.send(hashlib.sha256(channel.makefile('r').read()).hexdigest())"],
        Some(&data),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(&data)?;
            c.wait_with_output()
        })
        .unwrap();
    let digest = text(&expected.stdout).split_whitespace().next().unwrap().to_string();
    assert_eq!(text(&out.stdout), format!("'{digest}'\n"));
}

#[test]
fn a_closed_stdout_ends_the_run() {
    let mut child = execnet_cmd(&["run", "-c", "while True:\n    channel.send(1)"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "1\n");
    drop(reader); // like `| head -1`
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = wait_status(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("stdout was closed") && err.contains("1 interrupted"), "{err}");
}

#[test]
fn ctrl_c_interrupts_remote_code_and_prints_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    // `quick` is still running when Ctrl-C comes, but ends within the grace period: it
    // is reported ok, as its end can also be on its way when the key is pressed.
    let code = format!(
        "import os, time\nif channel.gateway.id == 'quick':\n    channel.send('quick')\n    time.sleep(0.3)\nelse:\n    try:\n        channel.send('looping')\n        while True:\n            time.sleep(0.02)\n    finally:\n        open(os.path.join({dir:?}, channel.gateway.id), 'w').close()",
        dir = dir.path().to_str().unwrap()
    );
    let mut child = execnet_cmd(&["run", "-x", "popen//id=quick", "-x", "2*popen", "-c", &code])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stdout ended early: {seen:?}");
        seen.push(line);
    }
    let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success();
    assert!(ok);
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = wait_status(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("3 gateways in") && err.contains("2 interrupted") && err.contains("1 ok"), "{err}");
    for id in ["gw0", "gw1"] {
        assert!(dir.path().join(id).exists(), "the finally block of {id} did not run: {err}");
    }
}

#[test]
fn fanout_limits_how_many_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Each run marks itself running, counts the others, and stays a moment.
    let code = format!(
        "import os, time\nd = {dir:?}\nmine = os.path.join(d, channel.gateway.id)\nopen(mine, 'w').close()\ntime.sleep(0.3)\nchannel.send(len(os.listdir(d)))\nos.remove(mine)",
        dir = dir.path().to_str().unwrap()
    );
    let out = run(&["run", "-x", "6*popen", "--fanout", "2", "-c", &code]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let counts: Vec<usize> =
        text(&out.stdout).lines().map(|l| l.rsplit(' ').next().unwrap().parse().unwrap()).collect();
    assert_eq!(counts.len(), 6);
    assert!(counts.iter().all(|&n| (1..=2).contains(&n)), "more than 2 at once: {counts:?}");
}

#[test]
fn a_hosts_file_lists_specs_with_comments() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hosts");
    std::fs::write(&file, "# two local workers\npopen//id=first\n\n2*popen   # and two more\n").unwrap();
    let out = run(&["run", "--hosts", file.to_str().unwrap(), "-c", "channel.send(channel.gateway.id)"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sorted_lines(&out.stdout), ["[first] 'first'", "[gw0] 'gw0'", "[gw1] 'gw1'"]);
}

#[test]
fn via_gateways_run_through_an_earlier_one() {
    let out = run(&["run", "-x", "popen//id=hub", "-x", "2*popen//via=hub", "-c", "import os\nchannel.send(os.getppid())"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 3, "{}", text(&out.stdout));
}

/// A running `execnet serve` on a loopback port.
struct Serve(Child, String);

impl Serve {
    fn start(listen: &str) -> Serve {
        let python = std::env::var("EXECNET_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = execnet_cmd(&["serve", "--listen", listen, "--python", &python])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on socket=").expect("the address").to_string();
        Serve(child, addr)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = wait_status(&mut self.0, Duration::from_secs(20));
    }
}

#[test]
fn forty_socket_hosts_against_a_default_server_all_run() {
    let server = Serve::start("127.0.0.1:0");
    let spec = format!("40*socket={}", server.1);
    let out = run(&["run", "-x", &spec, "-c", "import os\nchannel.send(os.getpid())"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("40 gateways in") && err.contains("40 ok"), "{err}");
    let pids: std::collections::HashSet<String> =
        text(&out.stdout).lines().map(|l| l.rsplit(' ').next().unwrap().to_string()).collect();
    assert_eq!(pids.len(), 40, "each host is its own worker process");
}

#[test]
fn retries_reach_a_host_that_comes_up_late() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let spec = format!("socket={addr}");
    let child = execnet_cmd(&["run", "--retries", "5", "-x", &spec, "-c", "channel.send('reached')"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(700));
    let _server = Serve::start(&addr);
    let out = wait_output(child, Duration::from_secs(60));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(text(&out.stdout), "'reached'\n");
    assert!(err.contains("retrying in"), "{err}");
    // Without retries the same failure is final: unreachable, status 2.
    let out = run(&["run", "-x", &format!("socket=127.0.0.1:{}", free_port()), "-c", "pass"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
