"""A small host for testing worker.py, plus fixtures.

The host starts the worker exactly as the Rust host does: the interpreter runs
the bootstrap one-liner, gets one line holding ascii(worker source + "\\n" +
invocation + "\\n"), answers with the ready byte b"1" and then speaks frames.
Objects are encoded and decoded with the real execnet package's internal
serializer, so every test also checks that the worker is byte-compatible with
execnet 2.x.

Interpreters: every worker test runs under CPython and PyPy, found as
$EXECNET_TEST_CPYTHON or python3 on PATH, and $EXECNET_TEST_PYPY (scripts/test.sh
sets it) or pypy3 on PATH or /usr/bin/pypy3.  A missing PyPy skips its tests with a loud reason, or fails
them when the environment has CI=true.
"""

import collections
import os
import queue
import shutil
import struct
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from execnet import gateway_base

WORKER_PATH = Path(__file__).resolve().parents[2] / "crates" / "execnet" / "src" / "worker" / "worker.py"
WORKER_SOURCE = WORKER_PATH.read_text(encoding="utf-8")
BOOTSTRAP = "import sys;exec(eval(sys.stdin.readline()))"



def _load_worker():
    """worker.py loaded into this (CPython) process as a module (it starts nothing)."""
    module = types.ModuleType("execnet_worker_under_test")
    exec(compile(WORKER_SOURCE, str(WORKER_PATH), "exec"), module.__dict__)
    return module


WORKER = _load_worker()

# The message codes and opcodes, read from the worker rather than written again here.
STATUS = WORKER.STATUS
RECONFIGURE = WORKER.RECONFIGURE
GATEWAY_TERMINATE = WORKER.GATEWAY_TERMINATE
CHANNEL_EXEC = WORKER.CHANNEL_EXEC
CHANNEL_DATA = WORKER.CHANNEL_DATA
CHANNEL_CLOSE = WORKER.CHANNEL_CLOSE
CHANNEL_CLOSE_ERROR = WORKER.CHANNEL_CLOSE_ERROR
CHANNEL_LAST_MESSAGE = WORKER.CHANNEL_LAST_MESSAGE
OP = WORKER.Op


def payload(*parts):
    """A payload written by hand: opcode names (the worker's Op), ints (i32 operands)
    and bytes (as they are)."""
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(bytes((getattr(OP, part),)))
        elif isinstance(part, int):
            out.append(struct.pack("!i", part))
        else:
            out.append(part)
    return b"".join(out)

HEADER = struct.Struct("!bii")
TIMEOUT = 10.0  # generous upper bound for anything that should happen "soon"


class _Serializer(gateway_base._Serializer):
    """execnet's serializer, writing H for ints below -2**31 as PROTOCOL.md asks.

    (execnet 2.1.2 cannot dump those; everything else is execnet's own code.)
    """

    _dispatch = {}  # execnet caches type -> method here; keep ours apart

    def save_int(self, i):
        if i < -(2**31):
            self._write(gateway_base.opcode.LONGINT)
            self._write_byte_sequence(str(i).encode("ascii"))
        else:
            super().save_int(i)


def dumps(obj):
    """Internal payload (no version byte), by execnet's serializer."""
    return _Serializer().save(obj)


class Channel:
    """The host's view of a channel inside data.

    Named Channel because execnet's serializer dispatches on the type name
    (save_Channel), so execnet itself writes the B opcode for it.
    """

    def __init__(self, id):
        self.id = id

    def __eq__(self, other):
        return isinstance(other, Channel) and other.id == self.id

    def __hash__(self):
        return hash(("channel", self.id))

    def __repr__(self):
        return "Channel(%d)" % self.id


class _ChannelFactory:
    def new(self, id):
        return Channel(id)


# What execnet's Unserializer needs from a "gateway" to load B opcodes.
_LOAD_CONTEXT = types.SimpleNamespace(_strconfig=(True, False), _channelfactory=_ChannelFactory())


def loads(payload):
    """Decode an internal payload with execnet itself."""
    return gateway_base.loads_internal(payload, _LOAD_CONTEXT)


class Frame(collections.namedtuple("Frame", "code channel payload")):
    @property
    def obj(self):
        return loads(self.payload)


def _real_executable(name):
    """The interpreter behind name (python3 may be a pyenv shim script)."""
    path = shutil.which(name)
    if path is None:
        return None
    out = subprocess.run([path, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True)
    return out.stdout.strip() or path


def _interpreter(variable, name, fallback=None):
    """The interpreter named by $variable if set (missing if that path does not
    exist), else name on PATH, else fallback."""
    if variable in os.environ:
        path = os.environ[variable]
        return path if os.path.exists(path) else None
    found = _real_executable(name)
    if found is None and fallback and os.path.exists(fallback):
        found = fallback
    return found


INTERPRETERS = {
    "cpython": _interpreter("EXECNET_TEST_CPYTHON", "python3"),
    "pypy": _interpreter("EXECNET_TEST_PYPY", "pypy3", "/usr/bin/pypy3"),
}


def invocation(stdio=True, **kwargs):
    args = ", ".join("%s=%r" % item for item in kwargs.items())
    if stdio:
        return "serve_stdio(%s)" % args
    return "serve_socket(clientsock%s)" % (", " + args if args else "")


def bootstrap_line(invocation_text):
    """The line the host writes: an ASCII-only string literal, as the Rust host makes it."""
    return (ascii(WORKER_SOURCE + "\n" + invocation_text + "\n") + "\n").encode("ascii")


class Host:
    """The host side of a frame stream; subclasses provide the bytes.

    A reader thread sorts incoming frames by channel id, so tests can wait
    for the frames of one channel while others arrive.
    """

    def __init__(self, write, read):
        self._write_bytes = write  # write(data): all of it
        self._read_bytes = read  # read(n): n bytes, fewer at end of stream
        self._frames = {}  # channel id -> queue of frames
        self._frames_lock = threading.Lock()
        self.all_frames = []
        self.garbage = None  # set when the stream does not parse as frames
        self.stream_ended = threading.Event()
        self._next_id = 1
        self._write_lock = threading.Lock()
        self.allow_stderr = False

    @property
    def stderr(self):
        return ""

    def _start_session(self, invocation_text):
        """Write the bootstrap line; True once the ready byte arrived."""
        self._write_bytes(bootstrap_line(invocation_text))
        byte = self._read_bytes(1)
        if byte == b"":
            self.ready = False
            return False
        assert byte == b"1", "expected the ready byte, got %r" % byte
        self.ready = True
        threading.Thread(target=self._read_frames, daemon=True).start()
        return True

    # -- frames --------------------------------------------------------------

    def _read_frames(self):
        try:
            self._parse_frames()
        finally:
            self.stream_ended.set()

    def _parse_frames(self):
        read = self._read_bytes
        while True:
            header = read(HEADER.size)
            if len(header) < HEADER.size:
                if header:
                    self.garbage = header
                return
            code, channel, size = HEADER.unpack(header)
            if not 0 <= code <= 7 or size < 0:
                self.garbage = header + read(1000)
                return
            frame = Frame(code, channel, read(size))
            self.all_frames.append(frame)
            self._inbox(channel).put(frame)

    def _inbox(self, channel):
        """The frame queue of a channel (both threads may be first to ask)."""
        with self._frames_lock:
            if channel not in self._frames:
                self._frames[channel] = queue.Queue()
            return self._frames[channel]

    def send(self, code, channel=0, payload=b""):
        with self._write_lock:
            self._write_bytes(HEADER.pack(code, channel, len(payload)) + payload)

    def send_obj(self, code, channel, obj):
        self.send(code, channel, dumps(obj))

    def send_data(self, channel, obj):
        self.send_obj(CHANNEL_DATA, channel, obj)

    def new_id(self):
        channel = self._next_id
        self._next_id += 2
        return channel

    def exec_(self, source, call_name=None, kwargs=None, file_name=None):
        """Start source remotely; return the channel id bound to it."""
        channel = self.new_id()
        self.send_obj(CHANNEL_EXEC, channel, (source, file_name, call_name, kwargs or {}))
        return channel

    def next_frame(self, channel, timeout=TIMEOUT):
        try:
            return self._inbox(channel).get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                "no frame on channel %d within %s s; frames so far: %s\nworker stderr:\n%s"
                % (channel, timeout, self.all_frames[-10:], self.stderr)
            ) from None

    def no_frame(self, channel, wait=0.3):
        """Assert that nothing arrives on channel for a while."""
        try:
            frame = self._inbox(channel).get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError("unexpected frame %r" % (frame,))

    def receive(self, channel, timeout=TIMEOUT):
        frame = self.next_frame(channel, timeout)
        if frame.code == CHANNEL_CLOSE_ERROR:
            raise AssertionError("channel %d closed with error:\n%s" % (channel, frame.obj))
        assert frame.code == CHANNEL_DATA, frame
        return frame.obj

    def expect_close(self, channel, timeout=TIMEOUT):
        frame = self.next_frame(channel, timeout)
        if frame.code == CHANNEL_CLOSE_ERROR:
            raise AssertionError("channel %d closed with error:\n%s" % (channel, frame.obj))
        assert frame.code == CHANNEL_CLOSE, frame

    def expect_close_error(self, channel, timeout=TIMEOUT):
        frame = self.next_frame(channel, timeout)
        assert frame.code == CHANNEL_CLOSE_ERROR, frame
        return frame.obj

    def run(self, source, **kwargs):
        """Execute source, collect what it sends until it closes cleanly."""
        channel = self.exec_(source, **kwargs)
        items = []
        while True:
            frame = self.next_frame(channel)
            if frame.code == CHANNEL_DATA:
                items.append(frame.obj)
                continue
            if frame.code == CHANNEL_CLOSE_ERROR:
                raise AssertionError("remote error:\n%s" % frame.obj)
            assert frame.code == CHANNEL_CLOSE, frame
            return items

    def status(self):
        channel = self.new_id()
        self.send(STATUS, channel)
        result = self.receive(channel)
        self.expect_close(channel)
        return result


class WorkerProcess(Host):
    """A worker subprocess served over its stdin/stdout, like the Rust popen host."""

    def __init__(self, python, cwd=None, proc_env=None, **kwargs):
        """Start python in cwd with proc_env added to the environment.

        The other keyword arguments go to serve_stdio(...).
        """
        self.python = python
        kwargs.setdefault("id", "gw-test")
        env = dict(os.environ)
        env.pop("EXECNET_DEBUG", None)
        env.update(proc_env or {})
        self.proc = subprocess.Popen(
            [python, "-u", "-c", BOOTSTRAP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
        )
        self._stderr_chunks = []
        self._stderr_thread = threading.Thread(target=self._collect_stderr, daemon=True)
        self._stderr_thread.start()
        super().__init__(self._write_stdin, self.proc.stdout.read)
        self._start_session(invocation(**kwargs))

    def _write_stdin(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def _collect_stderr(self):
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):
            self._stderr_chunks.append(chunk)

    @property
    def stderr(self):
        return b"".join(self._stderr_chunks).decode("utf-8", "replace")

    def wait(self, timeout=TIMEOUT):
        """The exit status, once the process ended and all its stderr is collected."""
        status = self.proc.wait(timeout)
        self._stderr_thread.join(timeout)
        return status

    def close_input(self):
        self.proc.stdin.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class SocketHost(Host):
    """The host end of a socket connection to a socket server (PROTOCOL.md section 5)."""

    def __init__(self, sock, **kwargs):
        self.sock = sock
        self._file = sock.makefile("rb")
        kwargs.setdefault("id", "gw-socket")
        super().__init__(sock.sendall, self._file.read)
        self._start_session(invocation(stdio=False, **kwargs))

    def kill(self):
        self.sock.close()


@pytest.fixture(params=sorted(INTERPRETERS))
def python(request):
    path = INTERPRETERS[request.param]
    if path is None:
        message = "interpreter %r not found: worker tests for it were NOT run" % request.param
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def spawn(python):
    """Start workers: spawn(execmodel=..., chdir=..., env=..., cwd=..., proc_env=...).

    At teardown every worker is killed, and its stderr must not show an
    internal error of the worker unless the test set allow_stderr.
    """
    workers = []

    def start(**kwargs):
        worker = WorkerProcess(python, **kwargs)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.kill()
        assert worker.garbage is None, "frame stream corrupted: %r" % worker.garbage
        if not worker.allow_stderr:
            assert "execnet worker" not in worker.stderr, worker.stderr


@pytest.fixture
def worker(spawn):
    """A ready worker with the default settings (execmodel "thread")."""
    return spawn()


@pytest.fixture(scope="session")
def worker_module():
    """worker.py loaded into this (CPython) process, for direct serializer tests."""
    return WORKER


def wait_until(predicate, timeout=TIMEOUT, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def pytest_terminal_summary(terminalreporter):
    """Say loudly, at the end of the run, which interpreters were not tested."""
    missing = sorted(name for name, path in INTERPRETERS.items() if path is None)
    if missing:
        terminalreporter.write_sep(
            "!", "worker tests NOT run for missing interpreter(s): %s" % ", ".join(missing), red=True, bold=True
        )
