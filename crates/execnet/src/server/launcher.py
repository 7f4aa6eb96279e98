# The program of every worker process `execnet serve` starts (python -c THIS FD HOST PORT).
#
# The server has accepted the connection, checked it and read its first line; it passes
# the connected socket as the inherited file descriptor FD and the line on stdin.  This
# evaluates the line (a Python string literal) and runs the source it holds with the
# globals execnet's socket servers give it: `clientsock` (the connection) and
# `address` (the peer).  The source normally turns the connection into a worker that
# answers with the ready byte and serves frames until its host is done.
import ast
import os
import socket
import sys
import traceback


def _launch():
    clientsock = socket.socket(fileno=int(sys.argv[1]))
    host, port = sys.argv[2], sys.argv[3]
    address = (host, int(port)) if port else host
    line = sys.stdin.buffer.read()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    source = ast.literal_eval(line.decode("utf-8").rstrip())
    if isinstance(source, bytes):
        source = source.decode("utf-8")
    if not isinstance(source, str):
        raise TypeError("the first line must be a string literal, not %s" % type(source).__name__)
    code = compile(source + "\n", "<socket server>", "exec")
    exec(code, {"clientsock": clientsock, "address": address})


_status = 0
try:
    _launch()
except SystemExit as _exit:
    _status = _exit.code if isinstance(_exit.code, int) else (0 if _exit.code is None else 1)
except BaseException:
    sys.stderr.write("execnet serve: worker %d: the client's program failed:\n" % os.getpid())
    traceback.print_exc()
    _status = 1
finally:
    for _stream in (sys.stdout, sys.stderr):
        try:
            _stream.flush()
        except Exception:
            pass
# Executions the worker could not stop are daemon threads; end them with the process.
os._exit(_status)
