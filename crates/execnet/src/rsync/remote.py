"""The receiving half of RSync (execnet::RSync in Rust, execnet_rs.RSync in the bindings):
sent whole by ``remote_exec`` and run in the worker as ``__channelexec__`` (standard
library only).

The conversation on the channel, each item a plain tuple or list:

    host -> here   (destdir, {"delete": bool})
    host -> here   ("list", entries)    every path of the source tree, parents first:
                   ("d", rel, mode) | ("f", rel, size, mtime_ns, mode)
                   | ("l", rel, "intree", rel_target) | ("l", rel, "verbatim", text)
    here -> host   ("need", [rel, ...])  files missing here or differing in size or mtime
    host -> here   (rel, data, mtime_ns, mode) per needed file (data None: it vanished)
    host -> here   None
    here -> host   ("done", number of files written)

``rel`` is a path relative to the tree's root with "/" separators.
"""

import os
import shutil
import stat


def _local(destdir, rel):
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"rsync: refusing path {rel!r}")
    return os.path.join(destdir, *parts)


def _kind(path):
    """'l', 'd', 'f', 'o' (other) or None (nothing there)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "l"
    if stat.S_ISDIR(st.st_mode):
        return "d"
    if stat.S_ISREG(st.st_mode):
        return "f"
    return "o"


def _remove(path):
    if _kind(path) == "d":
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _delete_unlisted(destdir, listed):
    """Removes what is under destdir but not in the listing (the delete option)."""
    for top, dirs, files in os.walk(destdir, topdown=False):
        for name in files + dirs:
            path = os.path.join(top, name)
            rel = os.path.relpath(path, destdir).replace(os.sep, "/")
            if rel not in listed and _kind(path) is not None:
                _remove(path)


def _same_file(path, size, mtime_ns):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size and st.st_mtime_ns == mtime_ns


def _write(path, data, mtime_ns, mode):
    """Writes a file beside its place, then renames it there (readers never see half)."""
    if _kind(path) not in (None, "f"):
        _remove(path)
    tmp = f"{path}.rsync-tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def receive_tree(channel):
    destdir, options = channel.receive()
    destdir = os.path.abspath(destdir)
    tag, entries = channel.receive()
    assert tag == "list", tag
    os.makedirs(destdir, exist_ok=True)
    listed = {entry[1] for entry in entries}
    if options.get("delete"):
        _delete_unlisted(destdir, listed)
    need = []
    dir_modes = []  # applied last, deepest first: a read-only directory is filled first
    for entry in entries:
        kind, rel = entry[0], entry[1]
        path = _local(destdir, rel)
        here = _kind(path)
        if kind == "d":
            if here != "d":
                if here is not None:
                    _remove(path)
                try:
                    os.mkdir(path)
                except FileExistsError:
                    # another sync into the same directory (two gateways of one
                    # machine, say) made it meanwhile
                    if _kind(path) != "d":
                        raise
            if len(entry) > 2:
                dir_modes.append((path, entry[2]))
        elif kind == "f":
            if not _same_file(path, entry[2], entry[3]):
                need.append(rel)
        elif kind == "l":
            how, text = entry[2], entry[3]
            if how == "intree":
                text = _local(destdir, text) if text else destdir
            if here == "l" and os.readlink(path) == text:
                continue
            if here is not None:
                _remove(path)
            os.symlink(text, path)
        else:
            raise ValueError(f"rsync: unknown entry {entry!r}")
    channel.send(("need", need))
    written = 0
    while True:
        item = channel.receive()
        if item is None:
            break
        rel, data, mtime_ns, mode = item
        if data is not None:
            _write(_local(destdir, rel), data, mtime_ns, mode)
            written += 1
    for path, mode in reversed(dir_modes):
        os.chmod(path, mode)
    channel.send(("done", written))


if __name__ == "__channelexec__":
    receive_tree(channel)  # noqa: F821 (the worker provides channel)
