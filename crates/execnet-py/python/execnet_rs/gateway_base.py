"""execnet's ``execnet.gateway_base`` names, for code written against execnet.

The channel, errors and serializer are execnet_rs's own (the Rust core); the execution
models and the thread pool below are small Python versions of execnet's, for the host
side of programs (and test suites) that use them directly. Internals of execnet's Python
worker (``Message``, ``Popen2IO``, ``ChannelFactory``, ``WorkerGateway``) have no
counterpart here: our worker is another program (crates/execnet/src/worker/worker.py).
"""

import os
import queue as _queue
import socket as _socket
import struct
import subprocess as _subprocess
import sys
import threading
import time
import traceback

# Absolute, so that this module also imports as a plain one from the package's folder,
# as execnet's own test_serializer does with its gateway_base.
from execnet_rs import (  # noqa: F401  (re-exported names)
    Channel,
    DataFormatError,
    DumpError,
    HostNotFound,
    LoadError,
    RemoteError,
    TimeoutError,
    _FIXED,
    _SIZED,
    dumps,
    loads,
)

DUMPFORMAT_VERSION = b"\x02"

MAIN_THREAD_ONLY_DEADLOCK_TEXT = (
    "concurrent remote_exec would cause deadlock for main_thread_only execmodel"
)


def bchr(n):
    return bytes([n])


class opcode:
    """The serializer's opcodes (PROTOCOL.md, section 3)."""

    BUILDTUPLE = b"@"
    BYTES = b"A"
    CHANNEL = b"B"
    FALSE = b"C"
    FLOAT = b"D"
    FROZENSET = b"E"
    INT = b"F"
    LONG = b"G"
    LONGINT = b"H"
    LONGLONG = b"I"
    NEWDICT = b"J"
    NEWLIST = b"K"
    NONE = b"L"
    PY2STRING = b"M"
    PY3STRING = b"N"
    SET = b"O"
    SETITEM = b"P"
    STOP = b"Q"
    TRUE = b"R"
    UNICODE = b"S"
    COMPLEX = b"T"


def _read_exactly(file, n):
    data = file.read(n)
    if data is None or len(data) != n:
        raise LoadError("the stream ended inside a serialized object")
    return bytes(data)


def load(file):
    """Reads one object written by dump() (or dumps()) from a binary file."""
    return _load_after(file, _read_exactly(file, 1), (False, False))


def _load_after(file, version, strconfig):
    """Reads the opcodes of one object from `file` and loads them after `version`."""
    parts = [version]
    while True:
        op = _read_exactly(file, 1)
        parts.append(op)
        if op == opcode.STOP:
            return loads(b"".join(parts), *strconfig)
        if op in _FIXED:
            parts.append(_read_exactly(file, _FIXED[op]))
        elif op in _SIZED:
            head = _read_exactly(file, 4)
            (n,) = struct.unpack("!i", head)
            if n < 0:
                raise LoadError(f"negative length {n} for opcode {op!r}")
            parts.append(head)
            parts.append(_read_exactly(file, n))
        # other opcodes have no operands; loads() refuses unknown ones


def dump(file, obj):
    """Writes `obj` in execnet's dump format 2 to a binary file."""
    file.write(dumps(obj))


def dumps_internal(obj):
    """execnet's name for the serialization without the leading version byte."""
    return dumps(obj)[1:]


class Unserializer:
    """execnet's reader of one object from a binary stream: ``Unserializer(f).load()``
    reads what dumps_internal() wrote (``load(versioned=True)``: what dumps() wrote).
    Python 2 strings load as str unless the strconfig given says otherwise."""

    py2str_as_py3str = True
    py3str_as_py2str = False

    def __init__(self, stream, channel_or_gateway=None, strconfig=None):
        self.stream = stream
        if strconfig is None and channel_or_gateway is not None:
            strconfig = getattr(channel_or_gateway, "_strconfig", None)
        if strconfig:
            self.py2str_as_py3str, self.py3str_as_py2str = strconfig

    def load(self, versioned=False):
        version = _read_exactly(self.stream, 1) if versioned else DUMPFORMAT_VERSION
        return _load_after(self.stream, version, (self.py2str_as_py3str, self.py3str_as_py2str))


# ---- tracing -------------------------------------------------------------------------------


def notrace(*msg):
    """The trace function when EXECNET_DEBUG is not set: does nothing."""


def _stderr_trace(*msg):
    sys.stderr.write("[execnet_rs %d] %s\n" % (os.getpid(), " ".join(map(str, msg))))
    sys.stderr.flush()


trace = _stderr_trace if os.environ.get("EXECNET_DEBUG") else notrace


# ---- execution models ------------------------------------------------------------------------


class ExecModel:
    """What a side uses for threads, locks and queues: ``thread`` or
    ``main_thread_only`` (execnet_rs has no eventlet or gevent model)."""

    def __init__(self, backend):
        if backend not in ("thread", "main_thread_only"):
            raise ValueError(f"execmodel {backend!r} is not supported by execnet_rs")
        self.backend = backend

    def __repr__(self):
        return f"<ExecModel {self.backend!r}>"

    def __eq__(self, other):
        return getattr(other, "backend", other) == self.backend

    def __hash__(self):
        return hash(self.backend)

    def __str__(self):
        return self.backend

    queue = _queue
    subprocess = _subprocess
    socket = _socket
    Lock = staticmethod(threading.Lock)
    RLock = staticmethod(threading.RLock)
    Event = staticmethod(threading.Event)
    sleep = staticmethod(time.sleep)
    get_ident = staticmethod(threading.get_ident)

    @staticmethod
    def start(func, args=()):
        thread = threading.Thread(target=func, args=args, daemon=True)
        thread.start()
        return thread

    @staticmethod
    def fdopen(fd, mode, bufsize=1, closefd=True):
        return os.fdopen(fd, mode, bufsize, encoding="utf-8", closefd=closefd)

    @staticmethod
    def _get_threading():
        return threading


_MODELS = {}


def get_execmodel(backend):
    """The ExecModel named `backend` (an ExecModel is returned as it is)."""
    if isinstance(backend, ExecModel):
        return backend
    if backend not in _MODELS:
        _MODELS[backend] = ExecModel(backend)
    return _MODELS[backend]


# ---- a thread pool for the host side -----------------------------------------------------


class Reply:
    """The result of a WorkerPool.spawn(): get() it, or waitfinish()."""

    def __init__(self, task):
        self.task = task
        self._done = threading.Event()
        self.running = True
        self._result = None
        self._excinfo = None

    def run(self):
        func, args, kwargs = self.task
        try:
            self._result = func(*args, **kwargs)
        except BaseException:
            self._excinfo = sys.exc_info()
        finally:
            self.running = False
            self._done.set()

    def waitfinish(self, timeout=None):
        if not self._done.wait(timeout):
            raise OSError(f"timeout waiting for {self.task!r}")

    def get(self, timeout=None):
        self.waitfinish(timeout)
        if self._excinfo is not None:
            raise self._excinfo[1].with_traceback(self._excinfo[2])
        return self._result


class WorkerPool:
    """Runs functions in threads and hands back a Reply for each; with
    ``hasprimary=True`` one thread may offer itself (integrate_as_primary_thread) to
    run the spawned functions, one at a time, until trigger_shutdown()."""

    def __init__(self, execmodel, hasprimary=False):
        self.execmodel = get_execmodel(execmodel)
        self._lock = threading.Lock()
        self._running = set()
        self._shuttingdown = False
        self._all_done = threading.Condition(self._lock)
        self._primary = _queue.SimpleQueue() if hasprimary else None
        self._primary_busy = False

    def active_count(self):
        return len(self._running)

    def spawn(self, func, *args, **kwargs):
        """Runs func(*args, **kwargs) in a thread (or the primary thread, when it is
        free); returns its Reply."""
        reply = Reply((func, args, kwargs))
        with self._lock:
            if self._shuttingdown:
                raise ValueError("pool is shutting down")
            self._running.add(reply)
            to_primary = self._primary is not None and not self._primary_busy
            if to_primary:
                self._primary_busy = True
        if to_primary:
            self._primary.put(reply)
        else:
            self.execmodel.start(self._perform, (reply,))
        return reply

    def _perform(self, reply):
        reply.run()
        with self._lock:
            self._running.discard(reply)
            if not self._running:
                self._all_done.notify_all()

    def integrate_as_primary_thread(self):
        """Runs spawned functions in the calling thread until trigger_shutdown()."""
        if self._primary is None:
            raise ValueError("the pool was made without hasprimary=True")
        while True:
            reply = self._primary.get()
            if reply is None:
                return
            self._perform(reply)
            with self._lock:
                self._primary_busy = False
                if self._shuttingdown:
                    return

    def trigger_shutdown(self):
        with self._lock:
            self._shuttingdown = True
        if self._primary is not None:
            self._primary.put(None)

    def waitall(self, timeout=None):
        """True when every spawned function has finished (within `timeout`)."""
        with self._lock:
            return self._all_done.wait_for(lambda: not self._running, timeout)

    def terminate(self, timeout=None):
        self.trigger_shutdown()
        return self.waitall(timeout=timeout)


def geterrortext(exc, format_exception=traceback.format_exception):
    """The text of an exception as a remote error carries it."""
    try:
        return "".join(format_exception(type(exc), exc, exc.__traceback__))
    except Exception as e:  # a broken __str__ and the like
        return f"{type(exc).__name__}: <unprintable: {e!r}>"


# ---- execnet's worker internals: named, not provided ------------------------------------------


def _not_provided(name, what):
    def refuse(*args, **kwargs):
        raise NotImplementedError(
            f"execnet_rs has no {name} ({what}); execnet_rs's worker is "
            "crates/execnet/src/worker/worker.py and its host is the Rust core"
        )

    return type(name, (), {"__new__": lambda cls, *a, **k: refuse(), "__doc__": f"Not provided: {what}."})


# Importable, so that modules which import them still load; using one says why it
# cannot be used.
ChannelFactory = _not_provided("ChannelFactory", "execnet's Python channel table")
Message = _not_provided("Message", "execnet's Python frame class; the frames are PROTOCOL.md's, read in Rust")
Popen2IO = _not_provided("Popen2IO", "execnet's Python pipe I/O")
WorkerGateway = _not_provided("WorkerGateway", "execnet's Python worker")


def init_popen_io(execmodel):
    raise NotImplementedError("execnet_rs has no init_popen_io (execnet's Python worker start-up)")
