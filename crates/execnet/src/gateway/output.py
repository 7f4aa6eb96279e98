# Remote output capture, sent by Gateway::capture_output() through remote_exec.
#
# capture(channel, fds) replaces sys.stdout and sys.stderr with text streams that
# send what is written to the host, as ("stdout" | "stderr", text) items on a new
# channel, which it sends back on `channel` before returning.  With fds true, and
# only when fd 1 points at /dev/null (a worker that serves over stdio moved its
# frames elsewhere and left fd 1 unused), fds 1 and 2 are also pointed at pipes
# read by daemon threads, so that subprocesses' output is sent as well; a worker
# whose fds belong to someone else (a socket server) is left alone.
#
# Ordering: a stream sends complete lines at once (partial lines on flush, or when
# they grow long), in the writing thread, so items and output sent by one thread
# arrive in the order they were written; partial lines are kept per thread, so
# threads printing at once do not cut into each other's lines.  Output written while the capture is
# stopping, or by the thread sending an item (a trace line, say), goes to the
# stream that was there before.
#
# The host ends the capture with the item "stop" (or by closing the channel): the
# streams are flushed and put back, the fds restored, the pipes drained for up to
# a second, and the channel is closed.  Only the standard library is used, so
# this runs on any execnet-compatible worker.

import codecs
import io
import os
import sys
import threading

_LONG_LINE = 8192  # a partial line this long is sent without waiting for its end
_DRAIN_SECONDS = 1.0


class _Capture:
    def __init__(self, out):
        self.out = out
        self.stopped = False
        self.busy = threading.local()  # set in a thread while it sends an item
        self.streams = []
        self.saved_fds = []  # (fd, duplicate of what it pointed at)
        self.readers = []
        self.finishing = threading.Lock()
        self.finished = False

    def emit(self, name, text, fallback):
        """Send text as output of stream `name`; write it to fallback when that cannot be."""
        if not text:
            return
        if not self.stopped and not getattr(self.busy, "on", False):
            self.busy.on = True
            try:
                self.out.send((name, text))
                return
            except Exception:
                self.stopped = True  # the channel is closed: the host stopped listening
            finally:
                self.busy.on = False
        try:
            fallback.write(text)
            fallback.flush()
        except Exception:
            pass

    def install(self, fds):
        if fds and _is_devnull(1):
            for fd, name in ((1, "stdout"), (2, "stderr")):
                self._pipe_fd(fd, name)
        piped = [fd for fd, _ in self.saved_fds]
        for fd, name in ((1, "stdout"), (2, "stderr")):
            stream = _Stream(self, name, getattr(sys, name), fd if fd in piped else None)
            self.streams.append(stream)
            setattr(sys, name, stream)

    def _pipe_fd(self, fd, name):
        read_end, write_end = os.pipe()
        self.saved_fds.append((fd, os.dup(fd)))
        os.dup2(write_end, fd)
        os.close(write_end)
        fallback = open(os.dup(self.saved_fds[-1][1]), "w", errors="replace")
        reader = threading.Thread(
            target=self._read_pipe, args=(read_end, name, fallback), name="execnet-output-" + name
        )
        reader.daemon = True
        reader.start()
        self.readers.append(reader)

    def _read_pipe(self, read_end, name, fallback):
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            while True:
                try:
                    data = os.read(read_end, 65536)
                except InterruptedError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                self.emit(name, decoder.decode(data), fallback)
            self.emit(name, decoder.decode(b"", True), fallback)
        finally:
            os.close(read_end)

    def on_host_item(self, item):
        """Channel callback: "stop", or None once the host closed the channel."""
        if item == "stop" or item is None:
            threading.Thread(target=self.finish, name="execnet-output-stop").start()

    def finish(self):
        with self.finishing:
            if self.finished:
                return
            self.finished = True
        for stream in self.streams:
            stream.flush()
            if getattr(sys, stream.name) is stream:
                setattr(sys, stream.name, stream.previous)
        for fd, saved in self.saved_fds:
            os.dup2(saved, fd)  # our pipe's last write end closes, unless a subprocess holds it
            os.close(saved)
        for reader in self.readers:
            reader.join(_DRAIN_SECONDS)
        self.stopped = True
        try:
            self.out.close()
        except Exception:
            pass


class _Stream(io.TextIOBase):
    """A text stream (sys.stdout or sys.stderr) that sends what is written to the host."""

    def __init__(self, capture, name, previous, fd):
        super().__init__()
        self._capture = capture
        self._name = name
        self.previous = previous
        self._fd = fd
        self._pending = {}  # thread ident: the partial line that thread wrote
        self._lock = threading.Lock()
        self.buffer = _BinaryStream(self)

    @property
    def name(self):
        return self._name

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "replace"

    @property
    def line_buffering(self):
        return True

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        if self._fd is None:
            raise io.UnsupportedOperation("captured %s has no file descriptor here" % self._name)
        return self._fd

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        # Each thread has its own partial line, so that the pieces of one print()
        # (the text, then "\n") stay together when threads print at once.
        ident = threading.get_ident()
        with self._lock:
            pending = self._pending.pop(ident, "") + text
            cut = pending.rfind("\n") + 1
            if len(pending) - cut >= _LONG_LINE:
                cut = len(pending)
            if cut < len(pending):
                self._pending[ident] = pending[cut:]
            self._capture.emit(self._name, pending[:cut], self.previous)
        return len(text)

    def flush(self):
        with self._lock:
            pending, self._pending = "".join(self._pending.values()), {}
            self._capture.emit(self._name, pending, self.previous)

    def close(self):
        self.flush()  # sys.stdout.close() must not break later prints


class _BinaryStream:
    """sys.stdout.buffer: bytes decoded as UTF-8 (errors replaced) into the text stream."""

    def __init__(self, stream):
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._lock = threading.Lock()

    def write(self, data):
        with self._lock:
            self._stream.write(self._decoder.decode(bytes(data)))
        return len(data)

    def flush(self):
        self._stream.flush()

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        return self._stream.fileno()


def _is_devnull(fd):
    try:
        here = os.fstat(fd)
        null = os.stat(os.devnull)
    except OSError:
        return False
    return (here.st_dev, here.st_ino, here.st_rdev) == (null.st_dev, null.st_ino, null.st_rdev)


def capture(channel, fds=True):
    out = channel.gateway.newchannel()
    state = _Capture(out)
    state.install(fds)
    out.setcallback(state.on_host_item, endmarker=None)
    channel.send(out)
