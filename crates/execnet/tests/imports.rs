//! Import forwarding with real workers: a user package with subpackages, relative imports,
//! package data, namespace packages and distribution metadata, served from a directory
//! of the host; refusals (C extensions), misses, what is readable and what is not;
//! local modules first; through popen, via, socket and ssh.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::sshd::sshd;
use execnet::server::{ServeConfig, Server};
use execnet::{Gateway, Group, ImportForwarding, Value};

/// A host-side tree: `root/` holds what is served, `outside/` what must never be.
struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    write(&outside.join("secret.txt"), "the secret");
    write(&root.join("userpkg/__init__.py"), "from . import sub\nfrom .sub.leaf import VALUE\nNAME = 'userpkg'\n");
    write(&root.join("userpkg/sub/__init__.py"), "");
    write(&root.join("userpkg/sub/leaf.py"), "from ..helpers import double\nVALUE = double(21)\n");
    write(&root.join("userpkg/helpers.py"), "def double(x):\n    return 2 * x\n\ndef fail():\n    raise ValueError('raised in a forwarded module')\n");
    write(&root.join("userpkg/data/info.txt"), "package data\n");
    for i in 0..8 {
        write(&root.join(format!("userpkg/t{i}.py")), &format!("import time\ntime.sleep(0.05)\nN = {i}\n"));
    }
    write(&root.join("nspkg/part.py"), "WHERE = 'namespace portion'\n");
    write(&root.join("other.py"), "OTHER = 1\n");
    write(&root.join("cext.cpython-311-x86_64-linux-gnu.so"), "not really an extension");
    write(&root.join("demo-1.0.dist-info/METADATA"), "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n");
    write(&root.join("demo-1.0.dist-info/entry_points.txt"), "[demo.plugins]\nfirst = userpkg.helpers:double\n");
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("userpkg/data/link.txt")).unwrap();
    Tree { _dir: dir, root, outside }
}

fn run<T: serde::de::DeserializeOwned>(gw: &Gateway, code: &str) -> T {
    let ch = gw.remote_exec(code).unwrap();
    match ch.receive() {
        Ok(v) => v,
        Err(e) => panic!("remote code failed: {e}"),
    }
}

const CHECKS: &str = r#"
import importlib, pkgutil, sys
import userpkg
from userpkg.sub import leaf
out = {
    "file": userpkg.__file__,
    "path": list(userpkg.__path__),
    "spec_name": userpkg.__spec__.name,
    "value": leaf.VALUE,
    "name": importlib.import_module("userpkg").NAME,
    "data": pkgutil.get_data("userpkg", "data/info.txt").decode(),
}
try:
    import importlib.resources as resources
    if hasattr(resources, "files"):
        out["files"] = resources.files("userpkg").joinpath("data/info.txt").read_text()
        out["listing"] = sorted(p.name for p in resources.files("userpkg").joinpath("data").iterdir())
    else:
        out["files"] = "package data\n"
        out["listing"] = ["info.txt", "link.txt"]
except Exception as e:
    out["files"] = repr(e)
import nspkg.part
out["ns"] = nspkg.part.WHERE
channel.send(out)
"#;

fn check_package(gw: &Gateway, root: &Path) {
    let out: std::collections::BTreeMap<String, Value> = run(gw, CHECKS);
    let root = std::fs::canonicalize(root).unwrap();
    assert_eq!(out["file"], Value::from(root.join("userpkg/__init__.py").to_str().unwrap()));
    assert_eq!(out["path"], Value::List(vec![]), "submodules come from the host");
    assert_eq!(out["spec_name"], Value::from("userpkg"));
    assert_eq!(out["value"], Value::from(42));
    assert_eq!(out["name"], Value::from("userpkg"));
    assert_eq!(out["data"], Value::from("package data\n"));
    assert_eq!(out["files"], Value::from("package data\n"));
    assert_eq!(out["ns"], Value::from("namespace portion"));
}

#[test]
fn a_user_package_runs_remotely_without_being_installed() {
    let t = tree();
    let gw = execnet::makegateway(common::popen("").as_str()).unwrap();
    // Not importable there by itself.
    let before: bool = run(&gw, "import importlib.util\nchannel.send(importlib.util.find_spec('userpkg') is None)");
    assert!(before);
    let server = gw.forward_imports(ImportForwarding::new([&t.root])).unwrap();
    check_package(&gw, &t.root);
    let stats = server.stats();
    assert!(stats.modules >= 3 && stats.prefetched >= 1, "{stats:?}");
    // Asked once per gateway: importing again costs no request.
    let requests = server.stats().requests;
    let again: i64 = run(&gw, "import userpkg.sub.leaf, importlib\nimportlib.invalidate_caches()\nchannel.send(userpkg.sub.leaf.VALUE)");
    assert_eq!(again, 42);
    assert_eq!(server.stats().requests, requests, "{:?}", server.stats());

    // A traceback through a forwarded module shows its source lines.
    let ch = gw.remote_exec("from userpkg.helpers import fail\nfail()").unwrap();
    let e = ch.waitclose(Some(Duration::from_secs(20))).unwrap_err().to_string();
    assert!(e.contains("helpers.py") && e.contains("raise ValueError('raised in a forwarded module')"), "{e}");

    // importlib.metadata sees the host's distributions and their entry points.
    let meta: (String, Vec<String>) = run(
        &gw,
        "import importlib.metadata as m\neps = m.entry_points()\ngroup = eps.select(group='demo.plugins') if hasattr(eps, 'select') else eps.get('demo.plugins', [])\nchannel.send((m.version('demo'), [e.value for e in group]))",
    );
    assert_eq!(meta, ("1.0".to_string(), vec!["userpkg.helpers:double".to_string()]));
}

#[test]
fn refusals_misses_and_concurrent_imports() {
    let t = tree();
    let gw = execnet::makegateway(common::popen("").as_str()).unwrap();
    let server = gw.forward_imports(ImportForwarding::new([&t.root])).unwrap();
    let refused: String = run(&gw, "try:\n    import cext\nexcept ImportError as e:\n    channel.send(str(e))");
    assert!(refused.contains("cannot forward cext: it is a C extension") && refused.contains("install it on the remote side"), "{refused}");
    let start = Instant::now();
    let missing: String = run(&gw, "try:\n    import no_such_module_anywhere\nexcept ModuleNotFoundError as e:\n    channel.send(type(e).__name__)");
    assert_eq!(missing, "ModuleNotFoundError");
    assert!(start.elapsed() < Duration::from_secs(5));
    // Eight threads import eight modules at once; all get theirs.
    let ns: Vec<i64> = run(
        &gw,
        "import threading, importlib\nres = {}\ndef imp(i):\n    res[i] = importlib.import_module('userpkg.t%d' % i).N\nts = [threading.Thread(target=imp, args=(i,)) for i in range(8)]\nfor t in ts: t.start()\nfor t in ts: t.join()\nchannel.send([res[i] for i in range(8)])",
    );
    assert_eq!(ns, (0..8).collect::<Vec<i64>>());
    let stats = server.stats();
    assert!(stats.refused == 1 && stats.misses >= 1, "{stats:?}");
}

/// A finder runs with the global import lock held, and its answer is delivered by the
/// worker's receiving thread. On PyPy a garbage collection there runs importlib's
/// weakref callbacks, which take that lock; the finder must not keep it while it waits
/// (it did, and the concurrent imports above hung about one run in three on PyPy).
/// Here a channel callback on the receiving thread takes the lock the same way, while
/// the importing thread holds it as importlib does.
#[test]
fn a_receiving_thread_that_needs_the_import_lock_does_not_stall_an_import() {
    let t = tree();
    let gw = execnet::makegateway(common::popen("").as_str()).unwrap();
    gw.forward_imports(ImportForwarding::new([&t.root])).unwrap();
    let ch = gw
        .remote_exec(
            r#"
import _imp, threading, time
other = channel.gateway.newchannel()
entered = threading.Event()
def on_item(item):
    entered.set()
    _imp.acquire_lock()
    _imp.release_lock()
other.setcallback(on_item)
channel.send(other)
_imp.acquire_lock()
try:
    channel.send("holding the import lock")
    entered.wait(10)
    time.sleep(0.1)
    import userpkg.t3
finally:
    _imp.release_lock()
channel.send((userpkg.t3.N, _imp.lock_held()))
"#,
        )
        .unwrap();
    let other: execnet::Channel = ch.receive().unwrap();
    assert_eq!(ch.receive::<String>().unwrap(), "holding the import lock");
    other.send(&"take the import lock").unwrap();
    let (n, held): (i64, bool) = ch.receive_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!((n, held), (3, false), "the import finished and the lock was given back as it was held");
}

#[test]
fn nothing_outside_the_roots_or_the_names_is_readable() {
    let t = tree();
    let gw = execnet::makegateway(common::popen("").as_str()).unwrap();
    gw.forward_imports(ImportForwarding::new([&t.root]).only(["userpkg"])).unwrap();
    let root = std::fs::canonicalize(&t.root).unwrap();
    let root = root.to_str().unwrap();
    let secret = t.outside.join("secret.txt");
    let code = format!(
        r#"
import sys
host = [f for f in sys.meta_path if hasattr(f, "host")][0].host
asks = [
    ("read", {secret:?}),
    ("read", {root:?} + "/../outside/secret.txt"),
    ("read", {root:?} + "/userpkg/data/link.txt"),
    ("read", {root:?} + "/other.py"),
    ("read", "relative/path.py"),
    ("read", "/etc/passwd"),
    ("list", "/"),
    ("stat", {secret:?}),
    ("find", "other"),
    ("find", "../outside"),
    ("find", "userpkg/../other"),
]
channel.send([host.ask(kind, arg) for kind, arg in asks])
channel.send(host.ask("read", {root:?} + "/userpkg/data/info.txt"))
try:
    import other
    channel.send("imported other")
except ImportError:
    channel.send("other refused")
"#,
        secret = secret.to_str().unwrap(),
    );
    let ch = gw.remote_exec(code.as_str()).unwrap();
    let answers: Vec<Value> = ch.receive().unwrap();
    for (i, a) in answers.iter().enumerate() {
        let empty = *a == Value::None || a.as_dict().is_some_and(|d| d.get_str("found") == Some(&Value::None));
        assert!(empty, "request {i} was answered: {a}");
    }
    let allowed: Value = ch.receive().unwrap();
    assert_eq!(allowed, Value::Bytes(b"package data\n".to_vec()));
    assert_eq!(ch.receive::<String>().unwrap(), "other refused");
}

#[test]
fn local_modules_win_unless_the_host_copy_is_preferred() {
    let t = tree();
    let remote_dir = tempfile::tempdir().unwrap();
    write(&remote_dir.path().join("mine.py"), "WHO = 'remote'\n");
    write(&t.root.join("mine.py"), "WHO = 'host'\n");
    write(&t.root.join("json.py"), "raise RuntimeError('the host json must not be used')\n");
    let env = format!("env:PYTHONPATH={}", remote_dir.path().display());
    let spec = common::popen(&format!("{env}//forward_imports//import_path={}", t.root.display()));
    let gw = execnet::makegateway(spec.as_str()).unwrap();
    let who: (String, String) = run(&gw, "import mine, json\nchannel.send((mine.WHO, json.dumps([1])))");
    assert_eq!(who, ("remote".to_string(), "[1]".to_string()));
    let spec = common::popen(&format!(
        "{env}//forward_imports=mine//prefer_host_imports//import_path={}",
        t.root.display()
    ));
    let gw = execnet::makegateway(spec.as_str()).unwrap();
    assert_eq!(run::<String>(&gw, "import mine\nchannel.send(mine.WHO)"), "host");
}

#[test]
fn bad_forwarding_specs_are_refused() {
    for (spec, needle) in [
        ("popen//import_path=/tmp", "need forward_imports"),
        ("popen//forward_imports=a.b", "top-level module names"),
        ("popen//forward_imports=x//import_path", "import_path needs a value"),
    ] {
        let e = execnet::makegateway(spec).unwrap_err().to_string();
        assert!(e.contains(needle), "{spec}: {e}");
    }
}

#[test]
fn forwarding_works_through_via_and_socket_gateways() {
    let t = tree();
    let group = Group::new();
    group.makegateway(common::popen("id=hub").as_str()).unwrap();
    let gw = group
        .makegateway(format!("popen//via=hub//python={}//forward_imports//import_path={}", common::python(), t.root.display()).as_str())
        .unwrap();
    check_package(&gw, &t.root);

    let config = ServeConfig { listen: vec!["127.0.0.1:0".into()], python: common::python(), ..ServeConfig::default() };
    let server = Server::bind(config).unwrap();
    let addr = server.addresses()[0].clone();
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());
    {
        let gw = execnet::makegateway(format!("socket={addr}//forward_imports//import_path={}", t.root.display()).as_str()).unwrap();
        check_package(&gw, &t.root);
    }
    handle.stop();
    thread.join().unwrap().unwrap();
}

#[test]
fn forwarding_works_over_ssh() {
    let Some(s) = sshd() else { return };
    let t = tree();
    let gw = execnet::makegateway(s.spec(&format!("forward_imports=userpkg,nspkg//import_path={}", t.root.display())).as_str()).unwrap();
    check_package(&gw, &t.root);
}
