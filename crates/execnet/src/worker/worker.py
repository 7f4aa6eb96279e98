"""The remote half of execnet-rs: a worker that serves one host over a byte stream.

The Rust host ships this file, unchanged, to a bare Python interpreter (3.8 or
newer, CPython or PyPy; standard library only).  The interpreter was started as

    PYTHON -u -c "import sys;exec(eval(sys.stdin.readline()))"

and the host sends one line: a string literal (as repr() or ascii() write it)
of <this source> + "\\n" + <invocation> + "\\n", where <invocation> is one of

    serve_stdio(id='gw0', execmodel='thread', chdir=None, nice=None, env=None)
    serve_socket(clientsock, id='gw0', execmodel='thread', chdir=None, nice=None, env=None)

so executing this file must only define things; the invocation starts serving.
The worker then writes the ready byte b"1" and speaks the frames of
PROTOCOL.md until the host sends GATEWAY_TERMINATE or its input ends.  The
host must send nothing after the line until it has read the ready byte: bytes
that arrive early may be swallowed by the buffered sys.stdin of the one-liner.

Reading guide, top to bottom:

 1. wire constants, thread primitives without the threading module, and
    tracing (EXECNET_DEBUG)
 2. the serializer: dumps() and loads() for the object format of PROTOCOL.md 3
 3. Channel, the object user code sees as `channel`, and its file wrappers
 4. the two execution models (a thread per execution, or the main thread only)
 5. WorkerGateway: the channel table, the frame reader and remote execution
 6. serve_stdio() and serve_socket(), the entry points

Threads: one thread reads frames and handles them in order (in execmodel
"thread" the main thread, in "main_thread_only" a background thread, leaving
the main thread to run the executions).  Executions, user threads and the
reader all send; a lock keeps each frame in one piece on the output.  One
re-entrant lock, WorkerGateway._lock, guards the channel table and every
channel's state; channel callbacks run while it is held, so they see items in
order and never race with a close.
"""

import builtins
import io
import os
import select
import struct
import sys
import time
import _thread
import _weakref

try:  # the C queue, without queue.py and heapq (~1 ms of every start-up)
    from _queue import Empty, SimpleQueue
except ImportError:  # PyPy
    from queue import Empty, SimpleQueue

# traceback is imported where a traceback is formatted: it costs ~2 ms of every
# start-up and most workers never need it.  threading (with functools and
# collections, ~3 ms) is not imported either: the worker runs on _thread's
# locks and threads, and the few places that need more import it when they do
# (see _ThreadingImport for how user code's first `import threading` in an
# execution thread still finds the right main thread).


# --------------------------------------------------------------------------
# 1. Wire constants, thread primitives and tracing
# --------------------------------------------------------------------------

# Message codes (PROTOCOL.md section 2).
STATUS = 0
RECONFIGURE = 1
GATEWAY_TERMINATE = 2
CHANNEL_EXEC = 3
CHANNEL_DATA = 4
CHANNEL_CLOSE = 5
CHANNEL_CLOSE_ERROR = 6
CHANNEL_LAST_MESSAGE = 7

_MESSAGE_NAMES = {
    STATUS: "STATUS",
    RECONFIGURE: "RECONFIGURE",
    GATEWAY_TERMINATE: "GATEWAY_TERMINATE",
    CHANNEL_EXEC: "CHANNEL_EXEC",
    CHANNEL_DATA: "CHANNEL_DATA",
    CHANNEL_CLOSE: "CHANNEL_CLOSE",
    CHANNEL_CLOSE_ERROR: "CHANNEL_CLOSE_ERROR",
    CHANNEL_LAST_MESSAGE: "CHANNEL_LAST_MESSAGE",
}

# Frame header: code (i8), channel id (i32), payload length (i32), big-endian.
_HEADER = struct.Struct("!bii")
_HEADER_SIZE = _HEADER.size

_I32_MIN = -(2 ** 31)
_I32_MAX = 2 ** 31 - 1

# How long running executions may still finish once the host has gone.
_SHUTDOWN_GRACE_SECONDS = 0.5
# How long interrupted executions (KeyboardInterrupt, after the grace) may take
# to unwind, their finally blocks included.
_SHUTDOWN_INTERRUPT_SECONDS = 0.25
# When the shutdown is finished regardless (should it get stuck, say on a
# lock a blocked user callback holds), so the worker never outlives its host.
_SHUTDOWN_DEADLINE_SECONDS = 0.8

# Idle execution threads kept for reuse (execmodel "thread").
_IDLE_THREADS_KEPT = 8

# Buffer size for reading frames.
_READ_BUFFER_SIZE = 64 * 1024

# Reading (see WorkerGateway._read_for): while receivers read frames for
# themselves, the reading thread checks back this often.
_DEFER_SECONDS = 0.002
# The frames a receiver handles itself when they are for its channel.
_RECEIVER_CODES = frozenset((CHANNEL_DATA, CHANNEL_CLOSE, CHANNEL_CLOSE_ERROR, CHANNEL_LAST_MESSAGE))

# Sending (see WorkerGateway._write_frame): a frame sent less than this long
# after the previous one is queued and written with the frames around it.
_COALESCE_SECONDS = 25e-6
# A frame of at least this many bytes is written from its parts (os.writev),
# sparing a copy of its payload.
_WRITE_PARTS_AT = 64 * 1024

# How long the flusher lets queued frames gather before it writes them.
_FLUSH_DELAY_SECONDS = 0.001
# The most bytes that wait in that queue.
_COALESCE_LIMIT = 256 * 1024

# A write of at least this many bytes to a pipe grows the pipe from the
# kernel's default 64 KiB to _BIG_PIPE_BYTES (once): fewer wake-ups per
# megabyte.  Small-message gateways leave their pipes alone: the kernel counts
# pipe capacity against a per-user budget.
_GROW_PIPE_AT = 256 * 1024
_BIG_PIPE_BYTES = 1024 * 1024

_monotonic = time.monotonic


# --------------------------------------------------------------------------
# 1b. Threads without the threading module
# --------------------------------------------------------------------------

# The main thread: the worker's code runs there (the bootstrap, or the socket
# server's process), unless threading was imported before and knows better.
if "threading" in sys.modules:
    _MAIN_THREAD = sys.modules["threading"].main_thread().ident
else:
    _MAIN_THREAD = getattr(_thread, "_get_main_thread_ident", _thread.get_ident)()
_MAIN_NATIVE_ID = _thread.get_native_id() if _MAIN_THREAD == _thread.get_ident() else None
_TIMEOUT_MAX = _thread.TIMEOUT_MAX


def _lock_timeout(timeout):
    """A timeout in seconds as _thread locks take it (-1: for ever)."""
    if timeout is None:
        return -1
    return min(max(timeout, 0), _TIMEOUT_MAX)


class _Event:
    """threading.Event's set(), is_set() and wait(), on _thread locks.

    Each waiter waits on a lock of its own, which set() releases.
    """

    __slots__ = ("_flag", "_lock", "_waiters")

    def __init__(self):
        self._flag = False
        self._lock = _thread.allocate_lock()
        self._waiters = []

    def is_set(self):
        return self._flag

    def set(self):
        with self._lock:
            self._flag = True
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.release()

    def wait(self, timeout=None):
        """True once set; False when timeout seconds passed first."""
        if self._flag:
            return True
        waiter = _thread.allocate_lock()
        waiter.acquire()
        with self._lock:
            if self._flag:
                return True
            self._waiters.append(waiter)
        if not waiter.acquire(True, _lock_timeout(timeout)):
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self._flag


def _remove_dead_py(refs, key):
    """_weakref._remove_dead_weakref, for interpreters without it (PyPy)."""
    ref = refs.get(key)
    if ref is not None and ref() is None:
        refs.pop(key, None)


_remove_dead_weakref = getattr(_weakref, "_remove_dead_weakref", _remove_dead_py)


class _WeakValues:
    """What the channel table needs of weakref.WeakValueDictionary, on _weakref
    (weakref.py and _weakrefset cost ~1 ms of every start-up).

    A dead entry's callback removes its key only while the entry there is still a
    dead one: on PyPy the callback may run long after the object died, when a new
    channel with the same id may have taken the place.
    """

    __slots__ = ("_refs",)

    def __init__(self):
        self._refs = {}

    def __setitem__(self, key, value):
        refs = self._refs
        refs[key] = _weakref.ref(value, lambda _, key=key: _remove_dead_weakref(refs, key))

    def __delitem__(self, key):
        del self._refs[key]

    def __len__(self):
        # live ones only: PyPy may run a dead entry's callback some time after the GC
        return sum(1 for ref in list(self._refs.values()) if ref() is not None)

    def get(self, key):
        ref = self._refs.get(key)
        return None if ref is None else ref()

    def values(self):
        """The live values, as a list (safe to iterate while the table changes)."""
        return [value for value in (ref() for ref in list(self._refs.values())) if value is not None]


class _ThreadingImport:
    """Lets user code import threading first from an execution thread.

    threading takes the thread that imports it for the main thread (up to
    Python 3.12).  As the worker does not import it, an execution's
    `import threading` (or of asyncio, logging, concurrent.futures...) would
    make that thread "main": current_thread() is main_thread() would hold
    there, and asyncio.run() would try to install its SIGINT handler from a
    thread that cannot have one.  This finder, first on sys.meta_path, hands
    that import to the usual finders and, once threading's code ran, gives its
    main-thread record the real main thread's ident, native id and a lock held
    until threading's shutdown; the importing thread becomes an ordinary
    (dummy) thread of threading's.
    """

    @classmethod
    def install(cls):
        if "threading" not in sys.modules and cls not in sys.meta_path:
            sys.meta_path.insert(0, cls)

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "threading" or _thread.get_ident() == _MAIN_THREAD:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is cls or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                spec.loader = cls(spec.loader)
                return spec
        return None

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _repair_main_thread(module)


def _repair_main_thread(threading):
    """Make threading's main-thread record describe the real main thread."""
    main = threading._main_thread
    if _MAIN_NATIVE_ID is not None and hasattr(main, "_native_id"):
        main._native_id = _MAIN_NATIVE_ID
    if main.ident == _MAIN_THREAD:
        return  # Python 3.13 and later find the main thread themselves
    with threading._active_limbo_lock:
        threading._active.pop(main.ident, None)
        old = getattr(main, "_tstate_lock", None)
        shutdown_locks = getattr(threading, "_shutdown_locks", None)
        if old is not None and shutdown_locks is not None:
            # It is released when the importing thread ends, which an idle
            # execution thread never does: threading's exit would wait on it.
            with threading._shutdown_locks_lock:
                shutdown_locks.discard(old)
        if old is not None:
            alive = _thread.allocate_lock()  # threading._shutdown() releases it
            alive.acquire()
            main._tstate_lock = alive
        main._ident = _MAIN_THREAD
        threading._active[_MAIN_THREAD] = main


def _message_name(code):
    return _MESSAGE_NAMES.get(code, "UNKNOWN(%d)" % code)


def _make_tracer(gateway_id):
    """Return a function writing one trace line to stderr, or None when tracing is off.

    Tracing is on when the environment variable EXECNET_DEBUG is set to a
    non-empty value (read after the host's env= settings were applied).  When
    it is off, the frame paths are not wrapped at all, so they cost nothing.
    """
    if not os.environ.get("EXECNET_DEBUG"):
        return None
    # "[PID] message", the layout of execnet's trace lines
    prefix = "[%d] " % os.getpid()
    lock = _thread.allocate_lock()

    def trace(*parts):
        line = prefix + " ".join(str(part) for part in parts) + "\n"
        with lock:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    return trace


def _no_trace(*parts):
    """Stand-in tracer for rare events when tracing is off."""


# --------------------------------------------------------------------------
# 2. The serializer (PROTOCOL.md section 3)
# --------------------------------------------------------------------------
#
# Payloads inside frames start directly with the first opcode and end with
# STOP ("Q"); the public execnet form adds a leading version byte 0x02, which
# never travels in frames.  dumps() dispatches on the exact type of each
# object (a dict lookup), so subclasses of the supported types are refused
# just like any other type.  loads() interprets the stack machine over a
# bytes object with a moving offset, and checks every length against the
# data actually present before using it.


class DataFormatError(Exception):
    """Base class of the serialization errors."""


class DumpError(DataFormatError):
    """An object (or something inside it) cannot be serialized."""


class LoadError(DataFormatError):
    """A payload is not a well-formed serialized object."""


class Op:
    """The opcodes of the object format, by name (the host's table is wire/opcode.rs).

    G, I, M and S are legacy (Python 2 era) opcodes: loaded, never written.
    """

    BUILDTUPLE = 0x40  # @
    BYTES = 0x41  # A
    CHANNEL = 0x42  # B
    FALSE = 0x43  # C
    FLOAT = 0x44  # D
    FROZENSET = 0x45  # E
    INT = 0x46  # F
    LONG = 0x47  # G
    LONGINT = 0x48  # H
    LONGLONG = 0x49  # I
    NEWDICT = 0x4A  # J
    NEWLIST = 0x4B  # K
    NONE = 0x4C  # L
    PY2STRING = 0x4D  # M
    PY3STRING = 0x4E  # N
    SET = 0x4F  # O
    SETITEM = 0x50  # P
    STOP = 0x51  # Q
    TRUE = 0x52  # R
    UNICODE = 0x53  # S
    COMPLEX = 0x54  # T


# An opcode byte followed by one operand.
_OP_I32 = struct.Struct("!Bi")
_OP_F64 = struct.Struct("!Bd")
_OP_F64_F64 = struct.Struct("!Bdd")
# Operands read by loads().
_I32 = struct.Struct("!i")
_F64 = struct.Struct("!d")
_F64_F64 = struct.Struct("!dd")

# The opcodes without operands, as the bytes dumps() appends.
_STOP = bytes((Op.STOP,))
_SETITEM = bytes((Op.SETITEM,))
_NONE = bytes((Op.NONE,))
_TRUE = bytes((Op.TRUE,))
_FALSE = bytes((Op.FALSE,))
_NEWDICT = bytes((Op.NEWDICT,))


def dumps(obj):
    """Serialize obj to an internal payload (no version byte), ending with STOP."""
    out = []
    _dump_payload(out, obj)
    return b"".join(out)


def _dump_payload(out, obj):
    """Append the serialized obj and STOP to the list of byte strings out."""
    try:
        _dump(out, obj)
    except RecursionError:
        raise DumpError("can't serialize: object is nested too deeply (or contains itself)") from None
    out.append(_STOP)


def _dump(out, obj):
    dumper = _DUMPERS.get(type(obj))
    if dumper is None:
        raise DumpError("can't serialize %s" % type(obj))
    dumper(out, obj)


def _dump_sized(out, opcode, data):
    """An opcode, the i32 length of data, then data."""
    if len(data) > _I32_MAX:
        raise DumpError("can't serialize: %d bytes is too long" % len(data))
    out.append(_OP_I32.pack(opcode, len(data)))
    out.append(data)


def _dump_count(opcode, count):
    """An opcode with an element count operand."""
    if count > _I32_MAX:
        raise DumpError("can't serialize: %d elements is too many" % count)
    return _OP_I32.pack(opcode, count)


def _dump_none(out, obj):
    out.append(_NONE)


def _dump_bool(out, obj):
    out.append(_TRUE if obj else _FALSE)


def _dump_int(out, obj):
    if _I32_MIN <= obj <= _I32_MAX:
        out.append(_OP_I32.pack(Op.INT, obj))  # fits 32 bits
        return
    try:
        digits = str(obj).encode("ascii")
    except ValueError as exc:  # more digits than int/str conversion allows
        raise DumpError("can't serialize int: %s" % exc) from None
    _dump_sized(out, Op.LONGINT, digits)  # decimal text


def _dump_float(out, obj):
    out.append(_OP_F64.pack(Op.FLOAT, obj))


def _dump_complex(out, obj):
    out.append(_OP_F64_F64.pack(Op.COMPLEX, obj.real, obj.imag))


def _dump_str(out, obj):
    try:
        data = obj.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DumpError("can't serialize str: not UTF-8 encodable (%s)" % exc) from None
    _dump_sized(out, Op.PY3STRING, data)


def _dump_bytes(out, obj):
    _dump_sized(out, Op.BYTES, obj)


def _dump_list(out, obj):
    # NEWLIST n, then for each element: INT index, element, SETITEM.
    out.append(_dump_count(Op.NEWLIST, len(obj)))
    pack = _OP_I32.pack
    int_op = Op.INT
    for index, item in enumerate(obj):
        out.append(pack(int_op, index))
        _dump(out, item)
        out.append(_SETITEM)


def _dump_dict(out, obj):
    # NEWDICT, then for each entry: key, value, SETITEM.
    out.append(_NEWDICT)
    for key, value in obj.items():
        _dump(out, key)
        _dump(out, value)
        out.append(_SETITEM)


def _dump_tuple(out, obj):
    for item in obj:
        _dump(out, item)
    out.append(_dump_count(Op.BUILDTUPLE, len(obj)))


def _dump_set(out, obj):
    for item in obj:
        _dump(out, item)
    out.append(_dump_count(Op.SET, len(obj)))


def _dump_frozenset(out, obj):
    for item in obj:
        _dump(out, item)
    out.append(_dump_count(Op.FROZENSET, len(obj)))


def _dump_channel(out, obj):
    out.append(_OP_I32.pack(Op.CHANNEL, obj.id))


# Exact type -> dumper; Channel is added once the class exists.
_DUMPERS = {
    type(None): _dump_none,
    bool: _dump_bool,
    int: _dump_int,
    float: _dump_float,
    complex: _dump_complex,
    str: _dump_str,
    bytes: _dump_bytes,
    list: _dump_list,
    dict: _dump_dict,
    tuple: _dump_tuple,
    set: _dump_set,
    frozenset: _dump_frozenset,
}


def loads(data, gateway=None):
    """Rebuild the object of an internal payload (bytes, no version byte).

    Channels (opcode B) are looked up on, or created by, gateway; without a
    gateway a channel in the data is an error.  Every malformation raises
    LoadError.
    """
    stack = []
    pos = 0
    end = len(data)
    try:
        while pos < end:
            opcode = data[pos]
            pos += 1
            if opcode == Op.STOP:
                if len(stack) != 1:
                    raise LoadError("STOP with %d objects on the stack, expected 1" % len(stack))
                if pos != end:
                    raise LoadError("%d stray bytes after STOP" % (end - pos))
                return stack[0]
            loader = _LOADERS.get(opcode)
            if loader is None:
                raise LoadError("unknown opcode 0x%02x at offset %d" % (opcode, pos - 1))
            pos = loader(data, pos, stack, gateway)
    except struct.error:
        raise LoadError("truncated data: an operand runs past the end") from None
    except (TypeError, ValueError) as exc:  # unhashable keys, bad UTF-8, bad digits
        raise LoadError("malformed data: %s" % exc) from None
    raise LoadError("truncated data: no STOP opcode")


# Each loader takes (data, pos, stack, gateway) with pos just after its
# opcode, pushes what it builds onto stack and returns the new position.


def _read_sized(data, pos):
    """The length-prefixed byte string at pos, and the position after it."""
    size = _I32.unpack_from(data, pos)[0]
    pos += 4
    if size < 0:
        raise LoadError("negative length %d" % size)
    if pos + size > len(data):
        raise LoadError("truncated data: length %d runs past the end" % size)
    return data[pos:pos + size], pos + size


def _load_none(data, pos, stack, gateway):
    stack.append(None)
    return pos


def _load_true(data, pos, stack, gateway):
    stack.append(True)
    return pos


def _load_false(data, pos, stack, gateway):
    stack.append(False)
    return pos


def _load_int(data, pos, stack, gateway):
    stack.append(_I32.unpack_from(data, pos)[0])
    return pos + 4


def _load_longint(data, pos, stack, gateway):
    digits, pos = _read_sized(data, pos)
    unsigned = digits[1:] if digits[:1] == b"-" else digits
    if not unsigned.isdigit():  # bytes.isdigit(): ASCII digits only
        raise LoadError("bad integer text %r" % digits[:40])
    stack.append(int(digits))
    return pos


def _load_float(data, pos, stack, gateway):
    stack.append(_F64.unpack_from(data, pos)[0])
    return pos + 8


def _load_complex(data, pos, stack, gateway):
    real, imag = _F64_F64.unpack_from(data, pos)
    stack.append(complex(real, imag))
    return pos + 16


def _load_str(data, pos, stack, gateway):
    raw, pos = _read_sized(data, pos)
    stack.append(raw.decode("utf-8"))
    return pos


def _load_py2str(data, pos, stack, gateway):
    raw, pos = _read_sized(data, pos)
    stack.append(raw.decode("latin-1"))
    return pos


def _load_bytes(data, pos, stack, gateway):
    raw, pos = _read_sized(data, pos)
    stack.append(bytes(raw))
    return pos


def _load_newlist(data, pos, stack, gateway):
    size = _I32.unpack_from(data, pos)[0]
    pos += 4
    # Every element needs several bytes of data, so the rest of the payload
    # bounds a truthful length; anything larger is refused before allocating.
    if size < 0 or size > len(data) - pos:
        raise LoadError("bad list length %d" % size)
    stack.append([None] * size)
    return pos


def _load_newdict(data, pos, stack, gateway):
    stack.append({})
    return pos


def _load_setitem(data, pos, stack, gateway):
    if len(stack) < 3:
        raise LoadError("SETITEM needs a container, a key and a value on the stack")
    value = stack.pop()
    key = stack.pop()
    target = stack[-1]
    if type(target) is list:
        if type(key) is not int or not 0 <= key < len(target):
            raise LoadError("bad list index %r for a list of %d" % (key, len(target)))
    elif type(target) is not dict:
        raise LoadError("SETITEM into a %s" % type(target).__name__)
    target[key] = value
    return pos


def _collection_loader(kind):
    def load_collection(data, pos, stack, gateway):
        count = _I32.unpack_from(data, pos)[0]
        if count < 0 or count > len(stack):
            raise LoadError("%s of %d items, but %d on the stack" % (kind.__name__, count, len(stack)))
        start = len(stack) - count
        items = kind(stack[start:])
        del stack[start:]
        stack.append(items)
        return pos + 4

    return load_collection


def _load_channel(data, pos, stack, gateway):
    channel_id = _I32.unpack_from(data, pos)[0]
    if gateway is None:
        raise LoadError("a channel in the data, but no gateway to attach it to")
    stack.append(gateway._channel_from_data(channel_id))
    return pos + 4


# Opcode byte -> loader.  G, I, M and S are legacy (Python 2 era) opcodes.
_LOADERS = {
    Op.BUILDTUPLE: _collection_loader(tuple),
    Op.BYTES: _load_bytes,
    Op.CHANNEL: _load_channel,
    Op.FALSE: _load_false,
    Op.FLOAT: _load_float,
    Op.FROZENSET: _collection_loader(frozenset),
    Op.INT: _load_int,
    Op.LONG: _load_int,
    Op.LONGINT: _load_longint,
    Op.LONGLONG: _load_longint,
    Op.NEWDICT: _load_newdict,
    Op.NEWLIST: _load_newlist,
    Op.NONE: _load_none,
    Op.PY2STRING: _load_py2str,  # latin-1
    Op.PY3STRING: _load_str,
    Op.SET: _collection_loader(set),
    Op.SETITEM: _load_setitem,
    Op.TRUE: _load_true,
    Op.UNICODE: _load_str,
    Op.COMPLEX: _load_complex,
}


# --------------------------------------------------------------------------
# 3. Channels
# --------------------------------------------------------------------------


class RemoteError(Exception):
    """The peer closed the channel with an error; str() is its text (a traceback)."""

    def __init__(self, formatted):
        super().__init__(formatted)
        self.formatted = formatted

    def __str__(self):
        return self.formatted

    def __repr__(self):
        return "%s: %s" % (type(self).__name__, self.formatted)


class TimeoutError(builtins.TimeoutError):
    """receive() or waitclose() gave up after its timeout.

    A subclass of the built-in TimeoutError (and so of OSError/IOError), so
    user code may catch either channel.TimeoutError or TimeoutError.
    """


# Queued after a channel's last item: receivers that reach it stop.
_END = object()
# Default of setcallback(): no end marker wanted.
_NO_ENDMARKER = object()
# _finish_exec: an execution the shutdown interrupted; its channel is left as it is.
_LEAVE_OPEN = object()


class Channel:
    """One end of a channel between host and worker, as user code sees it.

    State, all changed by the gateway under its lock:

      _closed          this side may send no more (it closed, sent LAST_MESSAGE,
                       or the peer closed)
      _owes_close      the peer still expects CLOSE or CLOSE_ERROR from this
                       side (false once sent, or once the peer closed)
      _receive_closed  event: no more items will arrive (the peer closed or
                       sent LAST_MESSAGE, this side closed, or the gateway ended)
      _items           queue of received items, ended by _END; None while a
                       callback takes the items instead
      _callback        (function, endmarker) or None
      _error           exception raised to receivers once the items are drained
    """

    RemoteError = RemoteError
    TimeoutError = TimeoutError

    def __init__(self, gateway, id):
        self.gateway = gateway
        self.id = id
        self._closed = False
        self._owes_close = True
        self._receive_closed = _Event()
        self._items = SimpleQueue()
        self._callback = None
        self._error = None
        self._executing = False  # the channel of a running execution: it closes at the end

    def __repr__(self):
        return "<Channel id=%d %s>" % (self.id, "closed" if self._closed else "open")

    def isclosed(self):
        """True once this side may send no more (items may still be queued)."""
        return self._closed

    def send(self, item):
        """Send item to the other side; it must be made of serializable types."""
        if self._closed:
            raise OSError("cannot send to %r: the channel is closed" % self)
        self.gateway._send_object(CHANNEL_DATA, self.id, item)

    def receive(self, timeout=None):
        """Return the next item, waiting at most timeout seconds (None: forever).

        Raises channel.TimeoutError on timeout, and once the channel is closed
        and drained EOFError, or channel.RemoteError when the peer closed it
        with an error.
        """
        items = self._items
        if items is None:
            raise OSError("cannot receive() on %r: a callback takes its items" % self)
        gateway = self.gateway
        # A send that follows a receive answers it: not a burst (see _write_frame).
        gateway._last_send = 0.0
        if items.empty():  # about to wait for the host: what we sent must reach it
            gateway._flush_pending()
            if timeout is None:
                while items.empty() and gateway._read_for(self):
                    pass
            else:
                gateway._wake_reader()  # its wait is bounded: make sure someone reads
        waiting = gateway._waiting  # a set: add and discard are atomic
        waiting.add(self)
        try:
            item = items.get(timeout=timeout)
        except Empty:
            raise self.TimeoutError("no item after %r seconds" % timeout) from None
        finally:
            waiting.discard(self)
        if item is _END:
            items.put(_END)  # for the next receiver
            self._raise_end()
        return item

    def _raise_end(self):
        if self._error is not None:
            raise self._error.with_traceback(None)
        raise EOFError("%r is closed" % self)

    def __iter__(self):
        return self

    def __next__(self):
        """Iteration receives items until the channel is closed."""
        try:
            return self.receive()
        except EOFError:
            raise StopIteration from None

    next = __next__

    def waitclose(self, timeout=None):
        """Wait until no more items can arrive; raise RemoteError if the peer failed."""
        self.gateway._flush_pending()
        if not self._receive_closed.wait(timeout):
            raise self.TimeoutError("%r still open after %r seconds" % (self, timeout))
        if self._error is not None:
            raise self._error.with_traceback(None)

    def close(self, error=None):
        """Close the channel; with error (a text), the peer sees a RemoteError.

        Local receivers see EOFError once they drained the queued items.
        Closing an already closed channel does nothing.  The channel of a
        running execution closes when the execution ends: closing it earlier
        is an error, as in execnet.
        """
        if self._executing:
            raise OSError("cannot explicitly close channel within remote_exec")
        self.gateway._close_channel(self, error)

    def setcallback(self, callback, endmarker=_NO_ENDMARKER):
        """Hand every received item to callback(item) instead of queueing it.

        Items already queued are delivered first, right here.  Later items
        are delivered in the thread that reads frames; a callback that raises
        closes the channel with the traceback.  If endmarker is given,
        callback(endmarker) is called once the channel closes.
        """
        gateway = self.gateway
        with gateway._lock:
            items = self._items
            if items is None:
                raise OSError("%r has a callback already" % self)
            self._items = None
            while True:
                try:
                    item = items.get_nowait()
                except Empty:
                    break
                if item is _END:
                    break
                callback(item)
            if self._receive_closed.is_set():
                if endmarker is not _NO_ENDMARKER:
                    callback(endmarker)
            else:
                self._callback = (callback, endmarker)
                gateway._with_callback[self.id] = self  # the callback outlives user's hold

    def __del__(self):
        # The last reference went while the host may still wait for this side (it
        # never closed): close it, as execnet's channels do when freed.
        if self._owes_close and not self._closed:
            if self.id % 2:
                self.gateway._retired.add(self.id)  # frames for it are dropped from now on
            try:
                _start_thread(self.gateway._close_freed, self.id)
            except Exception:  # interpreter shutdown: no threads any more
                pass

    def makefile(self, mode="w", proxyclose=False):
        """A file-like view: "w" sends what is written, "r" reads str/bytes items.

        With proxyclose, closing the file closes the channel.
        """
        if mode == "w":
            return ChannelFileWriter(self, proxyclose)
        if mode == "r":
            return ChannelFileReader(self, proxyclose)
        raise ValueError("makefile() mode must be 'r' or 'w', not %r" % (mode,))

    def reconfigure(self, py2str_as_py3str=True, py3str_as_py2str=False):
        """Accepted for execnet compatibility; strings are always str here."""


_DUMPERS[Channel] = _dump_channel


class _ChannelFile:
    def __init__(self, channel, proxyclose):
        self.channel = channel
        self._proxyclose = proxyclose

    def isatty(self):
        return False

    def close(self):
        if self._proxyclose:
            self.channel.close()

    def __repr__(self):
        state = "closed" if self.channel.isclosed() else "open"
        return "<%s channel=%d %s>" % (type(self).__name__, self.channel.id, state)


class ChannelFileWriter(_ChannelFile):
    """makefile("w"): each write() sends its data (str or bytes) as one item."""

    def write(self, data):
        self.channel.send(data)
        return len(data)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass


class ChannelFileReader(_ChannelFile):
    """makefile("r"): reads the str or bytes items received, as one stream."""

    def __init__(self, channel, proxyclose):
        super().__init__(channel, proxyclose)
        self._buffer = None  # str or bytes, after the first item
        self._at_end = False

    def _receive_more(self):
        """Append the next item to the buffer; False once the channel ended."""
        if self._at_end:
            return False
        try:
            item = self.channel.receive()
        except EOFError:
            self._at_end = True
            return False
        self._buffer = item if self._buffer is None else self._buffer + item
        return True

    def _take(self, size):
        buffer = self._buffer
        if buffer is None:
            return ""
        self._buffer = buffer[size:]
        return buffer[:size]

    def read(self, size=-1):
        """Up to size characters/bytes (all until the channel closes if size < 0)."""
        if size is None or size < 0:
            while self._receive_more():
                pass
            return self._take(len(self._buffer or ""))
        while (self._buffer is None or len(self._buffer) < size) and self._receive_more():
            pass
        return self._take(size)

    def readline(self):
        """The next line including its newline; the rest at the end; empty after."""
        searched = 0
        while True:
            buffer = self._buffer
            if buffer is not None:
                index = buffer.find("\n" if isinstance(buffer, str) else b"\n", searched)
                if index >= 0:
                    return self._take(index + 1)
                searched = len(buffer)
            if not self._receive_more():
                return self._take(len(self._buffer or ""))

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line


# --------------------------------------------------------------------------
# 4. Execution models
# --------------------------------------------------------------------------


class ExecModel:
    """What user code sees as channel.gateway.execmodel: just the backend name."""

    def __init__(self, backend):
        self.backend = backend

    def __repr__(self):
        return "<ExecModel %s>" % self.backend

    # The thread primitives execnet's ExecModel offers; code written for execnet (such as
    # pytest-xdist's worker side) builds its locks and queues through them.
    Lock = staticmethod(_thread.allocate_lock)  # what threading.Lock is
    RLock = staticmethod(_thread.RLock)  # threading.RLock's C implementation
    get_ident = staticmethod(_thread.get_ident)

    @staticmethod
    def Event():
        import threading

        return threading.Event()

    @staticmethod
    def Semaphore(value=1):
        import threading

        return threading.Semaphore(value)

    @property
    def queue(self):
        import queue  # on demand: few workers need it

        return queue

    @staticmethod
    def sleep(delay):
        time.sleep(delay)


_EXECMODELS = ("thread", "main_thread_only")


class _ThreadPool:
    """execmodel "thread": each call runs in a thread of its own.

    A thread that finished a call waits for the next one, up to
    _IDLE_THREADS_KEPT idle threads, so a stream of executions does not pay
    for a new thread each time.  Threads are daemons: they never keep the
    process alive.
    """

    def __init__(self):
        self._lock = _thread.allocate_lock()
        self._idle = 0  # threads waiting on self._calls, minus calls queued there
        self._calls = SimpleQueue()

    def submit(self, function, *args):
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._calls.put((function, args))
                return
        # This returns once the thread runs: an execution the host was told about
        # (STATUS counts it) has its thread going before a shutdown.
        started = _thread.allocate_lock()
        started.acquire()
        _thread.start_new_thread(self._work, (function, args, started))
        started.acquire()

    def _work(self, function, args, started):
        started.release()
        while True:
            function(*args)
            function = args = None  # hold no references while idle
            with self._lock:
                if self._idle >= _IDLE_THREADS_KEPT:
                    return
                self._idle += 1
            function, args = self._calls.get()

    def stop(self):
        pass


# What execnet's main_thread_only model answers a remote_exec that cannot get the main
# thread within _MAIN_THREAD_WAIT_SECONDS (its text, word for word: callers match it).
MAIN_THREAD_ONLY_DEADLOCK_TEXT = "concurrent remote_exec would cause deadlock for main_thread_only execmodel"
_MAIN_THREAD_WAIT_SECONDS = 1.0


class _MainThreadQueue:
    """execmodel "main_thread_only": the main thread runs the calls one at a time, in order.

    A call that has a refusal (an execution) and finds the main thread busy waits for
    its turn at most _MAIN_THREAD_WAIT_SECONDS, counted from the moment it is next in
    line; then refuse() is called instead, from a timer thread, and the next call in
    line starts its own wait.  This is execnet's rule: a second remote_exec while the
    first still runs after a second would otherwise wait, perhaps for ever.
    """

    def __init__(self):
        import threading  # in the main thread: this model's start-up pays for it

        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._waiting = []  # [function, args, refuse], in order; None stops run()
        self._busy = False  # the main thread runs a call
        self._timer = None  # counts down for _waiting[0] while the main thread is busy

    def submit(self, function, *args, refuse=None):
        with self._lock:
            self._waiting.append((function, args, refuse))
            if self._busy and len(self._waiting) == 1:
                self._start_timer()
            self._wakeup.notify()

    def stop(self):
        with self._lock:
            self._waiting.append(None)
            self._wakeup.notify()

    def _start_timer(self):
        """(Lock held.) The first waiting call waits for the busy main thread from now."""
        head = self._waiting[0]
        if head is not None and head[2] is not None:
            import threading

            self._timer = threading.Timer(_MAIN_THREAD_WAIT_SECONDS, self._refuse, (head,))
            self._timer.daemon = True
            self._timer.start()

    def _refuse(self, entry):
        with self._lock:
            if not self._waiting or self._waiting[0] is not entry:
                return  # it got the main thread in time
            del self._waiting[0]
            self._timer = None
            if self._waiting:
                self._start_timer()
        entry[2]()

    def _next(self):
        with self._lock:
            self._busy = False
            while not self._waiting:
                self._wakeup.wait()
            entry = self._waiting.pop(0)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._busy = entry is not None
            if self._waiting and self._busy:
                self._start_timer()
            return entry

    def run(self):
        """Run submitted calls until stop(); called by the main thread."""
        while True:
            try:
                entry = self._next()
            except KeyboardInterrupt:
                continue  # the host decides when the worker ends
            if entry is None:
                return
            function, args, _ = entry
            try:
                function(*args)
            except KeyboardInterrupt:
                pass  # an interrupt that came just outside the code it was meant for


def _format_exception(exc):
    """The traceback text of exc, without the worker's own outermost frame
    (kept when it is the only one, as for a SyntaxError of the source: the text
    starts with "Traceback (most recent call last):" either way, as execnet's)."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, tb))


def _execute(channel, source, file_name, call_name, kwargs):
    """Run one CHANNEL_EXEC task; return None, or the error text to close with.

    An EOFError escaping the code (typically a receive() on a channel the
    host closed) ends the execution quietly, like a normal return.  A
    KeyboardInterrupt during the gateway's shutdown (which interrupts the
    executions still running) returns _LEAVE_OPEN: no CLOSE_ERROR, the host
    learns of the end from the gateway's loss, as for code the exit cuts short.
    """
    try:
        code = compile(source + "\n", file_name or "<remote exec>", "exec", dont_inherit=True)
        namespace = {"channel": channel, "__name__": "__channelexec__"}
        exec(code, namespace)
        if call_name:
            function = namespace.get(call_name)
            if function is None:
                raise NameError("remote_exec: the source defines no %r to call" % call_name)
            function(channel, **kwargs)
    except EOFError:
        return None
    except KeyboardInterrupt as exc:
        if channel.gateway._finished:
            return _LEAVE_OPEN
        return _format_exception(exc)
    except BaseException as exc:  # report everything, SystemExit included
        return _format_exception(exc)
    return None


# --------------------------------------------------------------------------
# 5. The gateway
# --------------------------------------------------------------------------


class WorkerGateway:
    """The worker's end of the connection, what user code sees as channel.gateway.

    Channel ids: the host numbers its channels 1, 3, 5, ...; this side
    numbers its own 2, 4, 6, ....  A frame for an id not seen before creates
    the channel.  A channel that is closed in both directions is retired:
    frames for a retired id are dropped, so data for a channel this side
    closed never resurrects it.  Retired odd ids are remembered in a set;
    retired even ids are simply the ones below the next id to hand out.
    """

    def __init__(self, id, execmodel, read, write):
        _ThreadingImport.install()
        self.id = id
        self.execmodel = ExecModel(execmodel)
        self._read = read  # read(n) -> up to n bytes, fewer only at end of input
        self._write = write  # write(data): writes all of data
        self._write_lock = _thread.allocate_lock()  # held while writing: frames stay whole
        self._buf_lock = _thread.allocate_lock()  # guards the queued frames and the flags below
        self._pending = []  # frames queued for the flusher (see _write_frame)
        self._pending_bytes = 0
        self._last_send = 0.0
        self._flush_requested = False
        self._flusher_started = False
        self._flush_wanted = _thread.allocate_lock()  # released to wake the flusher
        self._flush_wanted.acquire()
        self._write_error = None  # set once writing failed: the host is gone
        self._read_token = _thread.allocate_lock()  # held while reading a frame (see _read_for)
        self._handed = SimpleQueue()  # frames a receiver read for the reading thread
        self._last_self_read = 0.0  # when a receiver last read for itself
        self._reading_over = False  # set once the reading thread stopped: nobody reads
        self._waiting = set()  # channels whose receive() waits for their queue
        self._reader_wakeup = _thread.allocate_lock()  # released to wake the reading thread
        self._reader_wakeup.acquire()
        self._lock = _thread.RLock()
        self._exec_done = None  # a Condition on _lock, made when a shutdown must wait
        # id -> live Channel, held weakly: a channel that user code no longer holds is
        # closed by its __del__ (the host would otherwise wait for it forever).  Until
        # user code got hold of it, a channel the host made is kept in _unclaimed (its
        # data waits there); one with a callback in _with_callback.
        self._channels = _WeakValues()
        self._unclaimed = {}
        self._with_callback = {}
        self._retired = set()  # retired odd (host) ids
        self._next_id = 2
        self._executing = 0  # executions submitted and not yet finished
        self._running = set()  # idents of the threads running an execution now
        self._finished = False  # set once frames are no longer read
        if execmodel == "main_thread_only":
            self._executor = self._main_queue = _MainThreadQueue()
        else:
            self._executor = _ThreadPool()
            self._main_queue = None
        self._handlers = {
            STATUS: self._on_status,
            RECONFIGURE: self._on_reconfigure,
            GATEWAY_TERMINATE: self._on_terminate,
            CHANNEL_EXEC: self._on_exec,
            CHANNEL_DATA: self._on_data,
            CHANNEL_CLOSE: self._on_close,
            CHANNEL_CLOSE_ERROR: self._on_close_error,
            CHANNEL_LAST_MESSAGE: self._on_last_message,
        }
        tracer = _make_tracer(id)
        self._trace = tracer or _no_trace
        if tracer is not None:
            tracer("creating workergateway", id, "execmodel", self.execmodel.backend)
            self._install_tracing(tracer)

    def __repr__(self):
        return "<WorkerGateway id=%s execmodel=%s>" % (self.id, self.execmodel.backend)

    # -- public API for user code ----------------------------------------

    def newchannel(self):
        """A new channel of this side (even id), to be passed to the host inside data."""
        with self._lock:
            if self._finished:
                raise OSError("cannot create a channel: the gateway is shut down")
            channel_id = self._next_id
            self._next_id += 2
            return self._register(channel_id)

    def remote_exec(self, source):
        """Ask the host to execute source; returns the channel bound to that execution.

        Hosts may refuse (the Rust host does): the refusal arrives as a close
        with error, so receive() or waitclose() raises RemoteError.
        """
        if not isinstance(source, str):
            raise TypeError("remote_exec() on the worker takes source text, not %s" % type(source).__name__)
        channel = self.newchannel()
        self._send_object(CHANNEL_EXEC, channel.id, (source, None, None, {}))
        return channel

    # -- sending ------------------------------------------------------------

    # Frames go out in the order they were sent, whole.  A frame sent on its
    # own is written at once.  Frames sent in a burst (less than
    # _COALESCE_SECONDS after the previous one) are queued instead, and the
    # flusher thread writes all that is queued in one system call: a loop of
    # sends then costs no write each.  The flusher writes them
    # _FLUSH_DELAY_SECONDS after it was woken; as it needs the GIL, a sender
    # that keeps computing delays its queued frames by at most that plus the
    # interpreter's switch interval (5 ms).  A thread about to wait for the
    # host (receive with nothing queued, waitclose) writes them first.  At most
    # _COALESCE_LIMIT bytes wait: beyond that the sender writes them and its
    # frame itself, and blocks while the host is not reading, as an unqueued
    # write would.

    def _write_frame(self, frame):
        """Send a whole frame, now or in the next batch."""
        now = _monotonic()
        if now - self._last_send >= _COALESCE_SECONDS and not self._pending:
            # Not part of a burst, nothing queued: write it now.
            self._last_send = now
            with self._write_lock:
                if not self._pending:  # (else another thread queued meanwhile)
                    try:
                        self._write(frame)
                    except (OSError, ValueError) as exc:
                        self._write_error = exc
                        raise OSError("cannot send to the host: %s" % exc) from exc
                    return
            self._flush(frame)
            return
        if self._write_error is not None:
            raise OSError("cannot send to the host: %s" % self._write_error)
        with self._buf_lock:
            burst = now - self._last_send < _COALESCE_SECONDS
            self._last_send = now
            if burst and self._pending_bytes + len(frame) <= _COALESCE_LIMIT:
                self._pending.append(frame)
                self._pending_bytes += len(frame)
                if not self._flush_requested:
                    self._flush_requested = True
                    self._flush_wanted.release()
                    if not self._flusher_started:
                        self._flusher_started = True
                        _start_thread(self._flusher_main)
                return
        self._flush(frame)

    def _flush(self, frame=None):
        """Write the queued frames, then frame (if any), in one piece where sensible.

        frame is bytes, or a list of parts that the writer writes as one (writev).
        """
        with self._write_lock:
            with self._buf_lock:
                batch = self._pending
                if batch:
                    self._pending = []
                    self._pending_bytes = 0
            try:
                if batch:
                    if frame is not None and type(frame) is not list and len(frame) <= _COALESCE_LIMIT:
                        batch.append(frame)
                        frame = None
                    self._write(b"".join(batch) if len(batch) > 1 else batch[0])
                if frame is not None:
                    self._write(frame)
            except (OSError, ValueError) as exc:
                self._write_error = exc
                raise OSError("cannot send to the host: %s" % exc) from exc

    def _flush_pending(self):
        """Write queued frames now (before this thread waits for the host); never raises."""
        if self._pending:
            try:
                self._flush()
            except OSError:
                pass  # the reader finds out that the host is gone

    def _flusher_main(self):
        """The flusher thread: write what is queued whenever frames were queued.

        It lets frames gather for _FLUSH_DELAY_SECONDS before it writes them;
        wakes that come meanwhile cost no system call (nobody waits on the lock).
        """
        sleep = time.sleep
        while True:
            self._flush_wanted.acquire()
            sleep(_FLUSH_DELAY_SECONDS)
            with self._buf_lock:
                self._flush_requested = False
            if self._write_error is not None:
                return
            try:
                self._flush()
            except OSError:
                return

    def _send_frame(self, code, channel_id, payload=b""):
        self._write_frame(_HEADER.pack(code, channel_id, len(payload)) + payload)

    def _send_object(self, code, channel_id, obj):
        """Send a frame whose payload is obj serialized, building it in one piece."""
        out = [b""]  # slot for the header, packed once the payload length is known
        _dump_payload(out, obj)
        size = sum(map(len, out))
        if size > _I32_MAX:
            raise DumpError("can't serialize: payload of %d bytes is too large" % size)
        out[0] = _HEADER.pack(code, channel_id, size)
        if size >= _WRITE_PARTS_AT:
            self._write_parts(out, code, channel_id, size)
        else:
            self._write_frame(b"".join(out))

    def _write_parts(self, parts, code, channel_id, size):
        """Write a big frame from its parts, without joining them first."""
        self._trace("sending", _message_name(code), "channel", channel_id, "length", size)
        self._flush(parts)

    # -- the channel table (callers hold self._lock) ----------------------

    def _register(self, channel_id):
        channel = self._channels[channel_id] = Channel(self, channel_id)
        if channel_id % 2 == 0 and channel_id >= self._next_id:
            self._next_id = channel_id + 2  # an even id the host made up: never hand it out
        return channel

    def _is_retired(self, channel_id):
        if channel_id % 2 == 0:
            return channel_id < self._next_id
        return channel_id in self._retired

    def _channel_for_frame(self, channel_id):
        """The live channel with that id, created if new; None if the id is retired."""
        channel = self._channels.get(channel_id)
        if channel is None and not self._is_retired(channel_id):
            channel = self._unclaimed[channel_id] = self._register(channel_id)
        return channel

    def _channel_from_data(self, channel_id):
        """A channel that arrived inside data (opcode B)."""
        with self._lock:
            channel = self._channel_for_frame(channel_id)
            self._unclaimed.pop(channel_id, None)  # user code holds it from now on
            if channel is None:  # retired: a channel object that is closed both ways
                channel = Channel(self, channel_id)
                channel._closed = True
                channel._owes_close = False
                self._end_receiving(channel)
            return channel

    def _retire(self, channel):
        if self._channels.get(channel.id) is channel:
            del self._channels[channel.id]
            self._unclaimed.pop(channel.id, None)
            self._with_callback.pop(channel.id, None)
            if channel.id % 2:
                self._retired.add(channel.id)

    def _close_freed(self, channel_id):
        """Channel.__del__'s errand, in a thread of its own (a finalizer may run while
        its thread holds any lock): tell the host that this side closed channel_id.
        (__del__ retired an odd id already.)"""
        with self._lock:
            if self._finished:
                return
            self._trace("channel", channel_id, "freed while open: closing it")
            try:
                self._send_frame(CHANNEL_CLOSE, channel_id)
            except (OSError, ValueError):
                pass  # the connection is gone: nobody waits for this close

    def _end_receiving(self, channel, error=None):
        """No more items will arrive: wake the receivers, give the callback its end marker."""
        if channel._receive_closed.is_set():
            return
        if error is not None:
            channel._error = error
        if channel._items is not None:
            channel._items.put(_END)
        callback = channel._callback
        if callback is not None:
            channel._callback = None
            self._with_callback.pop(channel.id, None)
            function, endmarker = callback
            if endmarker is not _NO_ENDMARKER:
                try:
                    function(endmarker)
                except Exception:
                    self._report("channel %d: callback failed on its end marker" % channel.id)
        # Last, as execnet's: waitclose() returns once the callback has seen the end.
        channel._receive_closed.set()

    def _close_channel(self, channel, error_text=None, local_error=None):
        """Close channel from this side: tell the peer (unless it knows), end receiving, retire."""
        with self._lock:
            channel._closed = True
            try:
                if channel._owes_close:
                    channel._owes_close = False
                    if error_text is None:
                        self._send_frame(CHANNEL_CLOSE, channel.id)
                    else:
                        self._send_object(CHANNEL_CLOSE_ERROR, channel.id, str(error_text))
            finally:
                self._end_receiving(channel, local_error)
                self._retire(channel)

    # -- frame handlers: run by the reading thread; True ends reading --------

    def _on_status(self, channel_id, payload):
        with self._lock:
            status = {
                "numchannels": len(self._channels),
                "numexecuting": self._executing,
                "execmodel": self.execmodel.backend,
            }
        self._send_object(CHANNEL_DATA, channel_id, status)
        self._send_frame(CHANNEL_CLOSE, channel_id)

    def _on_reconfigure(self, channel_id, payload):
        pass  # string coercion settings only matter to Python 2 peers

    def _on_terminate(self, channel_id, payload):
        return True

    def _on_exec(self, channel_id, payload):
        with self._lock:
            channel = self._channel_for_frame(channel_id)
            if channel is None:
                return
            try:
                task = _parse_exec_task(loads(payload, self))
            except (LoadError, ValueError) as exc:
                self._close_channel(channel, "%s: bad CHANNEL_EXEC payload: %s" % (type(exc).__name__, exc))
                return
            self._executing += 1
        if self._main_queue is None:
            self._executor.submit(self._run_exec, channel, *task)
        else:
            refuse = lambda: self._finish_exec(channel, MAIN_THREAD_ONLY_DEADLOCK_TEXT)  # noqa: E731
            self._main_queue.submit(self._run_exec, channel, *task, refuse=refuse)

    def _on_data(self, channel_id, payload):
        with self._lock:
            channel = self._channel_for_frame(channel_id)
            if channel is None or channel._receive_closed.is_set():
                return  # the channel ended: drop the data
            try:
                item = loads(payload, self)
            except LoadError as exc:
                text = "LoadError: cannot load data for channel %d: %s" % (channel_id, exc)
                self._close_channel(channel, text, local_error=exc)
                return
            callback = channel._callback
            if callback is None:
                channel._items.put(item)
                return
            try:
                callback[0](item)
            except Exception as exc:
                self._close_channel(channel, _format_exception(exc))

    def _on_close(self, channel_id, payload, error=None):
        with self._lock:
            channel = self._channel_for_frame(channel_id)
            if channel is None:
                return
            channel._closed = True
            channel._owes_close = False
            self._end_receiving(channel, error)
            self._retire(channel)

    def _on_close_error(self, channel_id, payload):
        try:
            text = loads(payload)
        except LoadError as exc:
            text = "(undecodable CHANNEL_CLOSE_ERROR payload: %s)" % exc
        if not isinstance(text, str):
            text = repr(text)
        self._on_close(channel_id, payload, RemoteError(text))

    def _on_last_message(self, channel_id, payload):
        with self._lock:
            channel = self._channel_for_frame(channel_id)
            if channel is None:
                return
            self._end_receiving(channel)
            if channel._closed:
                self._retire(channel)

    # -- executions -----------------------------------------------------------

    def _run_exec(self, channel, source, file_name, call_name, kwargs):
        """Run one execution (in the thread the execmodel chose) and close its channel."""
        if self._finished and self._main_queue is not None:
            # Queued behind others in the main thread, and the gateway shut down before
            # its turn.  (In execmodel "thread" each execution has its thread from the
            # start: a thread that only gets to run after the shutdown began still runs
            # the code, which finds its channels ended.)
            error_text = "execution cancelled: the worker shut down before it started"
        else:
            self._trace("exec starts on channel", channel.id)
            ident = _thread.get_ident()
            self._running.add(ident)
            channel._executing = True
            try:
                error_text = _execute(channel, source, file_name, call_name, kwargs)
            finally:
                channel._executing = False
                self._running.discard(ident)
            self._trace("exec ends on channel", channel.id, "with an error" if error_text else "")
        self._finish_exec(channel, error_text)

    def _finish_exec(self, channel, error_text):
        """Close the execution's channel and count the execution as finished.

        CLOSE, or CLOSE_ERROR with error_text, unless the channel is closed
        already; with a callback set, LAST_MESSAGE instead, as the host may
        go on sending to the callback.  Both happen in one step under the
        lock: a STATUS answered after the close never counts the execution,
        and the shutdown never sees it finished before its close is out.
        """
        with self._lock:
            try:
                if channel._closed or error_text is _LEAVE_OPEN:
                    pass
                elif error_text is None and channel._callback is not None:
                    channel._closed = True
                    self._send_frame(CHANNEL_LAST_MESSAGE, channel.id)
                else:
                    self._close_channel(channel, error_text)
            except OSError:
                pass  # the host is gone; nobody is left to tell
            finally:
                self._executing -= 1
                if self._exec_done is not None:
                    self._exec_done.notify_all()

    # -- serving ----------------------------------------------------------------

    def serve(self, on_finished):
        """Serve frames until GATEWAY_TERMINATE or end of input.

        on_finished() runs after the shutdown (or, should that get stuck, at
        its deadline); the stdio entry point exits the process there, so it
        must be safe to call twice.  Returns after the shutdown (in
        "main_thread_only", once the main thread is free).
        """
        if self._main_queue is None:
            self._receive_and_finish(on_finished)
        else:
            import threading  # imported already, by _MainThreadQueue

            reader = threading.Thread(
                target=self._receive_and_finish, args=(on_finished,), name="execnet-receiver", daemon=True
            )
            reader.start()
            self._main_queue.run()

    def _receive_and_finish(self, on_finished):
        try:
            reason = self._receive_frames()
        except BaseException as exc:  # a broken connection, or an interrupt
            reason = "reading stopped: %r" % (exc,)
        with self._lock:
            # User code may hold up the shutdown (an execution still running, a callback
            # given its end marker); with none of that, no watchdog thread is needed.
            may_block = self._executing or any(c._callback for c in self._channels.values())
        watchdog = None
        if may_block:
            import threading

            watchdog = threading.Timer(_SHUTDOWN_DEADLINE_SECONDS, on_finished)
            watchdog.daemon = True
            watchdog.start()
        self._shutdown(reason)
        try:
            self._flush()  # waits for a flush in progress, writes what is left
        except OSError:
            pass
        if watchdog is not None:
            watchdog.cancel()
        on_finished()

    # -- reading ------------------------------------------------------------
    #
    # One thread at a time reads frames: the one holding _read_token.  Mostly
    # that is the reading thread (the one in serve()), which handles every
    # frame.  But a thread waiting in channel.receive() with nothing queued
    # takes the token when it is free and reads for itself: a frame for its own
    # channel it handles right away, which spares a hand-off between threads
    # (a wake-up less per round trip); any other frame it hands to the reading
    # thread, which handles it in order, and it stops reading.  While receivers
    # read for themselves (one did within _DEFER_SECONDS), the reading thread
    # stays out of their way, waking up every _DEFER_SECONDS to check.

    def _read_frame(self):
        """Read one frame: (code, channel_id, payload), or (None, why reading ends, None)."""
        read = self._read
        header = read(_HEADER_SIZE)
        if len(header) < _HEADER_SIZE:
            return None, "end of input", None
        code, channel_id, size = _HEADER.unpack(header)
        if size < 0:
            self._report("protocol error: frame with negative length %d, giving up" % size, with_traceback=False)
            return None, "protocol error", None
        payload = read(size) if size else b""
        if len(payload) < size:
            return None, "end of input inside a frame", None
        return code, channel_id, payload

    def _handle_frame(self, code, channel_id, payload):
        """Handle one frame; return why reading must end, or None."""
        handler = self._handlers.get(code)
        if handler is None:
            self._trace("ignoring a frame with unknown code", code, "channel", channel_id)
            return None
        try:
            if handler(channel_id, payload):
                return "GATEWAY_TERMINATE"
        except OSError as exc:  # replying failed: nobody is listening any more
            return str(exc)
        except Exception:
            self._report("failed to handle %s for channel %d" % (_message_name(code), channel_id))
        return None

    def _receive_frames(self):
        """The reading thread: read and handle frames; return why reading stopped.

        Frames are handled with the token held, as receivers handle theirs: a
        frame read later can never be handled first.
        """
        token = self._read_token
        handed = self._handed
        read_frame = self._read_frame
        handle_frame = self._handle_frame
        waiting = self._waiting
        while True:
            if handed.empty() and self._last_self_read and _monotonic() - self._last_self_read < _DEFER_SECONDS:
                self._reader_wakeup.acquire(timeout=_DEFER_SECONDS)
                continue
            if not token.acquire(False) and not token.acquire(timeout=_DEFER_SECONDS):
                continue
            try:
                if not handed.empty():
                    code, channel_id, payload = handed.get()
                elif self._last_self_read and _monotonic() - self._last_self_read < _DEFER_SECONDS:
                    continue  # a receiver read meanwhile (finally releases the token)
                else:
                    code, channel_id, payload = read_frame()
                reason = channel_id if code is None else handle_frame(code, channel_id, payload)
                if reason is not None:
                    # Set while the token is held: no receiver starts reading after this.
                    self._reading_over = True
                    return reason
            finally:
                token.release()
            if waiting and code == CHANNEL_DATA and len(waiting) == 1:
                channel = self._channels.get(channel_id)
                if channel in waiting:
                    # Its receiver, the only one waiting, will likely be back
                    # for the next item soon, and can read that one itself.
                    self._last_self_read = _monotonic()

    def _read_for(self, channel):
        """Read one frame in this thread, for channel's receive(); see "reading" above.

        Returns True when the frame was channel's (handled: its item, if any,
        is queued), False when this thread cannot read (the token is taken,
        or it had to hand a frame over): then it waits for its queue.
        """
        token = self._read_token
        if not token.acquire(False):
            return False
        try:
            if not channel._items.empty():
                return True
            if self._reading_over or not self._handed.empty():
                return False
            code, channel_id, payload = frame = self._read_frame()
            if channel_id == channel.id and code in _RECEIVER_CODES:
                # Handled while holding the token: no frame read after it can
                # overtake it.
                self._handle_frame(code, channel_id, payload)
                return True
            self._handed.put(frame)
            return False
        finally:
            self._last_self_read = _monotonic()
            token.release()
            if not self._handed.empty():
                self._wake_reader()

    def _wake_reader(self):
        """Have the reading thread read again now, rather than at its next check."""
        self._last_self_read = 0.0
        try:
            self._reader_wakeup.release()
        except RuntimeError:
            pass  # awake already

    def _shutdown(self, reason):
        """Wake every receiver with EOFError, give executions a short grace, interrupt
        the ones still running (KeyboardInterrupt) and give them a moment to unwind.

        A SIGINT from the host (its terminate() sends one to a worker still running
        after half its timeout) ends the grace at once.
        """
        self._trace("shutting down:", reason)
        restore_sigint = self._catch_sigint()
        with self._lock:
            self._finished = True
            for channel in list(self._channels.values()):
                self._end_receiving(channel)
        self._executor.stop()
        if not self._wait_executions(_SHUTDOWN_GRACE_SECONDS, until_sigint=True):
            self._interrupt_executions()
            self._wait_executions(_SHUTDOWN_INTERRUPT_SECONDS)
        restore_sigint()

    def _catch_sigint(self):
        """When this is the main thread (execmodel "thread"), take SIGINT as a flag
        that ends the grace, instead of a KeyboardInterrupt raised wherever the
        shutdown is; the code to interrupt runs in other threads.  Returns the
        function that puts the previous handler back.
        """
        self._sigint = False
        if _thread.get_ident() != _MAIN_THREAD:
            return lambda: None
        signal = _signal_module()

        def on_sigint(signum, frame):
            self._sigint = True
            with self._lock:
                if self._exec_done is not None:
                    self._exec_done.notify_all()

        try:
            previous = signal.signal(signal.SIGINT, on_sigint)
        except (ValueError, OSError):
            return lambda: None

        def restore():
            try:
                signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
            except (ValueError, OSError, TypeError):
                pass

        return restore

    def _wait_executions(self, seconds, until_sigint=False):
        """Wait until no execution runs, at most seconds (and, with until_sigint,
        until the host's SIGINT comes); True when none runs."""
        with self._lock:
            if self._executing == 0:
                return True
            if self._exec_done is None:
                import threading

                self._exec_done = threading.Condition(self._lock)
            self._exec_done.wait_for(lambda: self._executing == 0 or (until_sigint and self._sigint), seconds)
            return self._executing == 0

    def _interrupt_executions(self):
        """Raise KeyboardInterrupt in every execution still running.

        The main thread (execmodel "main_thread_only") gets SIGINT, which also
        ends a blocking sleep or wait; code that ignores SIGINT stays as it is.
        Other threads get an asynchronous exception, seen at their next
        bytecode; that needs CPython's C API through ctypes (not on PyPy).
        """
        main = _MAIN_THREAD
        for ident in list(self._running):
            self._trace("interrupting the execution in thread", ident)
            try:
                if ident == main:
                    signal = _signal_module()

                    if _thread.get_ident() != main and hasattr(signal, "pthread_kill"):
                        signal.pthread_kill(main, signal.SIGINT)
                else:
                    import ctypes

                    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
                    set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
                    set_async_exc(ident, KeyboardInterrupt)
            except (ImportError, AttributeError, OSError, ValueError):
                pass  # no way to interrupt it here: the exit ends it

    def _report(self, message, with_traceback=True):
        """A problem of the worker itself: tell stderr (frames are not the place)."""
        try:
            sys.stderr.write("execnet worker %s: %s\n" % (self.id, message))
            if with_traceback:
                import traceback

                traceback.print_exc()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def _install_tracing(self, trace):
        """Wrap the frame handlers and the writer so that each frame is traced."""

        def traced(code, handler):
            name = _message_name(code)

            def handle(channel_id, payload):
                trace("received", name, "channel", channel_id, "length", len(payload))
                return handler(channel_id, payload)

            return handle

        self._handlers = {code: traced(code, handler) for code, handler in self._handlers.items()}
        write_frame = self._write_frame

        def traced_write_frame(frame):
            code, channel_id, size = _HEADER.unpack_from(frame)
            trace("sending", _message_name(code), "channel", channel_id, "length", size)
            write_frame(frame)

        self._write_frame = traced_write_frame


def _parse_exec_task(task):
    """(source, file_name, call_name, kwargs) from a CHANNEL_EXEC payload, checked."""
    if type(task) is not tuple or len(task) != 4:
        raise ValueError("expected a tuple (source, file_name, call_name, kwargs), got %s" % type(task).__name__)
    source, file_name, call_name, kwargs = task
    if not isinstance(source, str):
        raise ValueError("source must be str, not %s" % type(source).__name__)
    for name, value in (("file_name", file_name), ("call_name", call_name)):
        if value is not None and not isinstance(value, str):
            raise ValueError("%s must be str or None, not %s" % (name, type(value).__name__))
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise ValueError("kwargs must be a dict, not %s" % type(kwargs).__name__)
    return source, file_name, call_name, kwargs


# --------------------------------------------------------------------------
# 6. Entry points
# --------------------------------------------------------------------------


def serve_stdio(id="gw0", execmodel="thread", chdir=None, nice=None, env=None, **ignored):
    """Serve the host over the pipes of stdin/stdout; never returns.

    The frame stream moves to duplicates of fds 0 and 1, and fds 0 and 1 are
    pointed at /dev/null, as are sys.stdin and sys.stdout: whatever user
    code prints (or writes to fd 1) is discarded and can never corrupt a
    frame.  sys.stderr (fd 2) is left alone and reaches the host's stderr.
    Unknown keyword arguments are ignored, for hosts newer than this file.

    If the configuration cannot be applied (say, chdir is impossible), a
    message and the traceback go to stderr and the process exits with
    status 1 without writing the ready byte.  Otherwise it writes b"1",
    serves, and exits with status 0 when the host terminates or goes away.
    """
    try:
        _check_execmodel(execmodel)
        read_fd, write_fd = _take_over_stdio()
        _apply_config(chdir, nice, env)
    except Exception as exc:
        _report_startup_failure(id, exc)
        _exit_now(1)
    reader = io.open(read_fd, "rb", buffering=_READ_BUFFER_SIZE)
    write = _fd_writer(write_fd)
    try:
        write(b"1")
    except OSError:
        _exit_now(0)  # the host is gone already
    _exit_after_hangup(read_fd)
    gateway = WorkerGateway(id, execmodel, reader.read, write)
    gateway.serve(on_finished=lambda: _exit_now(0))
    _exit_now(0)


def serve_socket(clientsock, id="gw0", execmodel="thread", chdir=None, nice=None, env=None, **ignored):
    """Serve the host over a connected socket; returns when the host is done.

    For socket servers that exec the bootstrap line with the connection bound
    to `clientsock`.  File descriptors and sys.stdout stay as they are (they
    belong to the server), and the process is not exited: once the host
    terminates or disconnects, the socket is shut down and this returns,
    leaving the server free to accept the next connection.  (Executions
    still running after the grace get KeyboardInterrupt, as in _shutdown;
    code that survives it runs on in daemon threads.)
    chdir, nice and env apply to the whole server process.
    On a configuration failure the message goes to stderr, the socket is
    closed and this returns without writing the ready byte.
    """
    try:
        _check_execmodel(execmodel)
        _apply_config(chdir, nice, env)
        clientsock.settimeout(None)
        _set_nodelay(clientsock)
    except Exception as exc:
        _report_startup_failure(id, exc)
        clientsock.close()
        return
    reader = clientsock.makefile("rb", buffering=_READ_BUFFER_SIZE)
    try:
        clientsock.sendall(b"1")
        gateway = WorkerGateway(id, execmodel, reader.read, _socket_writer(clientsock))
        gateway.serve(on_finished=lambda: _shutdown_socket(clientsock))
    except OSError:
        pass  # the host is gone
    finally:
        reader.close()
        clientsock.close()


def _check_execmodel(execmodel):
    if execmodel not in _EXECMODELS:
        raise ValueError("unsupported execmodel %r (supported: %s)" % (execmodel, ", ".join(_EXECMODELS)))


def _take_over_stdio():
    """Move the frame stream off fds 0/1 and point them at /dev/null.

    Returns (read_fd, write_fd) for the frames.  The duplicates are
    non-inheritable, so processes that user code starts do not hold the
    host's pipes open.
    """
    read_fd = os.dup(0)
    write_fd = os.dup(1)
    null_fd = os.open(os.devnull, os.O_RDWR)
    os.dup2(null_fd, 0)
    os.dup2(null_fd, 1)
    if null_fd > 1:
        os.close(null_fd)
    # Fresh objects: the old sys.stdin may hold bytes it read ahead.
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    return read_fd, write_fd


def _apply_config(chdir, nice, env):
    """Apply the host's settings: working directory (created if missing), nice, environment."""
    if chdir:
        try:
            os.makedirs(chdir, exist_ok=True)
            os.chdir(chdir)
        except OSError as exc:
            raise OSError("cannot change into directory %r: %s" % (chdir, exc)) from exc
    if nice and hasattr(os, "nice"):
        os.nice(int(nice))
    if env:
        for name, value in env.items():
            os.environ[name] = value


def _exit_after_hangup(fd):
    """Exit shortly after the host closes its end of the input pipe, whatever else happens.

    The reading thread notices the end of input by itself and exits within
    the grace period; this watcher matters only when it cannot, say while it
    runs a channel callback that never returns.  It polls for POLLHUP alone
    (no events requested), which a pipe reports as soon as its writer is
    gone, even with data still unread.
    """
    if not hasattr(select, "poll"):
        return
    poller = select.poll()
    poller.register(fd, 0)

    def watch():
        while not poller.poll():
            pass
        time.sleep(_SHUTDOWN_DEADLINE_SECONDS)
        _exit_now(0)

    _start_thread(watch)


def _fd_writer(fd):
    """A function writing all of its data to fd, looping on partial writes.

    The data is bytes, or a list of bytes-like parts written as one (writev).
    The first write of _GROW_PIPE_AT bytes or more grows the pipe (Linux).
    """
    write = os.write
    writev = getattr(os, "writev", None)
    small = [True]

    def write_all(data):
        parts = type(data) is list
        size = sum(map(len, data)) if parts else len(data)
        if small and size >= _GROW_PIPE_AT:
            small.clear()
            _grow_pipe(fd)
        if parts:
            if writev is None or len(data) > 512:
                data = b"".join(data)
                written = write(fd, data)
            else:
                written = writev(fd, data)
                if written < size:  # interrupted: the rest the plain way
                    data = b"".join(data)
        else:
            written = write(fd, data)
        if written < size:
            view = memoryview(data)
            while written < size:
                written += write(fd, view[written:])

    return write_all


def _socket_writer(sock):
    """A function sending all of its data (bytes, or a list of parts) on sock."""
    sendall = sock.sendall

    def send(data):
        sendall(b"".join(data) if type(data) is list else data)

    return send


def _grow_pipe(fd):
    """Give the pipe at fd a capacity of _BIG_PIPE_BYTES, if this system allows."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _BIG_PIPE_BYTES)
    except (ImportError, OSError):
        pass  # not a pipe, or over the per-user pipe budget: keep the pipe as it is


def _start_thread(function, *args):
    """Run function(*args) in a new thread, without waiting for it to start.

    A bare _thread thread, as execnet's own worker starts them: it never keeps
    the process alive, and threading.Thread.start() would make the caller wait
    for the new thread to run first (a thread switch, on start-up's path).
    """
    _thread.start_new_thread(function, args)


def _signal_module():
    """The C signal module (signal.py imports enum: ~2 ms on the way out)."""
    try:
        import _signal

        return _signal
    except ImportError:
        import signal

        return signal


def _set_nodelay(sock):
    import socket

    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not TCP (a Unix socket, say): nothing to tune


def _shutdown_socket(sock):
    import socket

    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _report_startup_failure(gateway_id, exc):
    try:
        sys.stderr.write("execnet worker %s: cannot start: %s\n" % (gateway_id, exc))
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _exit_now(status):
    """Exit the process at once, whatever other threads are doing."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(status)
