"""Starting and ending workers, under CPython and PyPy: settings, execmodels, exit, sockets."""

import os
import socket
import subprocess
import textwrap
import time

import pytest
from conftest import (
    BOOTSTRAP,
    CHANNEL_CLOSE,
    CHANNEL_DATA,
    GATEWAY_TERMINATE,
    HEADER,
    TIMEOUT,
    SocketHost,
    bootstrap_line,
    invocation,
    wait_until,
)

# execnet's words for a main_thread_only execution refused after a second's wait.
MAIN_THREAD_ONLY_DEADLOCK_TEXT = "concurrent remote_exec would cause deadlock for main_thread_only execmodel"
RINFO = "import os, sys\nchannel.send(dict(cwd=os.getcwd(), pid=os.getpid(), env=dict(os.environ)))"

# The exit deadlines of the brief: "promptly", and within a second of the
# end of input whatever the user code does.  Process start-up is not counted.
EXIT_DEADLINE = 1.0


def time_to_exit(worker):
    start = time.monotonic()
    status = worker.wait(TIMEOUT)
    return status, time.monotonic() - start


# -- settings ----------------------------------------------------------------------


def test_chdir_created_when_missing(spawn, tmp_path):
    target = tmp_path / "new" / "nested"
    worker = spawn(chdir=str(target))
    (info,) = worker.run(RINFO)
    assert info["cwd"] == str(target) and target.is_dir()


def test_chdir_relative_to_start_directory(spawn, tmp_path):
    (tmp_path / "exists").mkdir()
    worker = spawn(cwd=str(tmp_path), chdir="exists")
    assert worker.run(RINFO)[0]["cwd"] == str(tmp_path / "exists")
    worker = spawn(cwd=str(tmp_path), chdir="made/here")
    assert worker.run(RINFO)[0]["cwd"] == str(tmp_path / "made" / "here")


def test_chdir_impossible_exits_1_without_ready_byte(spawn, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    worker = spawn(chdir=str(blocker / "sub"))
    assert not worker.ready
    assert worker.wait() == 1
    worker.allow_stderr = True
    assert "cannot start" in worker.stderr and "cannot change into directory" in worker.stderr
    assert "Traceback (most recent call last)" in worker.stderr


def test_unsupported_execmodel_exits_1(spawn):
    worker = spawn(execmodel="gevent")
    worker.allow_stderr = True
    assert not worker.ready
    assert worker.wait() == 1
    assert "unsupported execmodel 'gevent'" in worker.stderr


def test_env_applied(spawn):
    worker = spawn(env={"EXECNET_TEST_VAR": "value \u20ac", "PATH_EXTRA": "x"})
    env = worker.run(RINFO)[0]["env"]
    assert env["EXECNET_TEST_VAR"] == "value \u20ac" and env["PATH_EXTRA"] == "x"


def test_nice_applied(spawn):
    base = os.nice(0)
    worker = spawn(nice=5)
    assert worker.run("import os; channel.send(os.nice(0))") == [min(base + 5, 19)]


def test_unknown_keywords_ignored(spawn):
    worker = spawn(future_option=123, another="x")
    assert worker.run("channel.send('ok')") == ["ok"]


def test_defaults_without_keywords(python):
    proc = subprocess.Popen([python, "-u", "-c", BOOTSTRAP], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        proc.stdin.write(bootstrap_line("serve_stdio()"))
        proc.stdin.flush()
        assert proc.stdout.read(1) == b"1"
        proc.stdin.write(HEADER.pack(GATEWAY_TERMINATE, 0, 0))
        proc.stdin.flush()
        assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()


def test_defining_the_source_has_no_side_effects(python):
    code = "exec(eval(%r)); print('defined only')" % repr(bootstrap_line("")[:-1].decode())
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0 and out.stdout == "defined only\n" and out.stderr == ""


# -- execution models -------------------------------------------------------------


def test_main_thread_only_runs_in_main_thread(spawn):
    worker = spawn(execmodel="main_thread_only")
    items = worker.run(
        "import threading\nchannel.send(threading.current_thread() is threading.main_thread())"
    )
    assert items == [True]
    assert worker.status()["execmodel"] == "main_thread_only"


def test_main_thread_only_runs_one_at_a_time_in_order(spawn):
    worker = spawn(execmodel="main_thread_only")
    # The first holds the main thread for less than the second's wait (one second).
    first = worker.exec_("import time\nchannel.send('first starts')\ntime.sleep(0.4)\nchannel.send('first ends')")
    second = worker.exec_("channel.send('second starts')")
    assert worker.receive(first) == "first starts"
    worker.no_frame(second, wait=0.2)  # waits for the main thread
    assert worker.receive(first) == "first ends"
    worker.expect_close(first)
    assert worker.receive(second) == "second starts"
    worker.expect_close(second)


def test_main_thread_only_refuses_an_execution_that_waits_over_a_second(spawn):
    """execnet's rule: a remote_exec that cannot have the main thread within a second
    is closed with MAIN_THREAD_ONLY_DEADLOCK_TEXT (it would otherwise wait for ever)."""
    worker = spawn(execmodel="main_thread_only")
    first = worker.exec_("channel.send('first starts')\nchannel.send(channel.receive())")
    assert worker.receive(first) == "first starts"
    started = time.monotonic()
    second = worker.exec_("channel.send('second starts')")
    third = worker.exec_("channel.send('third starts')")
    assert worker.expect_close_error(second) == MAIN_THREAD_ONLY_DEADLOCK_TEXT
    assert worker.expect_close_error(third) == MAIN_THREAD_ONLY_DEADLOCK_TEXT
    waited = time.monotonic() - started
    assert 1.9 < waited < 2.0 + TIMEOUT, waited  # one second each, one after the other
    status = worker.status()
    assert status["numexecuting"] == 1
    worker.send_data(first, "first ends")
    assert worker.receive(first) == "first ends"
    worker.expect_close(first)
    # The main thread is free again: the next execution runs.
    assert worker.run("channel.send('fourth')") == ["fourth"]


def test_main_thread_only_receive_and_callbacks(spawn):
    worker = spawn(execmodel="main_thread_only")
    channel = worker.exec_("channel.send(sum(channel))")
    for number in range(100):
        worker.send_data(channel, number)
    worker.send(5 + 2, channel)  # LAST_MESSAGE
    assert worker.receive(channel) == 4950
    worker.expect_close(channel)


# -- ending -------------------------------------------------------------------------


@pytest.mark.parametrize("execmodel", ["thread", "main_thread_only"])
def test_gateway_terminate_exits_promptly(spawn, execmodel):
    worker = spawn(execmodel=execmodel)
    assert worker.run("channel.send(1)") == [1]
    worker.send(GATEWAY_TERMINATE)
    status, seconds = time_to_exit(worker)
    assert status == 0 and seconds < EXIT_DEADLINE


def test_terminate_wakes_receivers_with_eof(spawn):
    worker = spawn()
    channel = worker.exec_("channel.receive()")
    assert wait_until(lambda: worker.status()["numexecuting"] == 1)
    worker.send(GATEWAY_TERMINATE)
    worker.expect_close(channel)  # EOFError: a quiet end, a plain CLOSE
    status, seconds = time_to_exit(worker)
    assert status == 0 and seconds < EXIT_DEADLINE


def test_terminate_with_channel_callback_gets_endmarker(spawn):
    worker = spawn()
    channel = worker.exec_(
        textwrap.dedent(
            """
            out = channel.gateway.newchannel()
            channel.send(out)
            channel.setcallback(lambda item: None, endmarker="END")
            other = channel.gateway.newchannel()
            other.setcallback(out.send, endmarker="other END")
            channel.send(other)
            """
        )
    )
    out = worker.receive(channel)
    worker.receive(channel)
    worker.send(GATEWAY_TERMINATE)
    assert worker.receive(out.id) == "other END"
    assert worker.wait() == 0


BLOCKING_CODE = {
    "busy loop": "while 1: pass",
    "blocked receive": "channel.receive()",
    "sleep": "import time; time.sleep(100)",
    "busy loop ignoring EOF": "while 1:\n    try:\n        channel.receive(timeout=0.01)\n    except BaseException:\n        pass",
}


@pytest.mark.parametrize("execmodel", ["thread", "main_thread_only"])
@pytest.mark.parametrize("code", list(BLOCKING_CODE.values()), ids=list(BLOCKING_CODE))
def test_end_of_input_exits_within_a_second(spawn, execmodel, code):
    worker = spawn(execmodel=execmodel)
    worker.exec_(code)
    assert wait_until(lambda: worker.status()["numexecuting"] == 1)
    time.sleep(0.1)  # let the code get going
    worker.close_input()
    status, seconds = time_to_exit(worker)
    assert status == 0 and seconds < EXIT_DEADLINE, seconds


def test_end_of_input_exits_while_a_callback_blocks_the_reader(spawn):
    worker = spawn()
    channel = worker.exec_("import time\nchannel.setcallback(lambda item: time.sleep(100))")
    assert worker.next_frame(channel).code == 7  # LAST_MESSAGE: the callback is set
    worker.send_data(channel, "block the reader")
    time.sleep(0.2)
    worker.close_input()
    status, seconds = time_to_exit(worker)
    assert status == 0 and seconds < EXIT_DEADLINE, seconds


def test_terminate_cancels_queued_main_thread_executions(spawn):
    worker = spawn(execmodel="main_thread_only")
    running = worker.exec_("channel.send('running')\nchannel.receive()")
    queued = worker.exec_("channel.send('never')")
    assert worker.receive(running) == "running"
    worker.send(GATEWAY_TERMINATE)
    worker.expect_close(running)  # woken by EOFError: a quiet end
    # Cancelled, or (on a slow machine, a second after it came) refused.
    error = worker.expect_close_error(queued)
    assert "cancelled" in error or error == MAIN_THREAD_ONLY_DEADLOCK_TEXT, error
    status, seconds = time_to_exit(worker)
    assert status == 0 and seconds < EXIT_DEADLINE


def test_end_of_input_inside_a_frame_exits(spawn):
    worker = spawn()
    worker._write_stdin(HEADER.pack(CHANNEL_DATA, 1, 100) + b"partial")
    worker.close_input()
    status, seconds = time_to_exit(worker)
    assert status == 0 and seconds < EXIT_DEADLINE


def test_negative_frame_length_is_a_protocol_error(spawn):
    worker = spawn()
    worker.allow_stderr = True
    worker.send(CHANNEL_DATA, 1)  # fine, an empty payload is just bad data
    worker._write_stdin(HEADER.pack(CHANNEL_DATA, 1, -5))
    status, seconds = time_to_exit(worker)
    assert status == 0 and seconds < EXIT_DEADLINE
    assert "negative length" in worker.stderr


def test_child_processes_do_not_hold_the_frame_pipe(spawn):
    # A process started by user code must not inherit the frame stream, or
    # the host would never see the worker's end.
    worker = spawn()
    (pid,) = worker.run(
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'],\n"
        "                     stderr=subprocess.DEVNULL)\n"
        "channel.send(p.pid)"
    )
    try:
        worker.send(GATEWAY_TERMINATE)
        assert worker.wait() == 0
        assert worker.stream_ended.wait(EXIT_DEADLINE)
    finally:
        os.kill(pid, 9)


# -- socket servers ------------------------------------------------------------------

# A minimal socket server (PROTOCOL.md section 5) serving connections one
# after the other in this process.
SOCKET_SERVER = textwrap.dedent(
    """
    import socket, sys
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    print(server.getsockname()[1], flush=True)
    for _ in range(int(sys.argv[1])):
        clientsock, address = server.accept()
        reader = clientsock.makefile("rb")
        line = reader.readline().rstrip()
        reader.close()
        exec(eval(line), {"clientsock": clientsock, "address": address})
        print("served", flush=True)
    """
)


@pytest.fixture
def socket_server(python):
    servers = []

    def start(connections=1):
        proc = subprocess.Popen(
            [python, "-u", "-c", SOCKET_SERVER, str(connections)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        servers.append(proc)
        port = int(proc.stdout.readline())
        return proc, port

    yield start
    for proc in servers:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("execmodel", ["thread", "main_thread_only"])
def test_serve_socket(socket_server, execmodel):
    server, port = socket_server(connections=2)
    for _ in range(2):  # the server survives a session and serves the next
        host = SocketHost(socket.create_connection(("127.0.0.1", port)), execmodel=execmodel)
        assert host.ready
        (info,) = host.run(RINFO)
        assert info["pid"] == server.pid
        channel = host.exec_("for item in channel:\n    channel.send(item)")
        # b"six": a frame big enough to be written from its parts (writev on pipes)
        for value in [1, "two", b"three" * 1000, [4.0, (5,)], b"six" * 100000]:
            host.send_data(channel, value)
            assert host.receive(channel) == value
        host.send(GATEWAY_TERMINATE)
        host.expect_close(channel)  # the iteration ended quietly
        assert host.stream_ended.wait(EXIT_DEADLINE + 1)
        assert server.stdout.readline() == "served\n"
        host.kill()
    assert server.wait(TIMEOUT) == 0


def test_serve_socket_host_disconnect(socket_server):
    server, port = socket_server()
    host = SocketHost(socket.create_connection(("127.0.0.1", port)))
    host.exec_("channel.receive()")
    assert wait_until(lambda: host.status()["numexecuting"] == 1)
    host.sock.shutdown(socket.SHUT_WR)
    start = time.monotonic()
    assert server.stdout.readline() == "served\n"
    assert time.monotonic() - start < EXIT_DEADLINE
    assert server.wait(TIMEOUT) == 0


def test_serve_socket_config_failure(socket_server, tmp_path):
    server, port = socket_server()
    blocker = tmp_path / "file"
    blocker.write_text("")
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(bootstrap_line(invocation(stdio=False, chdir=str(blocker / "x"))))
    assert sock.recv(10) == b""  # closed without the ready byte
    assert server.stdout.readline() == "served\n"  # and the server lives on
    assert server.wait(TIMEOUT) == 0
    assert "cannot start" in server.stderr.read()
