//! The conformance suite: one scenario list (tests/conformance/scenarios.py) run in every
//! cell of the matrix host × worker × transport, against the real execnet package.
//!
//! Cells with our host run the scenarios here, in Rust; cells with execnet's host run
//! them in tests/conformance/run_python_host.py. A table of the results is printed at
//! the end (run with `--nocapture` to see it, or read it in the test command's output).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use execnet::server::{ServeConfig, Server};
use execnet::{Channel, Error, Gateway, Value, WorkerSource, XSpec};

const TIMEOUT: Duration = Duration::from_secs(20);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn conformance_dir() -> PathBuf {
    repo_root().join("tests/conformance")
}

struct Scenario {
    name: String,
    steps: Vec<Vec<Value>>,
    skip: Vec<(String, String)>,
}

/// The scenario list, as exported by export.py in the wire format.
fn load_scenarios(python: &str) -> Vec<Scenario> {
    let out = Command::new(python)
        .arg(conformance_dir().join("export.py"))
        .output()
        .expect("running export.py");
    assert!(out.status.success(), "export.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let list: Value = execnet::wire::de::from_payload(&out.stdout).expect("scenario list loads");
    let items = list.as_list().expect("a list of scenarios");
    items
        .iter()
        .map(|s| {
            let d = s.as_dict().expect("a scenario is a dict");
            let name = d.get_str("name").and_then(Value::as_str).expect("name").to_string();
            let steps = d
                .get_str("steps")
                .and_then(Value::as_list)
                .expect("steps")
                .iter()
                .map(|step| step.as_tuple().expect("a step is a tuple").to_vec())
                .collect();
            let skip = d
                .get_str("skip")
                .and_then(Value::as_dict)
                .map(|sk| {
                    sk.iter()
                        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.as_str().unwrap().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            Scenario { name, steps, skip }
        })
        .collect()
}

/// A text form of a value that does not depend on set order.
fn canon(v: &Value) -> String {
    let join = |items: &[Value]| items.iter().map(canon).collect::<Vec<_>>().join(", ");
    match v {
        Value::Set(items) | Value::FrozenSet(items) => {
            let mut parts: Vec<String> = items.iter().map(canon).collect();
            parts.sort();
            let kind = if matches!(v, Value::Set(_)) { "set" } else { "frozenset" };
            format!("{kind}({{{}}})", parts.join(", "))
        }
        Value::List(items) => format!("[{}]", join(items)),
        Value::Tuple(items) => format!("({})", join(items)),
        Value::Dict(d) => {
            let parts: Vec<String> = d.iter().map(|(k, v)| format!("{}: {}", canon(k), canon(v))).collect();
            format!("{{{}}}", parts.join(", "))
        }
        Value::Channel(_) => "<channel>".into(),
        other => other.to_string(),
    }
}

fn channel_ref(v: &Value) -> Option<&str> {
    match v.as_tuple() {
        Some([a, b]) if a.as_str() == Some("$channel") => b.as_str(),
        _ => None,
    }
}

fn substitute(v: &Value, channels: &HashMap<String, Channel>) -> Value {
    if let Some(name) = channel_ref(v) {
        return Value::Channel(channels[name].clone());
    }
    match v {
        Value::List(items) => Value::List(items.iter().map(|i| substitute(i, channels)).collect()),
        Value::Tuple(items) => Value::Tuple(items.iter().map(|i| substitute(i, channels)).collect()),
        other => other.clone(),
    }
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

fn run_step(gw: &Gateway, channels: &mut HashMap<String, Channel>, step: &[Value]) -> Result<(), String> {
    let op = step[0].as_str().ok_or("step name")?;
    let arg = |i: usize| &step[i];
    let name = |i: usize| step[i].as_str().unwrap_or("").to_string();
    let ch = |channels: &HashMap<String, Channel>, i: usize| {
        channels.get(step[i].as_str().unwrap_or("")).cloned().ok_or(format!("no channel {:?}", step[i]))
    };
    match op {
        "exec" => {
            let c = gw.remote_exec(arg(2).as_str().ok_or("source")?).map_err(|e| e.to_string())?;
            channels.insert(name(1), c);
        }
        "newchannel" => {
            let c = gw.newchannel().map_err(|e| e.to_string())?;
            channels.insert(name(1), c);
        }
        "send" => {
            let value = substitute(arg(2), channels);
            ch(channels, 1)?.send(&value).map_err(|e| e.to_string())?;
        }
        "receive" => {
            let got: Value = ch(channels, 1)?.receive_timeout(TIMEOUT).map_err(|e| e.to_string())?;
            if let Some(bind) = channel_ref(arg(2)) {
                match got {
                    Value::Channel(c) => {
                        channels.insert(bind.to_string(), c);
                    }
                    other => return Err(format!("expected a channel, got {}", short(&other.to_string()))),
                }
            } else if canon(&got) != canon(arg(2)) {
                return Err(format!("received {}, expected {}", short(&canon(&got)), short(&canon(arg(2)))));
            }
        }
        "receive_error" => match ch(channels, 1)?.receive_timeout::<Value>(TIMEOUT) {
            Err(Error::Remote { traceback }) if traceback.contains(arg(2).as_str().unwrap_or("")) => {}
            other => return Err(format!("expected a remote error, got {other:?}")),
        },
        "receive_eof" => match ch(channels, 1)?.receive_timeout::<Value>(TIMEOUT) {
            Err(Error::EndOfChannel { .. }) => {}
            other => return Err(format!("expected the end of the channel, got {other:?}")),
        },
        "receive_timeout" => {
            let secs = arg(2).as_f64().ok_or("seconds")?;
            match ch(channels, 1)?.receive_timeout::<Value>(Duration::from_secs_f64(secs)) {
                Err(Error::Timeout(_)) => {}
                other => return Err(format!("expected a timeout, got {other:?}")),
            }
        }
        "receive_lost" => match ch(channels, 1)?.receive_timeout::<Value>(TIMEOUT) {
            Err(Error::GatewayLost(_)) | Err(Error::EndOfChannel { .. }) => {}
            other => return Err(format!("expected a lost gateway, got {other:?}")),
        },
        "waitclose" => ch(channels, 1)?.waitclose(Some(TIMEOUT)).map_err(|e| e.to_string())?,
        "waitclose_error" => match ch(channels, 1)?.waitclose(Some(TIMEOUT)) {
            Err(Error::Remote { traceback }) if traceback.contains(arg(2).as_str().unwrap_or("")) => {}
            other => return Err(format!("expected a remote error from waitclose, got {other:?}")),
        },
        "close" => ch(channels, 1)?.close().map_err(|e| e.to_string())?,
        "close_error" => {
            ch(channels, 1)?.close_with_error(arg(2).as_str().unwrap_or("")).map_err(|e| e.to_string())?
        }
        "callback" => {
            let items = Arc::new(Mutex::new(Vec::new()));
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            let sink = items.clone();
            let end = Value::Str("$end-of-channel$".into());
            let marker = end.clone();
            ch(channels, 1)?
                .set_callback_with_endmarker(
                    move |item: Value| {
                        if item == marker {
                            let _ = done_tx.send(());
                        } else {
                            sink.lock().unwrap().push(item);
                        }
                    },
                    end,
                )
                .map_err(|e| e.to_string())?;
            done_rx.recv_timeout(TIMEOUT).map_err(|_| "no endmarker".to_string())?;
            let got = Value::List(items.lock().unwrap().clone());
            if canon(&got) != canon(arg(2)) {
                return Err(format!("callback items {}, expected {}", short(&canon(&got)), short(&canon(arg(2)))));
            }
        }
        "status" => {
            let status = gw.remote_status().map_err(|e| e.to_string())?;
            if let Some(n) = arg(1).as_i64() {
                if status.numexecuting != n as u64 {
                    return Err(format!("numexecuting {}, expected {n}", status.numexecuting));
                }
            }
            if status.execmodel.is_empty() {
                return Err("empty execmodel".into());
            }
        }
        "rinfo" => {
            let info = gw.rinfo().map_err(|e| e.to_string())?;
            if info.pid == 0 || info.executable.is_empty() || info.cwd.is_empty() || info.platform.is_empty() {
                return Err(format!("incomplete rinfo {info:?}"));
            }
        }
        "terminate" => gw.terminate(Duration::from_secs(5)).map_err(|e| e.to_string())?,
        other => return Err(format!("unknown step {other}")),
    }
    Ok(())
}

type Results = Vec<(String, String, String)>;

/// Runs every scenario with our host, a fresh gateway from `make` for each.
fn run_rust_cell(
    scenarios: &[Scenario],
    props: &[&str],
    make: &dyn Fn() -> execnet::Result<Gateway>,
) -> Results {
    scenarios
        .iter()
        .map(|s| {
            if let Some((_, why)) = s.skip.iter().find(|(k, _)| props.contains(&k.as_str())) {
                return (s.name.clone(), "skipped".into(), why.clone());
            }
            let outcome = make().map_err(|e| e.to_string()).and_then(|gw| {
                let mut channels = HashMap::new();
                let r = s.steps.iter().enumerate().try_for_each(|(i, step)| {
                    run_step(&gw, &mut channels, step).map_err(|e| format!("step {i} ({}): {e}", canon(&step[0])))
                });
                let _ = gw.terminate(Duration::from_secs(5));
                r
            });
            match outcome {
                Ok(()) => (s.name.clone(), "passed".into(), String::new()),
                Err(e) => (s.name.clone(), "failed".into(), e),
            }
        })
        .collect()
}

/// Runs every scenario with execnet's host (run_python_host.py).
fn run_python_cell(execnet_python: &str, args: &[&str]) -> Results {
    let out = Command::new(execnet_python)
        .arg(conformance_dir().join("run_python_host.py"))
        .args(args)
        .output()
        .expect("running run_python_host.py");
    assert!(out.status.success(), "run_python_host.py failed: {}", String::from_utf8_lossy(&out.stderr));
    execnet::loads(&out.stdout).expect("results load")
}

fn print_table(scenarios: &[Scenario], cells: &[(String, Results)]) {
    use std::fmt::Write as _;
    let mut t = String::new();
    let width = scenarios.iter().map(|s| s.name.len()).max().unwrap_or(10);
    let _ = writeln!(t, "conformance matrix (host · worker · transport):");
    for (i, (cell, _)) in cells.iter().enumerate() {
        let _ = writeln!(t, "  [{}] {cell}", i + 1);
    }
    let header: Vec<String> = (1..=cells.len()).map(|i| format!("{:<8}", format!("[{i}]"))).collect();
    let _ = writeln!(t, "{:<width$}  {}", "scenario", header.join(" "));
    for (row, s) in scenarios.iter().enumerate() {
        let marks: Vec<String> = cells.iter().map(|(_, r)| format!("{:<8}", r[row].1)).collect();
        let _ = writeln!(t, "{:<width$}  {}", s.name, marks.join(" "));
    }
    for (cell, results) in cells {
        for (name, status, detail) in results {
            if status != "passed" {
                let _ = writeln!(t, "{cell} / {name}: {status}: {detail}");
            }
        }
    }
    println!("\n{t}");
    // The test command shows this file after the run (test output is captured).
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-matrix.txt");
    let _ = std::fs::write(path, t);
}

#[test]
fn conformance_matrix() {
    let Some(execnet_python) = common::required_part("EXECNET_PYTHON", "the execnet package") else {
        return;
    };
    let python = common::python();
    let scenarios = load_scenarios(&execnet_python);
    let execnet_worker = WorkerSource::execnet_from(&execnet_python).expect("execnet's worker source");
    let popen: XSpec = common::popen("").parse().unwrap();

    let mut cells: Vec<(String, Results)> = Vec::new();
    cells.push((
        "execnet-rs · execnet-rs · popen".into(),
        run_rust_cell(&scenarios, &["host:execnet-rs", "worker:execnet-rs"], &|| {
            Gateway::start(&popen, "gw-conf")
        }),
    ));
    cells.push((
        "execnet-rs · execnet · popen".into(),
        run_rust_cell(&scenarios, &["host:execnet-rs", "worker:execnet"], &|| {
            Gateway::start_with_worker(&popen, "gw-conf", None, &execnet_worker)
        }),
    ));
    cells.push((
        "execnet · execnet-rs · popen".into(),
        run_python_cell(&execnet_python, &["--worker", "execnet-rs", "--python", &python]),
    ));
    cells.push((
        "execnet · execnet · popen (the reference)".into(),
        run_python_cell(&execnet_python, &["--worker", "execnet", "--python", &python]),
    ));

    // Socket cells: our server (in this process), and execnet's own socketserver script.
    let server = Server::bind(ServeConfig {
        listen: vec!["127.0.0.1:0".into()],
        python: python.clone(),
        ..ServeConfig::default()
    })
    .expect("our socket server binds");
    let ours: XSpec = format!("socket={}", server.addresses()[0]).parse().unwrap();
    let handle = server.handle();
    let server_thread = std::thread::spawn(move || server.run());
    cells.push((
        "execnet-rs · execnet-rs · socket (execnet serve)".into(),
        run_rust_cell(&scenarios, &["host:execnet-rs", "worker:execnet-rs"], &|| Gateway::start(&ours, "gw-conf")),
    ));
    cells.push((
        "execnet-rs · execnet · socket (execnet serve)".into(),
        run_rust_cell(&scenarios, &["host:execnet-rs", "worker:execnet"], &|| {
            Gateway::start_with_worker(&ours, "gw-conf", None, &execnet_worker)
        }),
    ));
    let addr = ours.socket().unwrap().to_string();
    cells.push((
        "execnet · execnet · socket (execnet serve)".into(),
        run_python_cell(&execnet_python, &["--socket", &addr]),
    ));
    handle.stop();
    server_thread.join().expect("server thread").expect("server ran");

    let (mut script, port) = start_execnet_socketserver(&execnet_python);
    let theirs: XSpec = format!("socket=127.0.0.1:{port}").parse().unwrap();
    cells.push((
        "execnet-rs · execnet-rs · socket (execnet's socketserver)".into(),
        run_rust_cell(&scenarios, &["host:execnet-rs", "worker:execnet-rs"], &|| Gateway::start(&theirs, "gw-conf")),
    ));
    cells.push((
        "execnet-rs · execnet · socket (execnet's socketserver)".into(),
        run_rust_cell(&scenarios, &["host:execnet-rs", "worker:execnet"], &|| {
            Gateway::start_with_worker(&theirs, "gw-conf", None, &execnet_worker)
        }),
    ));
    let _ = script.kill();
    let _ = script.wait();

    print_table(&scenarios, &cells);
    let failed: Vec<String> = cells
        .iter()
        .flat_map(|(cell, r)| r.iter().filter(|x| x.1 == "failed").map(move |x| format!("{cell} / {}", x.0)))
        .collect();
    assert!(failed.is_empty(), "failed cells: {failed:#?}");
}

/// Starts `python -m execnet.script.socketserver 127.0.0.1:0`; returns it and its port.
fn start_execnet_socketserver(execnet_python: &str) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = Command::new(execnet_python)
        .args(["-u", "-m", "execnet.script.socketserver", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting execnet's socketserver");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // execnet 2.1.2 prints "... Entering Accept loop ('127.0.0.1', PORT)"
    let port = line.trim_end().trim_end_matches(')').rsplit(", ").next().and_then(|p| p.parse().ok());
    let port = port.unwrap_or_else(|| panic!("unexpected first line from execnet's socketserver: {line:?}"));
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (child, port)
}

/// Several thousand random values dumped by execnet are loaded here and dumped again:
/// our bytes equal execnet's wherever its encoding is deterministic (everything but the
/// order of set members, which our loader keeps, so even sets match), and execnet loads
/// our bytes back to equal values.
#[test]
fn serializer_corpus_both_directions() {
    let Some(execnet_python) = common::required_part("EXECNET_PYTHON", "the execnet package") else {
        return;
    };
    let corpus = conformance_dir().join("corpus.py");
    let out = Command::new(&execnet_python)
        .arg(&corpus)
        .args(["generate", "20261125", "3000"])
        .output()
        .expect("running corpus.py");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let blobs: Vec<serde_bytes::ByteBuf> = execnet::loads(&out.stdout).expect("corpus loads");
    assert_eq!(blobs.len(), 3000);
    let mut pairs = Vec::new();
    let mut differing = 0;
    for (i, blob) in blobs.iter().enumerate() {
        let value: Value = execnet::loads(blob).unwrap_or_else(|e| panic!("corpus item {i}: {e}"));
        let ours = execnet::dumps(&value).unwrap_or_else(|e| panic!("corpus item {i}: {e}"));
        if ours != blob.as_slice() {
            differing += 1;
            eprintln!("corpus item {i}: bytes differ from execnet's: {value}");
        }
        pairs.push((blob.clone(), serde_bytes::ByteBuf::from(ours)));
    }
    assert_eq!(differing, 0, "{differing} items were not byte-identical");
    let mut child = Command::new(&execnet_python)
        .arg(&corpus)
        .arg("check")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&execnet::dumps(&pairs).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "execnet disagrees with our bytes:\n{text}");
    assert_eq!(text.trim(), "ok 3000");
}
