"""The execnet side of execnet-bench: runs one scenario with the execnet package.

    python driver.py [--bindings] SCENARIO SPEC PARAMS_JSON
    python driver.py [--bindings] meta

Standard library and execnet only.  With --bindings the same code runs on the
Python bindings of execnet-rs instead (``import execnet_rs as execnet``): the
py-* rows, where both sides are this script under the same interpreter.

It prints one JSON object on stdout:
{"samples": [...], "extra": {...}}, where each sample is the scenario's figure
(seconds, or a rate) timed inside this process with time.perf_counter(), after
this interpreter and execnet were imported.  The Rust side (src/scenarios.rs)
does the same work with execnet-rs and prints the same object, so both are
timed alike.  Keep the two in step.
"""

import json
import os
import sys
import time

# execnet, or execnet_rs under --bindings: imported by main()
execnet = None
BINDINGS = False

clock = time.perf_counter


def host_status():
    """(VmRSS in KiB, number of threads) of this process."""
    rss = None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
    return rss, len(os.listdir("/proc/self/task"))


def end(gw):
    """Exit one gateway and wait for its process, as execnet's Group.terminate
    does for each member (without the helper threads it starts for that).
    execnet_rs's exit() itself waits for the process and reaps it."""
    gw.exit()
    if not BINDINGS:
        gw.join()
        gw._io.wait()


def ready_gateway(spec):
    """A gateway that has answered once, so that its start is not timed."""
    gw = execnet.makegateway(spec)
    ch = gw.remote_exec("channel.send(channel.receive())")
    ch.send(1)
    assert ch.receive() == 1
    ch.waitclose()
    return gw


def startup(spec, p):
    samples = []
    for _ in range(p["inner"]):
        t0 = clock()
        gw = execnet.makegateway(spec)
        ch = gw.remote_exec("channel.send(1)")
        assert ch.receive() == 1
        end(gw)
        samples.append(clock() - t0)
    return samples[p.get("warmup", 0):], {}


def roundtrip(spec, p):
    n = p["n"]
    gw = ready_gateway(spec)
    ch = gw.remote_exec("for x in channel:\n    channel.send(x)")
    ch.send(-1)
    assert ch.receive() == -1
    t0 = clock()
    for i in range(n):
        ch.send(i)
        ch.receive()
    t = clock() - t0
    ch.close()
    end(gw)
    return [n / t], {"seconds": t}


def stream(spec, p):
    n = p["n"]
    gw = ready_gateway(spec)
    t0 = clock()
    ch = gw.remote_exec("for i in range(%d):\n    channel.send(i)" % n)
    receive = ch.receive
    for _ in range(n):
        receive()
    t = clock() - t0
    ch.waitclose()
    end(gw)
    return [n / t], {"seconds": t}


def bulk(spec, p):
    n, size = p["n"], p["size"]
    gw = ready_gateway(spec)
    t0 = clock()
    ch = gw.remote_exec("b = bytes(%d)\nfor _ in range(%d):\n    channel.send(b)" % (size, n))
    total = 0
    for _ in range(n):
        total += len(ch.receive())
    t = clock() - t0
    assert total == n * size
    ch.waitclose()
    end(gw)
    return [total / t / 1e6], {"seconds": t}


def fanout(spec, p):
    k = p["gateways"]
    t0 = clock()
    group = execnet.Group()
    for _ in range(k):
        group.makegateway(spec)
    mch = group.remote_exec("channel.send(1)")
    assert mch.receive_each() == [1] * k
    group.terminate(timeout=10)
    return [clock() - t0], {}


def taskfarm(spec, p):
    n, workers, window = p["n"], p["workers"], p["window"]
    group = execnet.Group()
    for _ in range(workers):
        group.makegateway(spec)
    # as on the Rust side: every worker has answered before the timing starts
    assert group.remote_exec("channel.send(1)").receive_each() == [1] * workers
    mch = group.remote_exec("for x in channel:\n    channel.send(x * 2)")
    queue = mch.make_receive_queue()
    t0 = clock()
    sent = 0
    for ch in mch:
        for _ in range(min(window, n - sent)):
            ch.send(sent)
            sent += 1
    total = 0
    for _ in range(n):
        ch, item = queue.get()
        total += item
        if sent < n:
            ch.send(sent)
            sent += 1
    t = clock() - t0
    assert total == n * (n - 1)
    for ch in mch:
        ch.close()
    group.terminate(timeout=10)
    return [n / t], {"seconds": t}


def scale(spec, p):
    k = p["gateways"]
    rss0, threads0 = host_status()
    t0 = clock()
    group = execnet.Group()
    for _ in range(k):
        group.makegateway(spec)
    mch = group.remote_exec("channel.send(1)")
    assert mch.receive_each() == [1] * k
    t_up = clock() - t0
    rss1, threads1 = host_status()
    t1 = clock()
    group.terminate(timeout=30)
    t_down = clock() - t1
    rss_per = (rss1 - rss0) / k
    threads_per = (threads1 - threads0) / k
    return [rss_per], {
        "threads_per_gateway": threads_per,
        "rss_kib_before": rss0,
        "rss_kib_after": rss1,
        "threads_before": threads0,
        "threads_after": threads1,
        "seconds_up": t_up,
        "seconds_down": t_down,
    }


def package_version(name):
    try:
        from importlib import metadata

        return metadata.version(name)
    except Exception:
        return "?"


def meta():
    if BINDINGS:
        return {
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "execnet_rs": package_version("execnet-rs"),
            "file": execnet.__file__,
        }
    return {
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "executable": sys.executable,
        "execnet": execnet.__version__,
    }


# The "imports" row: a package of 20 modules (each importing a helper) and two stdlib
# packages, imported by the remote code; here (execnet) from a directory the remote code
# puts on sys.path, on the execnet-rs side forwarded from the host (scenarios.rs).
BENCHPKG_MODULES = 20
IMPORTS_CODE = "import json, email.message, benchpkg\nchannel.send((json.dumps([1]), benchpkg.total()))"


def write_benchpkg(root):
    pkg = os.path.join(root, "benchpkg")
    os.makedirs(pkg, exist_ok=True)
    names = ["mod%d" % i for i in range(BENCHPKG_MODULES)]
    files = {
        "__init__.py": "from . import %s\n\ndef total():\n    return sum(m.VALUE for m in (%s,))\n"
        % (", ".join(names), ", ".join(names)),
        "util.py": "def helper(x):\n    return 2 * x\n",
    }
    for i, name in enumerate(names):
        files[name + ".py"] = "from .util import helper\nVALUE = helper(%d)\n" % i
    for name, text in files.items():
        with open(os.path.join(pkg, name), "w") as f:
            f.write(text)


def imports(spec, p):
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="execnet-bench-")
    try:
        write_benchpkg(root)
        # execnet applies env: items after the interpreter started: put root on sys.path
        code = "import sys\nsys.path.insert(0, %r)\n%s" % (root, IMPORTS_CODE)
        samples = []
        for _ in range(p["inner"]):
            t0 = clock()
            gw = execnet.makegateway(spec)
            ch = gw.remote_exec(code)
            assert ch.receive() == ("[1]", 2 * sum(range(BENCHPKG_MODULES)))
            end(gw)
            samples.append(clock() - t0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return samples, {}


def make_rsync_tree(root, n, size):
    """n files of size bytes, 100 to a directory (scenarios.rs makes the same layout)."""
    for i in range(n):
        d = os.path.join(root, "d%03d" % (i // 100))
        if i % 100 == 0:
            os.makedirs(d)
        with open(os.path.join(d, "f%04d.bin" % i), "wb") as f:
            f.write(os.urandom(size))


def rsync(spec, p):
    import tempfile

    n, size, k = p["n"], p["size"], p["gateways"]
    with tempfile.TemporaryDirectory() as src, tempfile.TemporaryDirectory() as dst:
        make_rsync_tree(src, n, size)
        group = execnet.Group()
        for _ in range(k):
            group.makegateway(spec)
        assert group.remote_exec("channel.send(1)").receive_each() == [1] * k

        def sync_all():
            sync = execnet.RSync(src, verbose=False)
            for i, gw in enumerate(group):
                sync.add_target(gw, os.path.join(dst, "t%d" % i))
            t0 = clock()
            sync.send()
            return clock() - t0

        t = sync_all()
        unchanged = sync_all()
        for i in range(k):
            assert os.path.getsize(os.path.join(dst, "t%d" % i, "d000", "f0000.bin")) == size
        group.terminate(timeout=10)
    return [t], {"unchanged_seconds": unchanged, "mb_per_s": n * size * k / t / 1e6}


XDIST_CONFTEST = """
import os
import sys

if "PYTEST_XDIST_WORKER" not in os.environ:
    if os.environ.get("EXECNET_BENCH_BINDINGS") == "1":
        import execnet_rs
        execnet_rs.install_as_execnet()


def pytest_sessionfinish(session):
    if "PYTEST_XDIST_WORKER" not in os.environ:
        rs = sys.modules["execnet"] is sys.modules.get("execnet_rs")
        with open(os.environ["EXECNET_BENCH_MARK"], "w") as f:
            f.write("execnet_rs" if rs else "execnet")
"""


def xdist(spec, p):
    """A pytest-xdist run (-n WORKERS) of N short tests in a subprocess of this interpreter,
    on execnet (or, with --bindings, on execnet_rs standing in); wall-clock seconds."""
    import subprocess
    import tempfile

    n, workers = p["n"], p["workers"]
    per_file = 30
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "conftest.py"), "w") as f:
            f.write(XDIST_CONFTEST)
        for i in range(0, n, per_file):
            with open(os.path.join(root, "test_m%03d.py" % (i // per_file)), "w") as f:
                for j in range(i, min(n, i + per_file)):
                    f.write("def test_%d():\n    assert sum(range(%d)) >= 0\n\n" % (j, j))
        mark = os.path.join(root, "which-execnet")
        env = dict(os.environ, EXECNET_BENCH_BINDINGS="1" if BINDINGS else "0", EXECNET_BENCH_MARK=mark)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers), root]
        t0 = clock()
        out = subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        t = clock() - t0
        text = out.stdout.decode("utf-8", "replace")
        assert out.returncode == 0, text
        assert ("%d passed" % n) in text, text
        with open(mark) as f:
            used = f.read()
    assert used == ("execnet_rs" if BINDINGS else "execnet"), "the xdist run used " + used
    return [t], {}


SCENARIOS = {
    "imports": imports,
    "startup": startup,
    "roundtrip": roundtrip,
    "stream": stream,
    "bulk": bulk,
    "fanout": fanout,
    "taskfarm": taskfarm,
    "scale": scale,
    "rsync": rsync,
    "xdist": xdist,
}


def main(argv):
    global execnet, BINDINGS
    argv = list(argv)
    if argv[1:2] == ["--bindings"]:
        del argv[1]
        BINDINGS = True
        try:
            import execnet_rs as module
        except ImportError as e:
            if argv[1:] != ["meta"]:
                raise
            # the Rust side reports the row as skipped, with this reason
            sys.stdout.write(json.dumps({"unavailable": "%s: %s" % (type(e).__name__, e)}) + "\n")
            return
    else:
        import execnet as module
    execnet = module
    if argv[1:] == ["meta"]:
        out = meta()
    else:
        name, spec, params = argv[1], argv[2], json.loads(argv[3])
        samples, extra = SCENARIOS[name](spec, params)
        out = {"samples": samples, "extra": extra}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv)
