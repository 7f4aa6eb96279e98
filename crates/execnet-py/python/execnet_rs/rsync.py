"""execnet's RSync for execnet_rs: sends a directory tree to directories reached through
gateways, over channels. The receiving half is the Rust library's (crates/execnet/src/rsync/
remote.py, as ``_core.RSYNC_REMOTE_SOURCE``), shared with ``execnet::RSync``, and sent by
remote_exec.

A file is sent when the target has no regular file of the same size and modification
time there; it is written beside its place and renamed, with the source's permission
bits and modification time. Directories are made; symlinks are made anew: an absolute
link into the source tree points to the same place in the target tree, any other link
is copied as it is. With ``delete=True`` what the target has beyond the source tree is
removed. Paths for which ``filter(path)`` returns false are left out (a directory with
all it holds).
"""

import os
import stat

from . import _core


class RSync:
    """Sends the tree under ``sourcedir`` to every target added, on ``send()``.

    ``callback(command, size, channel)``, when given, is called with ``"list"`` and the
    total size of the files listed, once per target, and with ``"ack"`` and the size of
    each file sent. ``verbose`` prints a line per file sent (``_report_send_file``).
    """

    def __init__(self, sourcedir, callback=None, verbose=True):
        self._sourcedir = str(sourcedir)
        self._verbose = verbose
        self._callback = callback
        self._targets = []

    def filter(self, path):
        """Whether ``path`` (a full path under the source directory) is sent; subclasses
        override it (pytest-xdist's ignores)."""
        return True

    def add_target(self, gateway, destdir, finishedcallback=None, **options):
        """Adds ``destdir`` (relative paths: to the worker's current directory) in the
        worker of ``gateway``; ``finishedcallback()`` runs once it is in sync. Option:
        ``delete`` (remove what the source does not have)."""
        unknown = set(options) - {"delete"}
        if unknown:
            raise TypeError(f"unknown rsync options: {sorted(unknown)}")
        self._targets.append((gateway, str(destdir), finishedcallback, dict(options)))

    def _report_send_file(self, gateway, modified_rel_path):
        if self._verbose:
            print(f"{gateway.spec} <= {modified_rel_path}")

    def send(self, raises=True):
        """Brings every target added since the last send in line with the source tree;
        without targets, raises ``OSError`` (or returns None with ``raises=False``)."""
        if not self._targets:
            if raises:
                raise OSError("rsync: no targets to send to (add_target first)")
            return None
        targets, self._targets = self._targets, []
        entries = self._listing()
        total = sum(entry[2] for entry in entries if entry[0] == "f")
        started = []
        for gateway, destdir, finished, options in targets:
            channel = gateway.remote_exec(_core.RSYNC_REMOTE_SOURCE)
            channel.send((destdir, {"delete": bool(options.get("delete"))}))
            channel.send(("list", entries))
            if self._callback is not None:
                self._callback("list", total, channel)
            started.append((gateway, channel, finished))
        for i, (gateway, channel, finished) in enumerate(started):
            try:
                self._serve(gateway, channel)
            except BaseException:
                # the receivers not reached yet would wait for us: end their channels
                for _, other, _ in started[i + 1 :]:
                    other.close()
                raise
            if finished is not None:
                finished()
        return None

    def _serve(self, gateway, channel):
        """Sends one target the files it asks for; returns once it has written them."""
        tag, need = channel.receive()
        assert tag == "need", tag
        for rel in need:
            data, mtime_ns, mode = self._read(rel)
            channel.send((rel, data, mtime_ns, mode))
            if data is not None:
                if self._callback is not None:
                    self._callback("ack", len(data), channel)
                self._report_send_file(gateway, rel)
        channel.send(None)
        tag, _written = channel.receive()
        assert tag == "done", tag
        channel.waitclose()

    def _read(self, rel):
        """(data, mtime_ns, permission bits) of a listed file, or (None, 0, 0) when it
        is gone or no longer a regular file."""
        path = os.path.join(self._sourcedir, *rel.split("/"))
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode) or os.path.islink(path):
                    return None, 0, 0
                return f.read(), st.st_mtime_ns, stat.S_IMODE(st.st_mode)
        except OSError:
            return None, 0, 0

    def _listing(self):
        """The entries of the source tree, parents before children (see the receiving half's docstring)."""
        root = self._sourcedir
        roots = {os.path.abspath(root), os.path.realpath(root)}
        entries = []

        def in_tree(target):
            for r in roots:
                if target == r:
                    return ""
                if target.startswith(r + os.sep):
                    return os.path.relpath(target, r).replace(os.sep, "/")
            return None

        def walk(directory, prefix):
            try:
                names = sorted(os.listdir(directory))
            except FileNotFoundError:
                return
            for name in names:
                path = os.path.join(directory, name)
                if not self.filter(path):
                    continue
                rel = prefix + name
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue  # gone since it was listed
                if stat.S_ISLNK(st.st_mode):
                    text = os.readlink(path)
                    inside = in_tree(os.path.normpath(text)) if os.path.isabs(text) else None
                    if inside is not None:
                        entries.append(("l", rel, "intree", inside))
                    else:
                        entries.append(("l", rel, "verbatim", text))
                elif stat.S_ISDIR(st.st_mode):
                    entries.append(("d", rel, stat.S_IMODE(st.st_mode)))
                    walk(path, rel + "/")
                elif stat.S_ISREG(st.st_mode):
                    entries.append(("f", rel, st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode)))

        walk(root, "")
        return entries
