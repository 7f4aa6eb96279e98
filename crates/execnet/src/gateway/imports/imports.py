# Import forwarding, sent by Gateway::forward_imports() through remote_exec.
#
# install(channel, only, prefer_host) puts a finder on sys.meta_path that, for a
# module this interpreter cannot import by itself, asks the host over a channel of
# its own and runs the source the host sends.  The host resolves names in its own
# import roots and answers only for modules under them (and, with `only`, only for
# those top-level names); it never runs anything.
#
# Requests are (id, kind, argument) on the channel, answers (id, result); several
# threads may wait at once, each for its own id.  Answers are kept, so a module is
# asked for once per gateway; the host may send entries for modules a module is
# about to import along with it ("prefetch"), which saves a round trip each.
#
# Modules made this way have __file__ (the host's path, for tracebacks and
# messages; get_source serves linecache), __spec__, and, for packages, an empty
# __path__: submodules come from the host too, never from a same-named directory
# here.  Package data is read through importlib.resources (files(), and the 3.8
# read_text/open_binary API) and pkgutil.get_data; importlib.metadata sees the
# host's distributions (entry points included).  Only the standard library is
# used, so this runs on any execnet-compatible worker.

import _imp
import importlib.abc
import importlib.machinery
import importlib.util
import io
import posixpath
import sys
import threading

try:
    import importlib.metadata as _metadata
except ImportError:  # Python < 3.8 has no importlib.metadata
    _metadata = None

_ANSWER_SECONDS = 60.0


class _Host:
    """The channel to the host: numbered requests, answers handed to their askers."""

    def __init__(self, channel):
        self.channel = channel
        self.lock = threading.Lock()
        self.next_id = 0
        self.waiting = {}  # id: [event, answer]
        self.closed = False
        self.found = {}  # fullname: the host's answer to "find"
        channel.setcallback(self._on_answer, endmarker=None)

    def _on_answer(self, item):
        if item is None:  # the host closed the channel: fail what waits
            with self.lock:
                self.closed = True
                pending = list(self.waiting.values())
            for slot in pending:
                slot[0].set()
            return
        request_id, answer = item
        with self.lock:
            slot = self.waiting.get(request_id)
        if slot is not None:
            slot[1] = answer
            slot[0].set()

    def ask(self, kind, argument):
        with self.lock:
            if self.closed:
                raise ImportError("import forwarding ended: the host closed its channel")
            request_id = self.next_id
            self.next_id += 1
            slot = self.waiting[request_id] = [threading.Event(), None]
        try:
            self.channel.send((request_id, kind, argument))
            if not _wait_without_import_lock(slot[0]):
                raise ImportError("import forwarding: no answer from the host for %s %r" % (kind, argument))
        finally:
            with self.lock:
                self.waiting.pop(request_id, None)
        if self.closed and slot[1] is None:
            raise ImportError("import forwarding ended: the host closed its channel")
        return slot[1]

    def find(self, fullname):
        if fullname in self.found:
            return self.found[fullname]
        answer = self.ask("find", fullname)
        found = answer.get("found") if isinstance(answer, dict) else None
        # The answer for fullname, and what the host sent ahead (modules it imports).
        for name, entry in (answer or {}).get("prefetch", {}).items():
            self.found.setdefault(name, entry)
        self.found[fullname] = found
        return found


def _wait_without_import_lock(event):
    """Wait for an answer with the global import lock released, if this thread holds it.

    Finders run with that lock held (importlib takes it around each find_spec), and
    the answer is delivered by the worker's receiving thread, which may need the lock
    itself: on PyPy, a garbage collection there runs importlib's weakref callbacks for
    dead module locks, and those take the import lock.  Waiting with it held would
    leave both threads waiting for each other until the timeout.  The lock is taken
    again, as many times as it was held, before the finder goes on.
    """
    depth = 0
    while True:
        try:
            _imp.release_lock()
        except RuntimeError:  # not held (any more) by this thread
            break
        depth += 1
    try:
        return event.wait(_ANSWER_SECONDS)
    finally:
        for _ in range(depth):
            _imp.acquire_lock()


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, host, only):
        self.host = host
        self.only = set(only) if only else None

    def _wanted(self, fullname):
        return self.only is None or fullname.partition(".")[0] in self.only

    def find_spec(self, fullname, path=None, target=None):
        if not self._wanted(fullname):
            return None
        entry = self.host.find(fullname)
        if entry is None:
            return None
        if entry["kind"] == "refused":
            raise ImportError(entry["message"], name=fullname)
        loader = _Loader(self.host, fullname, entry)
        is_package = entry["kind"] != "module"
        origin = entry.get("origin")
        spec = importlib.machinery.ModuleSpec(fullname, loader, origin=origin, is_package=is_package)
        spec.has_location = origin is not None
        return spec

    def find_distributions(self, context=None):
        name = getattr(context, "name", None)
        if _metadata is None:
            return iter(())
        try:
            paths = self.host.ask("dists", name)
        except ImportError:
            return iter(())
        return iter([_Distribution(self.host, p) for p in paths or ()])

    def invalidate_caches(self):
        pass


class _Loader(importlib.abc.Loader):
    def __init__(self, host, fullname, entry):
        self.host = host
        self.name = fullname
        self.entry = entry

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        entry = self.entry
        if entry["kind"] != "module":
            module.__path__ = []  # submodules come from the host (see above)
        origin = entry.get("origin") or "<host namespace package %s>" % self.name
        code = compile(entry.get("source") or "", origin, "exec", dont_inherit=True)
        exec(code, module.__dict__)

    def is_package(self, fullname):
        return self.entry["kind"] != "module"

    def get_source(self, fullname):
        return self.entry.get("source")

    def get_filename(self, fullname):
        origin = self.entry.get("origin")
        if origin is None:
            raise ImportError("%s is a namespace package: it has no file" % fullname, name=fullname)
        return origin

    def get_data(self, path):
        data = self.host.ask("read", path)
        if data is None:
            raise FileNotFoundError("not on the host (or outside its import roots): %r" % (path,))
        return data

    def get_resource_reader(self, fullname):
        directory = self.entry.get("dir")
        return _Resources(self.host, directory) if directory else None


class _Resources:
    """Package data for importlib.resources: files() (3.9+) and the older reader API."""

    def __init__(self, host, directory):
        self.host = host
        self.directory = directory

    def files(self):
        return _HostPath(self.host, self.directory)

    def open_resource(self, resource):
        return io.BytesIO(_HostPath(self.host, self.directory).joinpath(resource).read_bytes())

    def resource_path(self, resource):
        raise FileNotFoundError("package data on the host has no path here: %r" % (resource,))

    def is_resource(self, name):
        return _HostPath(self.host, self.directory).joinpath(name).is_file()

    def contents(self):
        return [p.name for p in _HostPath(self.host, self.directory).iterdir()]


class _HostPath:
    """A file or directory on the host, under its import roots (a Traversable)."""

    def __init__(self, host, path):
        self.host = host
        self.path = path

    def __repr__(self):
        return "<host path %r>" % (self.path,)

    def __fspath__(self):  # so that open() of it fails clearly, not with a TypeError
        return self.path

    @property
    def name(self):
        return posixpath.basename(self.path)

    def _stat(self):
        return self.host.ask("stat", self.path)

    def is_dir(self):
        return self._stat() == "dir"

    def is_file(self):
        return self._stat() == "file"

    def exists(self):
        return self._stat() is not None

    def iterdir(self):
        names = self.host.ask("list", self.path)
        if names is None:
            raise FileNotFoundError("no such directory on the host: %r" % (self.path,))
        return iter([_HostPath(self.host, posixpath.join(self.path, n)) for n in names])

    def read_bytes(self):
        data = self.host.ask("read", self.path)
        if data is None:
            raise FileNotFoundError("no such file on the host: %r" % (self.path,))
        return data

    def read_text(self, encoding=None, errors=None):
        return self.read_bytes().decode(encoding or "utf-8", errors or "strict")

    def open(self, mode="r", *args, **kwargs):
        if "w" in mode or "a" in mode or "+" in mode:
            raise OSError("host package data is read-only: %r" % (self.path,))
        data = io.BytesIO(self.read_bytes())
        if "b" in mode:
            return data
        return io.TextIOWrapper(data, *args, **kwargs)

    def joinpath(self, *parts):
        path = self.path
        for part in parts:
            path = posixpath.join(path, str(part))
        return _HostPath(self.host, posixpath.normpath(path))

    __truediv__ = joinpath


if _metadata is not None:

    class _Distribution(_metadata.Distribution):
        """A distribution installed on the host (its .dist-info directory there)."""

        def __init__(self, host, path):
            self.host = host
            self.dist_path = path

        def read_text(self, filename):
            data = self.host.ask("read", posixpath.join(self.dist_path, filename))
            return None if data is None else data.decode("utf-8")

        def locate_file(self, path):
            import pathlib

            return pathlib.PurePosixPath(posixpath.dirname(self.dist_path), str(path))

else:
    _Distribution = None


def install(channel, only=None, prefer_host=False):
    requests = channel.gateway.newchannel()
    finder = _Finder(_Host(requests), only)
    # Remove a finder of an earlier install on this gateway: one answers.
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_Finder" or not hasattr(f, "host")]
    if prefer_host and only:
        sys.meta_path.insert(0, finder)
    else:
        sys.meta_path.append(finder)
    channel.send(requests)
