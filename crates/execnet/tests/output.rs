//! Remote output capture (`Gateway::capture_output`) with real workers: popen, via and
//! socket, with the order of lines and items, subprocesses' fds, and the end of a capture.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use execnet::server::{ServeConfig, Server};
use execnet::{Error, Gateway, Group, Output, OutputStream, Value};

const WAIT: Duration = Duration::from_secs(20);

/// Everything the capture delivers until it ends, joined per stream.
fn collect(output: &execnet::OutputCapture) -> (String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    loop {
        match output.receive_timeout(WAIT) {
            Ok(Output { stream: OutputStream::Stdout, text }) => out.push_str(&text),
            Ok(Output { stream: OutputStream::Stderr, text }) => err.push_str(&text),
            Err(Error::EndOfChannel { .. }) => return (out, err),
            Err(e) => panic!("capture failed: {e}"),
        }
    }
}

#[test]
fn popen_output_of_code_and_subprocesses_comes_back_and_stop_restores() {
    let gw = execnet::makegateway(common::popen("").as_str()).unwrap();
    let output = gw.capture_output().unwrap();
    let ch = gw
        .remote_exec(
            r#"
            import os, subprocess, sys
            print("hello")
            print("to stderr", file=sys.stderr)
            sys.stdout.write("no newline yet")
            sys.stdout.flush()
            sys.stdout.write(" ... done\n")
            sys.stdout.buffer.write("bytes \u00e9\n".encode())
            subprocess.run([sys.executable, "-c", "import os; os.write(1, b'child out\\n'); os.write(2, b'child err\\n')"], check=True)
            subprocess.run([sys.executable, "-c", "print('child via sys.stdout')"], stdout=sys.stdout, check=True)
            os.write(1, b"raw fd 1\n")
            channel.send(sys.stdout.isatty())
            "#,
        )
        .unwrap();
    assert!(!ch.receive::<bool>().unwrap());
    ch.waitclose(Some(WAIT)).unwrap();
    output.stop().unwrap();
    let (out, err) = collect(&output);
    for line in ["hello\n", "no newline yet ... done\n", "bytes é\n", "child out\n", "child via sys.stdout\n", "raw fd 1\n"] {
        assert!(out.contains(line), "{line:?} missing from stdout {out:?}");
    }
    for line in ["to stderr\n", "child err\n"] {
        assert!(err.contains(line), "{line:?} missing from stderr {err:?}");
    }
    // After the stop the worker's own streams are back: prints are not captured, the
    // gateway still works, and a new capture can start.
    let ch = gw.remote_exec("import sys; print('after'); channel.send(type(sys.stdout).__name__)").unwrap();
    assert_eq!(ch.receive::<String>().unwrap(), "TextIOWrapper");
    let again = gw.capture_output().unwrap();
    gw.remote_exec("print('second capture')").unwrap().waitclose(Some(WAIT)).unwrap();
    again.stop_and_wait(Some(WAIT)).unwrap();
    assert_eq!(collect(&again).0, "second capture\n");
}

#[test]
fn lines_and_items_keep_their_order() {
    let gw = execnet::makegateway(common::popen("").as_str()).unwrap();
    let output = gw.capture_output().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let tx2 = tx.clone();
    output
        .set_callback(move |o| {
            if let Some(o) = o {
                let _ = tx.send(format!("out:{}", o.text));
            }
        })
        .unwrap();
    // The code waits for the host's go until the item callback is in place: items sent
    // before that would be queued, and handed to the callback only when it is set.
    let ch = gw
        .remote_exec("channel.receive()\nfor i in range(200):\n    print(i)\n    channel.send(i)\n")
        .unwrap();
    ch.set_callback(move |v: i64| {
        let _ = tx2.send(format!("item:{v}"));
    })
    .unwrap();
    ch.send(&"go").unwrap();
    ch.waitclose(Some(WAIT)).unwrap();
    output.stop_and_wait(Some(WAIT)).unwrap();
    let events: Vec<String> = rx.try_iter().collect();
    let expected: Vec<String> = (0..200).flat_map(|i| [format!("out:{i}\n"), format!("item:{i}")]).collect();
    assert_eq!(events, expected);
}

#[test]
fn many_threads_printing_lose_no_line() {
    let gw = execnet::makegateway(common::popen("").as_str()).unwrap();
    let output = gw.capture_output().unwrap();
    gw.remote_exec(
        r#"
        import threading
        def talk(n):
            for i in range(300):
                print("thread %d line %d" % (n, i))
        threads = [threading.Thread(target=talk, args=(n,)) for n in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        "#,
    )
    .unwrap()
    .waitclose(Some(WAIT))
    .unwrap();
    output.stop().unwrap();
    let (out, _) = collect(&output);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    let mut expected: Vec<String> =
        (0..4).flat_map(|n| (0..300).map(move |i| format!("thread {n} line {i}"))).collect();
    expected.sort();
    assert!(lines == expected, "lines were lost or mixed: {} of {} as expected", lines.iter().zip(&expected).filter(|(a, b)| a == b).count(), expected.len());
}

#[test]
fn dropping_the_capture_ends_it_in_the_worker() {
    let gw = execnet::makegateway(common::popen("").as_str()).unwrap();
    drop(gw.capture_output().unwrap());
    let ch = gw
        .remote_exec(
            "import sys, time\nfor _ in range(200):\n    if type(sys.stdout).__name__ != '_Stream': break\n    time.sleep(0.05)\nchannel.send(type(sys.stdout).__name__)",
        )
        .unwrap();
    assert_eq!(ch.receive::<String>().unwrap(), "TextIOWrapper");
}

#[test]
fn via_gateways_capture_their_fds_too() {
    let group = Group::new();
    group.makegateway(common::popen("id=hub").as_str()).unwrap();
    let gw = group.makegateway(common::popen("via=hub").as_str()).unwrap();
    let output = gw.capture_output().unwrap();
    gw.remote_exec("import os; print('via print'); os.write(1, b'via fd\\n')")
        .unwrap()
        .waitclose(Some(WAIT))
        .unwrap();
    output.stop().unwrap();
    assert_eq!(collect(&output).0, "via print\nvia fd\n");
}

#[test]
fn socket_workers_keep_the_servers_fds() {
    let config = ServeConfig {
        listen: vec!["127.0.0.1:0".into()],
        python: common::python(),
        ..ServeConfig::default()
    };
    let server = Server::bind(config).unwrap();
    let addr = server.addresses()[0].clone();
    let handle = server.handle();
    let thread = thread::spawn(move || server.run());
    {
        let gw = Gateway::socket(&addr).unwrap();
        let output = gw.capture_output().unwrap();
        let ch = gw
            .remote_exec("import os, sys; print('socket print'); channel.send(os.path.samestat(os.fstat(1), os.stat(os.devnull)))")
            .unwrap();
        let fd1_is_null: Value = ch.receive().unwrap();
        ch.waitclose(Some(WAIT)).unwrap();
        output.stop().unwrap();
        assert_eq!(collect(&output).0, "socket print\n");
        // The server's worker leaves fd 1 as it was (not our /dev/null): it was not piped.
        assert_eq!(fd1_is_null, Value::Bool(false));
    }
    handle.stop();
    thread.join().unwrap().unwrap();
}

#[test]
fn capture_works_with_execnets_own_worker() {
    let Some(python) = common::required_part("EXECNET_PYTHON", "a Python with the execnet package") else {
        return;
    };
    let spec = execnet::XSpec::new(&format!("popen//python={python}")).unwrap();
    let worker = execnet::WorkerSource::execnet_from(&python).unwrap();
    let gw = Gateway::start_with_worker(&spec, "gw0", None, &worker).unwrap();
    let output = gw.capture_output().unwrap();
    gw.remote_exec("print('from execnet')").unwrap().waitclose(Some(WAIT)).unwrap();
    output.stop().unwrap();
    assert!(collect(&output).0.contains("from execnet\n"));
}
