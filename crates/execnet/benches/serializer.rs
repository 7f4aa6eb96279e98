//! Serializer micro-benchmarks: `dumps` and `loads` of typical payloads, in MB/s of
//! serialized bytes, next to execnet's `dumps`/`loads` on the same payloads.
//!
//! ```text
//! EXECNET_PYTHON=.venv/bin/python cargo bench -p execnet --bench serializer
//! ```
//!
//! Criterion measures the Rust side. Then, in the same run, the Python interpreter named
//! by $EXECNET_PYTHON (one with the execnet package) builds the same payloads, checks
//! that its `execnet.dumps` writes exactly the bytes ours writes, and times its `dumps`
//! and `loads` with timeit; a table of both is printed last. Without $EXECNET_PYTHON the
//! Python half is skipped with a note. Under `cargo test` (no `--bench`) every benchmark
//! runs once, as a test, and the Python half is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use execnet::Value;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    name: String,
    size: i64,
    ratio: f64,
    tags: Vec<String>,
    ok: bool,
}

/// The payloads; `PY_PAYLOADS` builds the same values in Python.
fn ints_1k() -> Vec<i64> {
    (0..1000).collect()
}
fn floats_10k() -> Vec<f64> {
    (0..10_000).map(|i| i as f64 * 0.5).collect()
}
fn strs_1k() -> Vec<String> {
    (0..1000).map(|i| format!("item-{i}")).collect()
}
fn records_100() -> Vec<Record> {
    (0..100)
        .map(|i| Record {
            name: format!("file-{i}.txt"),
            size: i * 1000,
            ratio: i as f64 / 3.0,
            tags: vec!["a".into(), "bb".into(), format!("t{i}")],
            ok: i % 2 == 0,
        })
        .collect()
}
fn bytes_1mib() -> ByteBuf {
    ByteBuf::from((0..1usize << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}
type Small = (i64, String, f64, Option<()>, bool);
fn small_tuple() -> Small {
    (42, "hello".into(), 2.5, None, true)
}

const PY_PAYLOADS: &str = r#"
payloads = {
    "ints_1k": list(range(1000)),
    "floats_10k": [i * 0.5 for i in range(10000)],
    "strs_1k": ["item-%d" % i for i in range(1000)],
    "records_100": [
        {"name": "file-%d.txt" % i, "size": i * 1000, "ratio": i / 3.0,
         "tags": ["a", "bb", "t%d" % i], "ok": i % 2 == 0}
        for i in range(100)
    ],
    "bytes_1mib": bytes(bytearray(i % 251 for i in range(1 << 20))),
    "small_tuple": (42, "hello", 2.5, None, True),
}
"#;

const PY_TIMEIT: &str = r#"
import json, os, sys, timeit
import execnet
out = {}
for name in sys.argv[2].split(","):
    obj = payloads[name]
    data = execnet.dumps(obj)
    with open(os.path.join(sys.argv[1], name + ".bin"), "wb") as f:
        f.write(data)
    res = {"size": len(data)}
    for op, stmt in (("dumps", lambda: execnet.dumps(obj)), ("loads", lambda: execnet.loads(data))):
        t = timeit.Timer(stmt)
        number, _ = t.autorange()              # at least 0.2 s a run
        best = min(t.repeat(repeat=5, number=number)) / number
        res[op] = best
    out[name] = res
print(json.dumps(out))
"#;

type Dumper = Box<dyn Fn() -> Vec<u8>>;
type Loader = Box<dyn Fn(&[u8])>;

/// A payload: its name, our dumps of it, and functions that dump it and load it back
/// as its own Rust type.
struct Payload {
    name: &'static str,
    bytes: Vec<u8>,
    dumps: Dumper,
    loads_typed: Loader,
    /// Clones (and drops) the loaded typed value: what making and freeing the result
    /// costs with no loading at all, the floor under `loads_typed`.
    clone_typed: Box<dyn Fn()>,
    /// The same for the loaded `Value`, the floor under `loads_value`.
    clone_value: Box<dyn Fn()>,
}

fn payload<T>(name: &'static str, make: fn() -> T) -> Payload
where
    T: Serialize + serde::de::DeserializeOwned + Clone + 'static,
{
    let value = make();
    let bytes = execnet::dumps(&value).expect("dumps");
    let typed: T = execnet::loads(&bytes).expect("loads");
    let loaded: Value = execnet::loads(&bytes).expect("loads");
    Payload {
        name,
        bytes,
        dumps: Box::new(move || execnet::dumps(black_box(&value)).expect("dumps")),
        loads_typed: Box::new(|b| {
            black_box(execnet::loads::<T>(black_box(b)).expect("loads"));
        }),
        clone_typed: Box::new(move || {
            black_box(black_box(&typed).clone());
        }),
        clone_value: Box::new(move || {
            black_box(black_box(&loaded).clone());
        }),
    }
}

fn payloads() -> Vec<Payload> {
    vec![
        payload("ints_1k", ints_1k),
        payload("floats_10k", floats_10k),
        payload("strs_1k", strs_1k),
        payload("records_100", records_100),
        payload("bytes_1mib", bytes_1mib),
        payload("small_tuple", small_tuple),
    ]
}

fn bench(c: &mut Criterion, payloads: &[Payload]) {
    let mut group = c.benchmark_group("serializer");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    for p in payloads {
        group.throughput(Throughput::BytesDecimal(p.bytes.len() as u64));
        group.bench_function(BenchmarkId::new("dumps", p.name), |b| b.iter(|| (p.dumps)()));
        group.bench_function(BenchmarkId::new("loads_typed", p.name), |b| b.iter(|| (p.loads_typed)(&p.bytes)));
        group.bench_function(BenchmarkId::new("loads_value", p.name), |b| {
            b.iter(|| black_box(execnet::loads::<Value>(black_box(&p.bytes)).expect("loads")))
        });
        group.bench_function(BenchmarkId::new("clone_typed", p.name), |b| b.iter(|| (p.clone_typed)()));
        group.bench_function(BenchmarkId::new("clone_value", p.name), |b| b.iter(|| (p.clone_value)()));
    }
    group.finish();
}

/// Criterion's estimate of seconds per iteration for `serializer/OP/NAME`.
fn criterion_seconds(dir: &Path, op: &str, name: &str) -> Option<f64> {
    let path = dir.join("serializer").join(op).join(name).join("new").join("estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let ns = v["slope"]["point_estimate"].as_f64().or_else(|| v["mean"]["point_estimate"].as_f64())?;
    Some(ns * 1e-9)
}

fn compare_with_execnet(dir: &Path, payloads: &[Payload]) {
    let python = match std::env::var("EXECNET_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            eprintln!("\nnote: $EXECNET_PYTHON is unset: execnet's dumps/loads not timed (set it to a Python with execnet)");
            return;
        }
    };
    let tmp = std::env::temp_dir().join(format!("execnet-serializer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let names: Vec<&str> = payloads.iter().map(|p| p.name).collect();
    eprintln!("\ntiming execnet's dumps/loads with timeit ({python}) ...");
    let out = Command::new(&python)
        .arg("-c")
        .arg(format!("{PY_PAYLOADS}\n{PY_TIMEIT}"))
        .arg(&tmp)
        .arg(names.join(","))
        .output()
        .expect("running the Python side");
    if !out.status.success() {
        eprintln!("the Python side failed:\n{}", String::from_utf8_lossy(&out.stderr));
        return;
    }
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).expect("Python side JSON");
    println!("\nserializer, MB/s of serialized bytes (10^6 B/s); execnet-rs from criterion, execnet from timeit (best of 5)");
    println!("execnet's loads builds Python objects: compare it with loads_value (execnet::Value) more than with loads_typed\n");
    println!(
        "| payload | bytes | same bytes | dumps rs | dumps execnet | ratio | loads_typed rs | loads_value rs | loads execnet | ratio (value) |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let mbps = |size: usize, s: Option<f64>| s.map(|s| size as f64 / s / 1e6);
    let f = |x: Option<f64>| x.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into());
    let r = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.1}", a / b),
        _ => "-".into(),
    };
    for p in payloads {
        let size = p.bytes.len();
        let theirs = std::fs::read(tmp.join(format!("{}.bin", p.name))).unwrap_or_default();
        let same = if theirs == p.bytes { "yes" } else { "NO" };
        let d_rs = mbps(size, criterion_seconds(dir, "dumps", p.name));
        let lt_rs = mbps(size, criterion_seconds(dir, "loads_typed", p.name));
        let lv_rs = mbps(size, criterion_seconds(dir, "loads_value", p.name));
        let d_py = mbps(size, py[p.name]["dumps"].as_f64());
        let l_py = mbps(size, py[p.name]["loads"].as_f64());
        println!(
            "| {} | {size} | {same} | {} | {} | {} | {} | {} | {} | {} |",
            p.name,
            f(d_rs),
            f(d_py),
            r(d_rs, d_py),
            f(lt_rs),
            f(lv_rs),
            f(l_py),
            r(lv_rs, l_py)
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
    loads_against_dumps(dir, payloads);
}

/// The second table: loads against dumps (the target is at least 0.5) and against the
/// floor, the clone of the loaded result (making and freeing the output alone, which no
/// loader can beat). All in MB/s of serialized bytes.
fn loads_against_dumps(dir: &Path, payloads: &[Payload]) {
    println!("\nloads against dumps and against the output's floor (a clone of the loaded result, made and dropped), MB/s of serialized bytes\n");
    println!("| payload | dumps | loads_typed | typed / dumps | floor typed | typed / floor | loads_value | value / dumps | floor value | value / floor |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in payloads {
        let mbps = |op| criterion_seconds(dir, op, p.name).map(|s| p.bytes.len() as f64 / s / 1e6);
        let (d, lt, ct, lv, cv) =
            (mbps("dumps"), mbps("loads_typed"), mbps("clone_typed"), mbps("loads_value"), mbps("clone_value"));
        let f = |x: Option<f64>| x.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into());
        let r = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.name,
            f(d),
            f(lt),
            r(lt, d),
            f(ct),
            r(lt, ct),
            f(lv),
            r(lv, d),
            f(cv),
            r(lv, cv)
        );
    }
}

/// `<target dir>/criterion`: this binary lives in `<target dir>/<profile>/deps/`.
fn criterion_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    match exe.parent().and_then(Path::parent).and_then(Path::parent) {
        Some(target) => target.join("criterion"),
        None => PathBuf::from("target/criterion"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let benchmarking = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let dir = criterion_dir();
    let payloads = payloads();
    let mut c = Criterion::default().output_directory(&dir).configure_from_args();
    bench(&mut c, &payloads);
    c.final_summary();
    if benchmarking {
        compare_with_execnet(&dir, &payloads);
    }
}
