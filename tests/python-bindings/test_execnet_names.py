"""execnet's module names and the behaviours that execnet's and pytest-xdist's own test
suites showed missing from the bindings (each test names the cause it guards)."""

import io
import os
import subprocess
import sys
import time

import pytest

import execnet_rs as execnet
from execnet_rs import gateway, gateway_base, multi


def test_specs_get_distinct_ids_before_any_gateway_exists():
    # xdist allocates ids for all its specs first; all were "gw0" ("created: 1/1 worker").
    group = execnet.Group()
    specs = [execnet.XSpec("popen"), execnet.XSpec("popen")]
    for spec in specs:
        group.allocate_id(spec)
    assert [s.id for s in specs] == ["gw0", "gw1"]
    try:
        gws = [group.makegateway(spec) for spec in specs]
        assert [gw.id for gw in gws] == ["gw0", "gw1"]
        # The gateway's spec is the one given, as execnet keeps it (no python= added).
        assert gws[0].spec is specs[0]
        assert gws[0].spec == execnet.XSpec("popen")
    finally:
        group.terminate(5)


def test_attributes_set_on_a_spec_after_parsing_are_used(tmp_path):
    # xdist sets spec.chdir and spec.id on parsed specs; they were ignored.
    spec = execnet.XSpec("popen")
    spec.chdir = str(tmp_path / "work")
    spec.id = "mine"
    gw = execnet.makegateway(spec)
    try:
        assert gw.id == "mine"
        assert gw.remote_exec("import os; channel.send(os.getcwd())").receive(timeout=30) == str(tmp_path / "work")
    finally:
        gw.exit()


def test_group_execmodel_is_an_execmodel():
    group = execnet.Group(execmodel="main_thread_only")
    assert group.execmodel.backend == "main_thread_only"
    assert group.execmodel == "main_thread_only"
    with pytest.raises(ValueError, match="eventlet"):
        execnet.Group(execmodel="eventlet")


def uses_a_global(channel):
    channel.send(os.getpid())


def uses_only_its_own_names(channel):
    import os

    squares = [n * n for n in range(3)]
    channel.send((os.getpid() > 0, squares))


def test_functions_using_globals_are_refused_before_sending():
    gw = execnet.makegateway("popen")
    try:
        with pytest.raises(ValueError, match="globals") as info:
            gw.remote_exec(uses_a_global)
        assert info.value.args[1] == ["os"]
        assert gw.remote_exec(uses_only_its_own_names).receive(timeout=30) == (True, [0, 1, 4])
        with pytest.raises(ValueError, match="lambda"):
            gateway._source_of_function(lambda channel: None)
    finally:
        gw.exit()


def test_load_reads_exactly_one_object_from_a_stream():
    f = io.BytesIO()
    execnet.dump(f, {"a": [1, 2.5, b"x", ("t", None)]})
    execnet.dump(f, 2**100)
    f.seek(0)
    assert execnet.load(f) == {"a": [1, 2.5, b"x", ("t", None)]}
    assert execnet.load(f) == 2**100
    with pytest.raises(execnet.DataFormatError, match="ended"):
        execnet.load(f)
    with pytest.raises(execnet.DataFormatError):
        execnet.load(io.BytesIO(execnet.dumps("abc")[:-2]))


def test_worker_pool_and_safe_terminate():
    pool = gateway_base.WorkerPool(gateway_base.get_execmodel("thread"))
    assert pool.spawn(lambda: 42).get(timeout=5) == 42
    reply = pool.spawn(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        reply.get(timeout=5)
    slow = pool.spawn(time.sleep, 0.3)
    with pytest.raises(OSError):
        slow.get(timeout=0.01)
    assert pool.waitall(timeout=5)
    pool.trigger_shutdown()
    with pytest.raises(ValueError, match="shutting down"):
        pool.spawn(lambda: None)

    killed = []
    multi.safe_terminate("thread", 0.2, [(lambda: time.sleep(2), lambda: killed.append(1))] * 3)
    multi.safe_terminate("thread", 2, [(lambda: None, lambda: killed.append(2))] * 3)
    assert killed == [1, 1, 1]


def test_execnet_worker_internals_say_they_are_not_provided():
    with pytest.raises(NotImplementedError, match="no Message"):
        gateway_base.Message(0, 1, b"")


def test_install_as_execnet_registers_the_modules():
    code = (
        "import execnet_rs; execnet_rs.install_as_execnet()\n"
        "import execnet, execnet.gateway_base, execnet.multi\n"
        "from execnet.gateway_io import popen_bootstrapline\n"
        "from execnet.gateway import Gateway\n"
        "assert execnet is execnet_rs and execnet.gateway_base.WorkerPool\n"
        "print(execnet.multi.Group is execnet_rs.Group)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_standin_reaches_every_interpreter_of_an_environment(tmp_path):
    # A venv seeing this one's packages, without the execnet package: after
    # `python -m execnet_rs.standin install`, a fresh interpreter's `import execnet`
    # is execnet_rs (what xdist's popen workers and subprocesses rely on).
    import execnet_rs as pkg

    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = str(env_dir / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    # execnet_rs itself, from where this interpreter has it (not the execnet package).
    with open(os.path.join(site, "execnet_rs_here.pth"), "w") as f:
        f.write(os.path.dirname(os.path.dirname(pkg.__file__)) + "\n")
    run = lambda *args: subprocess.run([python, *args], capture_output=True, text=True, timeout=60)
    assert run("-c", "import execnet").returncode != 0
    out = run("-m", "execnet_rs.standin", "install")
    assert out.returncode == 0, out.stderr
    out = run("-c", "import execnet, execnet.gateway_base; print(execnet.__name__, execnet.gateway_base.__name__)")
    assert out.stdout.split() == ["execnet_rs", "execnet_rs.gateway_base"], out.stderr
    assert "installed" in run("-m", "execnet_rs.standin", "status").stdout
    assert run("-m", "execnet_rs.standin", "uninstall").returncode == 0
    assert run("-c", "import execnet").returncode != 0
    # With the execnet package present it refuses (one would shadow the other).
    fake = os.path.join(site, "execnet")
    os.makedirs(fake)
    open(os.path.join(fake, "__init__.py"), "w").close()
    out = run("-m", "execnet_rs.standin", "install")
    assert out.returncode != 0 and "uninstall it first" in out.stderr


def test_remote_error_formatted_and_syntax_errors_read_as_tracebacks():
    gw = execnet.makegateway("popen")
    try:
        with pytest.raises(execnet.RemoteError) as info:
            gw.remote_exec("def foo()\n    pass").receive(timeout=30)
        assert info.value.formatted.startswith("Traceback (most recent call last):")
        assert "SyntaxError" in info.value.formatted
    finally:
        gw.exit()


def test_private_names_are_not_spec_keys_and_defaultspec_is_used():
    spec = execnet.XSpec("popen//chdir=/tmp")
    assert not hasattr(spec, "_xyz")
    assert spec.nokey is None
    group = execnet.Group()
    group.defaultspec = "not-a-transport"
    with pytest.raises(ValueError):
        group.makegateway()
    group.defaultspec = "popen"
    gw = group.makegateway()
    assert list(group) == [gw]
    group._cleanup_atexit()
    assert len(group) == 0


def test_after_the_worker_is_killed_send_is_an_oserror_and_receive_an_eoferror():
    import signal

    gw = execnet.makegateway("popen")
    try:
        ch = gw.remote_exec("import os, time; channel.send(os.getpid()); time.sleep(100)")
        os.kill(ch.receive(timeout=30), signal.SIGTERM)
        with pytest.raises(EOFError):
            ch.waitclose(30)
        with pytest.raises(OSError):
            ch.send(None)
        with pytest.raises(EOFError):
            ch.receive(timeout=30)
    finally:
        gw.exit()


def test_loads_coerces_strings_as_execnets_loads():
    # execnet.loads gives a Python 2 string back as bytes unless py2str_as_py3str (found
    # by execnet's test_py2_string_loads); py3str_as_py2str gives str back as bytes.
    py2 = b"\x02M\x00\x00\x00\x01aQ"
    assert execnet.loads(py2) == b"a"
    assert execnet.loads(py2, py2str_as_py3str=True) == "a"
    data = execnet.dumps(["\u00e9", ("x", b"M"), {"k": 1}])
    assert execnet.loads(data) == ["\u00e9", ("x", b"M"), {"k": 1}]
    assert execnet.loads(data, py3str_as_py2str=True) == [b"\xc3\xa9", (b"x", b"M"), {b"k": 1}]
    with pytest.raises(execnet.DataFormatError):
        execnet.loads(b"\x02M\x00\x00\x00\x09aQ")  # truncated: still an error


def test_gateway_base_serializer_names_and_a_plain_import(tmp_path):
    # execnet's test_serializer imports gateway_base as a top-level module from the
    # package's folder and uses dumps_internal and Unserializer.
    data = gateway_base.dumps_internal((1, "two", [3.0]))
    assert gateway_base.Unserializer(io.BytesIO(data)).load() == (1, "two", [3.0])
    versioned = io.BytesIO(execnet.dumps({"a": None}))
    assert gateway_base.Unserializer(versioned).load(versioned=True) == {"a": None}
    script = tmp_path / "plain.py"
    script.write_text(
        "import sys, io\n"
        f"sys.path.insert(0, {os.path.dirname(execnet.__file__)!r})\n"
        "import gateway_base as serializer\n"
        "data = serializer.dumps_internal(frozenset((1, 2)))\n"
        "print(repr(serializer.Unserializer(io.BytesIO(data)).load()))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "frozenset({1, 2})", out.stderr


def test_the_execution_channel_cannot_be_closed_from_within():
    # As execnet's: it closes when the execution ends (test_remote_exec_no_explicit_close).
    gw = execnet.makegateway()
    try:
        with pytest.raises(execnet.RemoteError) as excinfo:
            gw.remote_exec("channel.close()").waitclose(10)
        assert "cannot explicitly close channel within remote_exec" in excinfo.value.formatted
        ch = gw.remote_exec("f = channel.makefile(proxyclose=True); f.write('x'); f.close()")
        assert ch.receive(10) == "x"
        with pytest.raises(execnet.RemoteError):
            ch.receive(10)
    finally:
        gw.exit()


def test_remote_init_threads_and_rinfo_cache_as_execnet(capsys):
    gw = execnet.makegateway()
    try:
        gw.remote_init_threads(3)
        assert "no-operation" in capsys.readouterr().out
        first = gw._rinfo()
        gw.remote_exec("import os; os.chdir('/')").waitclose(10)
        assert gw._rinfo() is first
        assert gw._rinfo(update=True).cwd == "/"
        gw._cache_rinfo = first  # execnet's attribute: tests restore the cache with it
        assert gw._rinfo() is first
    finally:
        gw.exit()


def test_ssh_args_keep_execnets_layout():
    from execnet_rs.gateway_io import ssh_args

    spec = execnet.XSpec("ssh=-p 22100 user@host//python=python3")
    spec.ssh_config = "/home/user/ssh_config"
    args = ssh_args(spec)
    assert args[:7] == ["ssh", "-C", "-F", spec.ssh_config, "-p", "22100", "user@host"]
    assert args[7] == "-T" and args[8].startswith("python3 -c ")


def test_getremoteerror_does_not_wait_for_the_end_marker_delivery():
    # execnet's test_endmarker_delivery_on_remote_killterm reads _getremoteerror() as soon
    # as its callback got the end marker; it once waited on waitclose(0) and saw None.
    import queue
    import signal

    for _ in range(10):
        gw = execnet.makegateway()
        try:
            got = queue.Queue()
            ch = gw.remote_exec("import os, time; channel.send(os.getpid()); time.sleep(100)")
            os.kill(ch.receive(10), signal.SIGTERM)

            def slow_put(item):
                got.put(item)
                time.sleep(0.05)  # the main thread asks while the delivery still runs

            ch.setcallback(slow_put, endmarker=999)
            assert got.get(timeout=10) == 999
            assert isinstance(ch._getremoteerror(), EOFError)
        finally:
            gw.exit()
    ok = execnet.makegateway()
    try:
        ch = ok.remote_exec("pass")
        ch.waitclose(10)
        assert ch._getremoteerror() is None
        bad = ok.remote_exec("raise ValueError(7)")
        with pytest.raises(execnet.RemoteError):
            bad.waitclose(10)
        assert "ValueError: 7" in bad._getremoteerror().formatted
    finally:
        ok.exit()
