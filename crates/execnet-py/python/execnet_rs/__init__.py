"""execnet's API for Python programs, on the execnet-rs host (written in Rust).

    import execnet_rs as execnet
    gw = execnet.makegateway("popen")
    ch = gw.remote_exec("channel.send(channel.receive() + 1)")
    ch.send(1); assert ch.receive() == 2

`install_as_execnet()` makes `import execnet` give this module.
"""

import atexit
import os
import inspect
import queue
import sys
import textwrap
import threading
import types
import weakref

from . import _core
from ._core import DataFormatError, GatewayLost, HostNotFound, RemoteError, TimeoutError
from .rsync import RSync

__all__ = [
    "makegateway", "Group", "Gateway", "Channel", "MultiChannel", "XSpec", "default_group",
    "dumps", "loads", "DataFormatError", "DumpError", "LoadError", "RemoteError",
    "TimeoutError", "HostNotFound", "GatewayLost", "PopenGateway", "SshGateway",
    "SocketGateway", "RSync", "set_execmodel", "install_as_execnet", "dump", "load",
    "__version__",
]

# The execnet release whose API this package provides (code that checks
# execnet.__version__ sees it); execnet_rs's own version is __execnet_rs_version__.
__version__ = "2.1.2"
__execnet_rs_version__ = "0.1.0"


class DumpError(DataFormatError):
    """An object the wire format cannot carry."""


class LoadError(DataFormatError):
    """Bytes that are not in the wire format."""


def dumps(obj):
    """Serializes `obj` into execnet's dump format 2."""
    try:
        return _core.dumps(obj)
    except DumpError:
        raise
    except DataFormatError as e:
        raise DumpError(str(e)) from None


def loads(data, py2str_as_py3str=False, py3str_as_py2str=False):
    """Reads bytes of execnet's dump format 2 back into an object.

    As execnet's: strings a Python 2 peer dumped (PY2STRING) come back as bytes unless
    `py2str_as_py3str`; with `py3str_as_py2str`, Python 3 strings come back as bytes.
    (Channels apply the coercion of PROTOCOL.md: Python 2 strings are str there.)"""
    data = bytes(data)
    as_bytes = set()
    if not py2str_as_py3str and b"M" in data:
        as_bytes.add(b"M")
    if py3str_as_py2str and b"N" in data:
        as_bytes.add(b"N")
    if as_bytes:
        data = _strings_as_bytes(data, as_bytes)
    try:
        return _core.loads(data)
    except DataFormatError as e:
        raise LoadError(str(e)) from None


# Operand sizes of each opcode of the dump format (PROTOCOL.md, section 3): a fixed byte
# count, or (_SIZED) an i32 length and that many bytes; the others have no operands.
_FIXED = {b"@": 4, b"B": 4, b"E": 4, b"F": 4, b"G": 4, b"K": 4, b"O": 4, b"D": 8, b"T": 16}
_SIZED = {b"A", b"H", b"I", b"M", b"N", b"S"}


def _strings_as_bytes(data, opcodes):
    """`data` with the string opcodes in `opcodes` turned into BYTES (same operands).
    Bytes it cannot walk are left as they are, for loads() to report."""
    out = bytearray(data)
    pos, end = 1, len(data)
    while pos < end:
        op = data[pos : pos + 1]
        pos += 1
        if op in _FIXED:
            pos += _FIXED[op]
        elif op in _SIZED:
            if pos + 4 > end:
                break
            n = int.from_bytes(data[pos : pos + 4], "big", signed=True)
            if n < 0:
                break
            if op in opcodes:
                out[pos - 1] = ord("A")
            pos += 4 + n
    return bytes(out)


# ---- channels (the Rust class, with the Python-only parts added) ------------------------

Channel = _core.Channel

# execnet's execution models, thread pool and file-based dump/load (they need the names
# above).
from .gateway_base import ExecModel, dump, get_execmodel, load  # noqa: E402
NO_ENDMARKER_WANTED = object()


def _channel_iter(self):
    return self


def _channel_next(self):
    try:
        return self.receive()
    except EOFError:
        raise StopIteration from None


def _channel_setcallback(self, callback, endmarker=NO_ENDMARKER_WANTED):
    has_end = endmarker is not NO_ENDMARKER_WANTED
    self._setcallback(callback, has_end, endmarker if has_end else None)


def _channel_makefile(self, mode="w", proxyclose=False):
    if mode == "w":
        return ChannelFileWrite(self, proxyclose)
    if mode == "r":
        return ChannelFileRead(self, proxyclose)
    raise ValueError(f"mode {mode!r} not available")


def _channel_gateway(self):
    return _wrap_gateway(self._gateway)


def _channel_getremoteerror(self):
    """The error that ended this channel, if any, without waiting (as execnet's private
    method: a RemoteError, or an EOFError for a lost gateway)."""
    return self._end_error()


Channel._getremoteerror = _channel_getremoteerror
Channel.__iter__ = _channel_iter
Channel.__next__ = _channel_next
Channel.next = _channel_next
Channel.setcallback = _channel_setcallback
Channel.makefile = _channel_makefile
Channel.gateway = property(_channel_gateway)
Channel.RemoteError = RemoteError
# execnet's RemoteError.formatted: the remote traceback text.
RemoteError.formatted = property(lambda self: str(self.args[0]) if self.args else "")
Channel.TimeoutError = TimeoutError


class ChannelFile:
    def __init__(self, channel, proxyclose=True):
        self.channel = channel
        self._proxyclose = proxyclose

    def isatty(self):
        return False

    def close(self):
        if self._proxyclose:
            self.channel.close()

    def __repr__(self):
        state = "closed" if self.channel.isclosed() else "open"
        return f"<ChannelFile {self.channel.id} {state}>"


class ChannelFileWrite(ChannelFile):
    def write(self, out):
        self.channel.send(out)

    def flush(self):
        pass


class ChannelFileRead(ChannelFile):
    def __init__(self, channel, proxyclose=True):
        super().__init__(channel, proxyclose)
        self._buffer = None

    def read(self, n):
        try:
            if self._buffer is None:
                self._buffer = self.channel.receive()
            while len(self._buffer) < n:
                self._buffer += self.channel.receive()
        except EOFError:
            self.close()
        if self._buffer is None:
            ret = ""
        else:
            ret = self._buffer[:n]
            self._buffer = self._buffer[n:]
        return ret

    def readline(self):
        if self._buffer is not None:
            i = self._buffer.find("\n")
            if i != -1:
                return self.read(i + 1)
            line = self.read(len(self._buffer) + 1)
        else:
            line = self.read(1)
        while line and line[-1] != "\n":
            c = self.read(1)
            if not c:
                break
            line += c
        return line


# ---- specs -------------------------------------------------------------------------------


class XSpec:
    """A gateway spec such as ``popen//python=python3//id=gw1``; keys read as attributes
    (None when absent, True for a bare key), ``env`` holds the ``env:NAME=value`` items."""

    popen = ssh = socket = python = chdir = nice = dont_write_bytecode = execmodel = None
    via = id = installvia = vagrant_ssh = ssh_config = None

    def __init__(self, string):
        self._spec = string
        self._keys = {}  # attribute name: the key as written
        items, env = _core.parse_spec(string)
        self.env = dict(env)
        for key, value in items:
            if not key.startswith("env:"):
                name = key.replace("-", "_")
                self._keys[name] = key
                setattr(self, name, True if value is None else value)

    def _compose(self):
        """The spec as its attributes say now (xdist sets ``id`` and ``chdir`` after
        parsing), in the order the keys came: the string a gateway is made from."""
        items = []
        for name, value in vars(self).items():
            if name.startswith("_") or name == "env" or value is None or value is False:
                continue
            key = self._keys.get(name, name)
            items.append(key if value is True else f"{key}={value}")
        items += [f"env:{k}={v}" for k, v in self.env.items()]
        return "//".join(items)

    def __getattr__(self, name):
        if name.startswith("_"):  # keys never start with "_": private names are not keys
            raise AttributeError(name)
        return None

    def __repr__(self):
        return f"<XSpec {self._spec!r}>"

    def __str__(self):
        return self._spec

    def __hash__(self):
        return hash(self._spec)

    def __eq__(self, other):
        return self._spec == getattr(other, "_spec", None)

    def __ne__(self, other):
        return not self == other

    def _samefilesystem(self):
        return self.popen is not None and self.chdir is None


# ---- gateways and groups -------------------------------------------------------------------


class RInfo:
    def __init__(self, kwargs):
        self.__dict__.update(kwargs)

    def __repr__(self):
        info = ", ".join(f"{k}={v}" for k, v in sorted(self.__dict__.items()))
        return f"<RInfo {info!r}>"


class RemoteStatus:
    def __init__(self, numchannels, numexecuting, execmodel):
        self.numchannels = numchannels
        self.numexecuting = numexecuting
        self.execmodel = execmodel
        self.execqsize = 0

    def __repr__(self):
        return f"<RemoteStatus channels={self.numchannels} executing={self.numexecuting}>"


_gateways = {}  # id(core gateway) is not stable; keyed by (group, id) through the wrapper


def _wrap_gateway(core):
    for gw in list(_gateways.values()):
        if gw._gw == core:
            return gw
    return Gateway(core, None)


class Gateway:
    """A connection to one Python worker process."""

    RemoteError = RemoteError

    def __init__(self, core, group, spec=None):
        self._gw = core
        self._group = group
        self.id = core.id
        # As execnet: the XSpec the gateway was made from (its id filled in), not the
        # string given to the core, which carries python= and the like.
        self.spec = spec if spec is not None else XSpec(core.spec)
        if self.spec.id is None:
            self.spec.id = core.id
        self._cache_rinfo = None
        _gateways[(id(group), core.id)] = self

    @property
    def execmodel(self):
        return get_execmodel(self.spec.execmodel or "thread")

    @property
    def remoteaddress(self):
        return self.spec.socket or self.spec.ssh

    def __repr__(self):
        return f"<Gateway id={self.id!r} spec={str(self.spec)!r}>"

    def remote_exec(self, source, **kwargs):
        """Runs a source string, a pure function (called as ``f(channel, **kwargs)``) or a
        module's source in the worker; returns the channel connected to it."""
        file_name = call_name = None
        if isinstance(source, types.ModuleType):
            file_name = inspect.getsourcefile(source)
            source = inspect.getsource(source)
        elif isinstance(source, types.FunctionType):
            from .gateway import _source_of_function

            call_name = source.__name__
            file_name = inspect.getsourcefile(source)
            source = _source_of_function(source)
        else:
            source = textwrap.dedent(str(source))
        if kwargs and call_name is None:
            raise TypeError("keyword arguments are only for a function")
        return self._gw.remote_exec(source, file_name, call_name, kwargs if call_name else None)

    def newchannel(self):
        return self._gw.newchannel()

    def remote_status(self):
        return RemoteStatus(*self._gw.remote_status())

    def _rinfo(self, update=False):
        if self._cache_rinfo is None or update:
            self._cache_rinfo = RInfo(self._gw.rinfo())
        return self._cache_rinfo

    def remote_init_threads(self, num=None):
        """Does nothing, as in execnet since 1.2 (which prints the same warning)."""
        print("WARNING: remote_init_threads() is a no-operation in execnet-1.2")

    def hasreceiver(self):
        return self._gw.is_alive()

    def exit(self):
        self._gw.exit()
        if self._group is not None:
            self._group._forget(self)
        _gateways.pop((id(self._group), self.id), None)

    def join(self, timeout=None):
        pass

    def reconfigure(self, py2str_as_py3str=True, py3str_as_py2str=False):
        pass

    def __eq__(self, other):
        return isinstance(other, Gateway) and other._gw == self._gw

    def __hash__(self):
        return hash(self._gw)


class Group:
    """Gateways managed together: index by position or id, iterate, terminate."""

    def __init__(self, xspecs=(), execmodel="thread"):
        self._core = _core.Group()
        self._gateways = []
        self._id_counter = 0
        self._id_lock = threading.Lock()
        self.set_execmodel(execmodel)
        # As execnet: a group's gateways end at interpreter exit (held weakly here: a
        # group dropped earlier ends its gateways then, and is not kept for the exit).
        atexit.register(_end_group_at_exit, weakref.ref(self))
        for spec in xspecs:
            self.makegateway(spec)

    def set_execmodel(self, execmodel, remote_execmodel=None):
        """Sets the execution model; `remote_execmodel` (default: the same) is what new
        gateways of the group use when their spec names none."""
        if self._gateways:
            raise ValueError("cannot set the execution model: the group already has gateways")
        self.execmodel = get_execmodel(execmodel)
        self.remote_execmodel = get_execmodel(remote_execmodel or execmodel)

    def __repr__(self):
        return f"<Group {[gw.id for gw in self._gateways]!r}>"

    def __getitem__(self, key):
        if isinstance(key, int):
            return self._gateways[key]
        for gw in self._gateways:
            if gw == key or gw.id == key:
                return gw
        raise KeyError(key)

    def __contains__(self, key):
        try:
            self[key]
            return True
        except KeyError:
            return False

    def __len__(self):
        return len(self._gateways)

    def __iter__(self):
        return iter(list(self._gateways))

    defaultspec = "popen"

    def makegateway(self, spec=None):
        """Starts a gateway for `spec` (a string or XSpec; default: the group's
        ``defaultspec``, ``popen``)."""
        if not spec:
            spec = self.defaultspec
        parsed = spec if isinstance(spec, XSpec) else XSpec(str(spec))
        self.allocate_id(parsed)
        spec = parsed._compose()
        if parsed.popen and parsed.python is None and parsed.via is None and sys.executable:
            # As execnet: a popen gateway runs this interpreter unless told otherwise.
            spec += f"//python={sys.executable}"
        if parsed.execmodel is None and self.remote_execmodel != "thread":
            spec += f"//execmodel={self.remote_execmodel}"
        if parsed.forward_imports and parsed.import_path is None:
            # Imports are served from what this interpreter can import.
            roots = [p for p in sys.path if p and os.path.isdir(p)]
            spec += "//import_path=" + os.pathsep.join(roots)
        core = self._core.makegateway(spec)
        if parsed.ssh:
            # As execnet: a host ssh cannot reach (or log in to) is HostNotFound here,
            # not at the first use. Popen and socket gateways fail early without this.
            try:
                core.wait_ready()
            except GatewayLost as e:
                core.exit()
                raise HostNotFound(str(e)) from None
        gw = Gateway(core, self, parsed)
        self._gateways.append(gw)
        return gw

    def allocate_id(self, spec):
        """Gives `spec` the next free ``gwN`` id when it has none (as execnet: ids are
        counted per group, so specs get distinct ids before any gateway exists)."""
        if spec.id is None:
            with self._id_lock:
                while True:
                    candidate = f"gw{self._id_counter}"
                    self._id_counter += 1
                    if candidate not in self:
                        break
                spec.id = candidate

    def _forget(self, gw):
        if gw in self._gateways:
            self._gateways.remove(gw)

    def remote_exec(self, source, **kwargs):
        return MultiChannel([gw.remote_exec(source, **kwargs) for gw in self])

    def _cleanup_atexit(self):
        self.terminate(timeout=1.0)

    def terminate(self, timeout=None):
        self._core.terminate(timeout)
        for gw in self._gateways:
            _gateways.pop((id(self), gw.id), None)
        self._gateways.clear()


def _end_group_at_exit(group_ref):
    group = group_ref()
    if group is not None:
        group._cleanup_atexit()


class MultiChannel:
    """Several channels used together."""

    def __init__(self, channels):
        self._channels = list(channels)

    def __len__(self):
        return len(self._channels)

    def __iter__(self):
        return iter(self._channels)

    def __getitem__(self, key):
        return self._channels[key]

    def __contains__(self, chan):
        return chan in self._channels

    def send_each(self, item):
        for ch in self._channels:
            ch.send(item)

    def receive_each(self, withchannel=False):
        if withchannel:
            return [(ch, ch.receive()) for ch in self._channels]
        return [ch.receive() for ch in self._channels]

    def make_receive_queue(self, endmarker=NO_ENDMARKER_WANTED):
        q = queue.Queue()
        for ch in self._channels:
            def put(item, ch=ch):
                q.put((ch, item))
            ch.setcallback(put, endmarker=endmarker)
        return q

    def waitclose(self):
        first = None
        for ch in self._channels:
            try:
                ch.waitclose()
            except RemoteError as e:
                if first is None:
                    first = e
        if first is not None:
            raise first


default_group = Group()


def _at_exit():
    # Callbacks stop calling into Python first, then the default group's gateways end.
    _core._shutdown()
    default_group.terminate(timeout=1.0)


atexit.register(_at_exit)


def makegateway(spec=None):
    """Starts a gateway in the default group."""
    return default_group.makegateway(spec)


def set_execmodel(execmodel, remote_execmodel=None):
    default_group.set_execmodel(execmodel, remote_execmodel)


# ---- the seed's constructors ---------------------------------------------------------------


def PopenGateway(python=None):
    spec = "popen" if python is None else f"popen//python={python}"
    return makegateway(spec)


def SshGateway(sshaddress, remotepython=None, ssh_config=None):
    spec = f"ssh={sshaddress}"
    if remotepython:
        spec += f"//python={remotepython}"
    if ssh_config:
        spec += f"//ssh_config={ssh_config}"
    return makegateway(spec)


class _SocketGatewayFactory:
    def __call__(self, host, port):
        return makegateway(f"socket={host}:{port}")

    def new_remote(self, gateway, hostport=None):
        """Starts a socket server inside `gateway`'s worker and connects to it."""
        host, port = hostport if hostport is not None else ("127.0.0.1", 0)
        return _wrap_new(default_group, gateway._gw.new_remote_socket(host, port))


def _wrap_new(group, core):
    gw = Gateway(core, group)
    group._gateways.append(gw)
    return gw


SocketGateway = _SocketGatewayFactory()


# ---- standing in for execnet ----------------------------------------------------------------


def install_as_execnet():
    """Makes ``import execnet`` and its modules (``execnet.gateway_base``,
    ``execnet.gateway``, ``execnet.gateway_io``, ``execnet.multi``, ``execnet.xspec``,
    ``execnet.rsync``) give execnet_rs in this process. For every interpreter of an
    environment, subprocesses and pytest-xdist's workers included, use
    ``python -m execnet_rs.standin install`` instead."""
    import importlib

    me = sys.modules[__name__]
    sys.modules["execnet"] = me
    for name in ("gateway_base", "gateway", "gateway_io", "multi", "xspec", "rsync"):
        sys.modules["execnet." + name] = importlib.import_module(f"{__name__}.{name}")
    return me
