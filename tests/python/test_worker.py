"""The worker over its frame stream, under CPython and PyPy: channels and executions."""

import math
import os
import struct
import subprocess
import textwrap

import pytest
from conftest import (
    CHANNEL_CLOSE,
    CHANNEL_CLOSE_ERROR,
    CHANNEL_DATA,
    CHANNEL_EXEC,
    CHANNEL_LAST_MESSAGE,
    GATEWAY_TERMINATE,
    RECONFIGURE,
    STATUS,
    Channel,
    dumps,
    payload,
    wait_until,
)

ECHO = "for item in channel:\n    channel.send(item)"


def src(text):
    return textwrap.dedent(text).strip("\n")


# -- start-up and plumbing -------------------------------------------------------


def test_ready_byte_then_frames(worker):
    assert worker.ready
    assert worker.run("channel.send(42)") == [42]


def test_print_and_fd1_writes_do_not_corrupt_frames(worker):
    items = worker.run(
        src(
            """
            import os, sys
            print("hello from print")
            sys.stdout.write("x" * 100000)
            sys.stdout.flush()
            os.write(1, b"\\x04\\x00\\x00\\x00\\x01garbage on fd 1")
            sys.__stdout__.write("old stdout object")
            sys.__stdout__.flush()
            channel.send(sys.stdin.read())
            channel.send("after")
            """
        )
    )
    assert items == ["", "after"]
    assert worker.all_frames[-3:][0].code == CHANNEL_DATA


def test_stderr_reaches_the_host(worker):
    worker.allow_stderr = True
    worker.run("import sys; sys.stderr.write('note on stderr\\n'); sys.stderr.flush()")
    assert wait_until(lambda: "note on stderr" in worker.stderr)


def test_rinfo(worker):
    (info,) = worker.run(
        src(
            """
            import os, sys
            channel.send(dict(
                executable=sys.executable,
                version_info=sys.version_info[:5],
                platform=sys.platform,
                cwd=os.getcwd(),
                pid=os.getpid(),
            ))
            """
        )
    )
    assert info["pid"] == worker.proc.pid
    assert info["cwd"] == os.getcwd()
    assert info["platform"] == "linux"
    assert os.path.realpath(info["executable"]) == os.path.realpath(worker.python)
    assert isinstance(info["version_info"], tuple) and len(info["version_info"]) == 5


ECHO_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**31 - 1,
    -(2**31),
    2**31,
    -(2**31) - 1,
    2**100,
    -(2**100),
    1.25,
    -0.0,
    float("inf"),
    3 - 4j,
    "",
    "text \u00e4\u20ac\U0001f600",
    b"",
    bytes(range(256)),
    [],
    [1, [2, [3, "x"]]],
    (),
    (1, ("a", b"b")),
    {},
    {"k": [1, 2], 3: (4,), (5, 6): {"n": None}, frozenset([7]): 8.5},
    {1},
    frozenset(["only"]),
]


def test_echo_every_type_byte_for_byte(worker):
    channel = worker.exec_(ECHO)
    for value in ECHO_VALUES:
        payload = dumps(value)
        worker.send(CHANNEL_DATA, channel, payload)
        frame = worker.next_frame(channel)
        assert frame.code == CHANNEL_DATA
        assert frame.obj == value and type(frame.obj) is type(value)
        assert frame.payload == payload, value  # the worker's dumps == execnet's
    worker.send(CHANNEL_CLOSE, channel)


def test_echo_sets_and_nan(worker):
    channel = worker.exec_(ECHO)
    for value in [{1, 2, 3, "four", (5,)}, frozenset(range(50))]:
        worker.send_data(channel, value)
        assert worker.receive(channel) == value
    worker.send_data(channel, float("nan"))
    assert math.isnan(worker.receive(channel))
    worker.send(CHANNEL_CLOSE, channel)


def test_large_bytes_round_trip(worker):
    channel = worker.exec_(ECHO)
    blob = os.urandom(1 << 20)
    worker.send_data(channel, blob)
    assert worker.receive(channel) == blob
    worker.send(CHANNEL_CLOSE, channel)


def test_worker_serializer_matches_execnet_for_values_made_remotely(worker):
    items = worker.run(
        src(
            """
            channel.send(-2**40)
            channel.send([-2**31 - 1, 2**64, 0.1, u"\\u20ac", (True, None)])
            """
        )
    )
    assert items == [-(2**40), [-(2**31) - 1, 2**64, 0.1, "\u20ac", (True, None)]]
    payloads = [f.payload for f in worker.all_frames if f.code == CHANNEL_DATA]
    assert payloads[-1] == dumps(items[-1])


@pytest.mark.parametrize(
    "data, expected",
    [
        (payload("LONG", -5, "STOP"), -5),
        (payload("LONGLONG", 2, b"77", "STOP"), 77),
        (payload("PY2STRING", 1, b"\xe9", "STOP"), "\u00e9"),
        (payload("UNICODE", 2, b"\xc3\xa9", "STOP"), "\u00e9"),
    ],
    ids=["G", "I", "M", "S"],
)
def test_legacy_opcodes_over_the_wire(worker, data, expected):
    channel = worker.exec_(ECHO)
    worker.send(CHANNEL_DATA, channel, data)
    assert worker.receive(channel) == expected
    worker.send(CHANNEL_CLOSE, channel)


def test_bad_data_payload_closes_that_channel_only(worker):
    worker.allow_stderr = True
    channel = worker.exec_(
        src(
            """
            try:
                channel.receive()
            except Exception as exc:
                import sys
                sys.stderr.write("remote saw %s\\n" % type(exc).__name__)
            """
        )
    )
    worker.send(CHANNEL_DATA, channel, payload("NEWLIST", 0x7FFFFFFF, "STOP"))  # 2**31-1 items
    text = worker.expect_close_error(channel)
    assert "LoadError" in text and "bad list length" in text
    assert wait_until(lambda: "remote saw LoadError" in worker.stderr)
    assert worker.run("channel.send('still serving')") == ["still serving"]


def test_loader_robustness_under_this_interpreter(worker):
    # The same bad payloads as test_serializer.py, loaded by the remote interpreter.
    from test_serializer import BAD_PAYLOADS

    channel = worker.exec_(
        src(
            """
            import __main__
            results = []
            for payload in channel.receive():
                try:
                    __main__.loads(payload)
                except __main__.LoadError as exc:
                    results.append(str(exc))
                else:
                    results.append(None)
            channel.send(results)
            """
        )
    )
    worker.send(CHANNEL_DATA, channel, dumps(list(BAD_PAYLOADS.values())))
    results = worker.receive(channel)
    assert len(results) == len(BAD_PAYLOADS)
    assert None not in results and all(results)


# -- executions ------------------------------------------------------------------


def test_remote_traceback_in_close_error(worker):
    channel = worker.exec_(
        src(
            """
            def inner():
                raise ValueError("boom")
            inner()
            """
        )
    )
    text = worker.expect_close_error(channel)
    assert text.startswith("Traceback (most recent call last):")
    assert 'File "<remote exec>", line 2, in inner' in text
    assert text.rstrip().endswith("ValueError: boom")
    assert "_execute" not in text  # the worker's own frame is left out


def test_file_name_is_used(worker):
    channel = worker.exec_("1/0", file_name="my_module.py")
    text = worker.expect_close_error(channel)
    assert 'File "my_module.py", line 1' in text and "ZeroDivisionError" in text


def test_syntax_error_reported(worker):
    text = worker.expect_close_error(worker.exec_("def broken(:\n    pass"))
    assert "SyntaxError" in text
    # A traceback like any other remote error (execnet's callers check the header).
    assert text.startswith("Traceback (most recent call last):"), text


def test_call_name_with_kwargs(worker):
    source = src(
        """
        def compute(channel, x, y=0):
            channel.send(x * 10 + y)
        """
    )
    channel = worker.exec_(source, call_name="compute", kwargs={"x": 4, "y": 2})
    assert worker.receive(channel) == 42
    worker.expect_close(channel)


def test_call_name_missing(worker):
    channel = worker.exec_("x = 1", call_name="nothere")
    text = worker.expect_close_error(channel)
    assert "NameError" in text and "nothere" in text


def test_namespace_is_fresh(worker):
    items = worker.run("channel.send(sorted(k for k in globals() if k != '__builtins__'))")
    assert items == [["__name__", "channel"]]
    assert worker.run("channel.send(__name__)") == ["__channelexec__"]


def test_bad_exec_payload(worker):
    channel = worker.new_id()
    worker.send_obj(CHANNEL_EXEC, channel, ["not", "a", "tuple", {}])
    assert "bad CHANNEL_EXEC payload" in worker.expect_close_error(channel)
    channel = worker.new_id()
    worker.send(CHANNEL_EXEC, channel, b"garbage")
    assert "LoadError" in worker.expect_close_error(channel)
    assert worker.run("channel.send(1)") == [1]


def test_system_exit_in_exec_is_reported_not_fatal(worker):
    text = worker.expect_close_error(worker.exec_("import sys; sys.exit(3)"))
    assert "SystemExit: 3" in text
    assert worker.run("channel.send('alive')") == ["alive"]


def test_many_executions_in_a_row(worker):
    channels = [worker.exec_("channel.send(channel.receive() + 1)") for _ in range(60)]
    for number, channel in enumerate(channels):
        worker.send_data(channel, number)
    for number, channel in enumerate(channels):
        assert worker.receive(channel) == number + 1
        worker.expect_close(channel)
    assert wait_until(lambda: worker.status()["numexecuting"] == 0)


def test_executions_run_concurrently_in_thread_model(worker):
    first = worker.exec_("channel.send(channel.receive())")
    second = worker.exec_("channel.send('second done')")
    assert worker.receive(second) == "second done"
    worker.send_data(first, "first done")
    assert worker.receive(first) == "first done"
    (is_main,) = worker.run("import threading; channel.send(threading.current_thread() is threading.main_thread())")
    assert is_main is False


def test_the_worker_does_not_import_threading(worker, python):
    # threading, with functools and collections, is ~3 ms of every start-up; the worker
    # runs on _thread.  (An interpreter whose site already imports it is no test; on PyPy,
    # which has no C _queue, queue.SimpleQueue imports it, in the main thread.)
    probe = "import sys; print('threading' in sys.modules, hasattr(sys, 'pypy_version_info'))"
    bare, pypy = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    (imported,) = worker.run("import sys; channel.send('threading' in sys.modules)")
    assert imported is (bare == "True" or pypy == "True")


FIRST_THREADING_IMPORT = """
import _thread
import threading
main = threading.main_thread()
here = threading.current_thread()
import asyncio
async def answer():
    return 42
done = []
worker_thread = threading.Thread(target=lambda: done.append(threading.current_thread().name), name="user")
worker_thread.start()
worker_thread.join()
channel.send((here is main, main.ident != _thread.get_ident(), main.is_alive(), main.name,
              here.ident == _thread.get_ident(), asyncio.run(answer()), done,
              threading.get_native_id() != main.native_id))
"""


def test_a_first_import_of_threading_in_an_execution_sees_the_real_main_thread(spawn):
    # In execmodel "thread" executions run in threads of their own; threading (up to 3.12)
    # takes whichever thread imports it first for the main thread.  asyncio.run() in an
    # execution would then try to install a SIGINT handler outside the main thread.
    worker = spawn()
    (result,) = worker.run(FIRST_THREADING_IMPORT)
    is_main, main_elsewhere, main_alive, main_name, here_known, answer, done, other_native = result
    assert (is_main, main_elsewhere, main_alive, main_name) == (False, True, True, "MainThread")
    assert (here_known, answer, done, other_native) == (True, 42, ["user"], True)
    # the worker still ends at once (threading's exit waits for no idle execution thread)
    worker.send(GATEWAY_TERMINATE)
    assert worker.wait(timeout=5) == 0


def test_threading_imported_in_the_main_thread_is_left_alone(spawn):
    worker = spawn(execmodel="main_thread_only")
    (result,) = worker.run(
        "import threading; channel.send((threading.current_thread() is threading.main_thread(), "
        "threading.main_thread().is_alive()))"
    )
    assert result == (True, True)


# -- closing -----------------------------------------------------------------------


def test_eof_error_ends_execution_quietly(worker):
    # The host closes while the code receives: EOFError, no error reported.
    channel = worker.exec_("channel.receive()")
    assert wait_until(lambda: worker.status()["numexecuting"] == 1)
    worker.send(CHANNEL_CLOSE, channel)
    assert wait_until(lambda: worker.status()["numexecuting"] == 0)
    worker.no_frame(channel)  # the host closed it: nothing more to say


def test_eof_after_last_message_gives_plain_close(worker):
    channel = worker.exec_("channel.send(channel.receive())\nchannel.receive()")
    worker.send_data(channel, "one")
    assert worker.receive(channel) == "one"
    worker.send(CHANNEL_LAST_MESSAGE, channel)
    worker.expect_close(channel)


def test_iteration_until_last_message_then_send(worker):
    channel = worker.exec_("channel.send(sum(channel))")
    for number in range(10):
        worker.send_data(channel, number)
    worker.send(CHANNEL_LAST_MESSAGE, channel)
    assert worker.receive(channel) == 45
    worker.expect_close(channel)


def test_receive_timeout(worker):
    (result,) = worker.run(
        src(
            """
            import time
            start = time.time()
            try:
                channel.receive(timeout=0.2)
            except channel.TimeoutError as exc:
                channel.send((str(exc), isinstance(exc, TimeoutError), isinstance(exc, IOError),
                              time.time() - start >= 0.19))
            """
        )
    )
    message, is_builtin_timeout, is_ioerror, waited = result
    assert "0.2" in message and is_builtin_timeout and is_ioerror and waited


def test_receive_after_host_close_error_raises_remote_error(worker):
    channel = worker.exec_(
        src(
            """
            other = channel.gateway.newchannel()
            channel.send(other)
            try:
                other.receive()
            except channel.RemoteError as exc:
                channel.send(("RemoteError", str(exc)))
            try:
                other.waitclose(1)
            except channel.RemoteError as exc:
                channel.send(("again", str(exc)))
            """
        )
    )
    other = worker.receive(channel)
    worker.send_obj(CHANNEL_CLOSE_ERROR, other.id, "host side failed")
    assert worker.receive(channel) == ("RemoteError", "host side failed")
    assert worker.receive(channel) == ("again", "host side failed")
    worker.expect_close(channel)


def test_send_on_closed_channel_raises(worker):
    (message,) = worker.run(
        src(
            """
            other = channel.gateway.newchannel()
            other.close()
            other.close()  # a second close does nothing
            try:
                other.send(1)
            except IOError as exc:
                channel.send(str(exc))
            """
        )
    )
    assert "closed" in message and "id=2" in message


def test_close_with_error_from_remote_code(worker):
    channel = worker.exec_(
        src(
            """
            other = channel.gateway.newchannel()
            channel.send(other)
            other.close("custom failure")
            channel.send(other.isclosed())
            """
        )
    )
    other = worker.receive(channel)
    assert worker.expect_close_error(other.id) == "custom failure"
    assert worker.receive(channel) is True
    worker.expect_close(channel)


def test_explicit_close_of_own_channel_is_refused(worker):
    # As in execnet: the execution's channel closes when the execution ends.
    channel = worker.exec_("channel.send(1)\nchannel.close()")
    assert worker.receive(channel) == 1
    error = worker.expect_close_error(channel)
    assert "OSError: cannot explicitly close channel within remote_exec" in error, error


def test_execution_channel_closed_after_the_execution_is_closed_once(worker):
    # An execution's channel handed to a thread that outlives the execution can be
    # closed by it; the end of the execution closed it already, so no second CLOSE.
    channel = worker.exec_(
        src(
            """
            import threading, time
            def later(ch):
                time.sleep(0.2)
                ch.close()
            threading.Thread(target=later, args=(channel,)).start()
            channel.send(1)
            """
        )
    )
    assert worker.receive(channel) == 1
    worker.expect_close(channel)
    worker.no_frame(channel)


def test_data_after_close_is_dropped(worker):
    channel = worker.exec_(
        src(
            """
            other = channel.gateway.newchannel()
            channel.send(other)
            other.close()
            """
        )
    )
    other = worker.receive(channel)
    worker.expect_close(other.id)
    worker.expect_close(channel)
    # data for both closed channels: dropped, not a new channel
    worker.send_data(channel, "late")
    worker.send_data(other.id, "late")
    worker.send(CHANNEL_CLOSE, other.id)
    status = worker.status()
    assert status["numchannels"] == 0, status
    assert worker.run("channel.send('fine')") == ["fine"]


def test_unsupported_type_gives_clear_error_and_channel_stays_usable(worker):
    items = worker.run(
        src(
            """
            try:
                channel.send(object())
            except Exception as exc:
                channel.send("%s: %s" % (type(exc).__name__, exc))
            channel.send("still usable")
            """
        )
    )
    assert items == ["DumpError: can't serialize <class 'object'>", "still usable"]
    text = worker.expect_close_error(worker.exec_("channel.send({1: object()})"))
    assert "DumpError: can't serialize <class 'object'>" in text


def test_waitclose(worker):
    channel = worker.exec_(
        src(
            """
            other = channel.gateway.newchannel()
            channel.send(other)
            try:
                other.waitclose(0.1)
            except channel.TimeoutError:
                channel.send("timed out")
            other.waitclose(10)
            channel.send(("closed", other.isclosed()))
            """
        )
    )
    other = worker.receive(channel)
    assert worker.receive(channel) == "timed out"
    worker.send(CHANNEL_CLOSE, other.id)
    assert worker.receive(channel) == ("closed", True)
    worker.expect_close(channel)


# -- channels made by either side ---------------------------------------------


def test_worker_created_channels_have_even_ids(worker):
    channel = worker.exec_(
        src(
            """
            first = channel.gateway.newchannel()
            second = channel.gateway.newchannel()
            channel.send([first, {"again": first, "second": second}, (second,)])
            first.send("on first")
            second.send("on second")
            first.close()
            second.close()
            """
        )
    )
    first, mapping, (second,) = worker.receive(channel)
    assert (first.id, second.id) == (2, 4)
    assert mapping == {"again": first, "second": second}
    assert worker.receive(2) == "on first"
    assert worker.receive(4) == "on second"
    worker.expect_close(2)
    worker.expect_close(4)
    worker.expect_close(channel)


def test_host_channel_inside_data(worker):
    host_channel = worker.new_id()
    worker.send_data(host_channel, "queued before it was passed")  # creates it remotely
    channel = worker.exec_(
        src(
            """
            ch = channel.receive()
            ch.send(("got", ch.id, ch.receive(), ch.receive()))
            channel.send(ch.id)
            """
        )
    )
    worker.send_data(channel, Channel(host_channel))
    worker.send_data(host_channel, "after")
    assert worker.receive(host_channel) == ("got", host_channel, "queued before it was passed", "after")
    assert worker.receive(channel) == host_channel
    worker.expect_close(channel)


def test_channels_in_exec_kwargs(worker):
    host_channel = worker.new_id()
    source = "def run(channel, out):\n    out.send(channel.id)"
    channel = worker.exec_(source, call_name="run", kwargs={"out": Channel(host_channel)})
    assert worker.receive(host_channel) == channel
    worker.expect_close(channel)


def test_channel_freed_remotely_is_closed(worker):
    # execnet's channels close when garbage-collected: the host's waitclose() ends once
    # the remote code let go of a channel it got (here: when its thread ends).
    host_channel = worker.new_id()
    channel = worker.exec_(
        src(
            """
            import _thread, gc
            done = _thread.allocate_lock()
            done.acquire()
            def producer(sub):
                for i in range(3):
                    sub.send(i)
                done.release()
            ch = channel.receive()
            _thread.start_new_thread(producer, (ch,))
            del ch
            done.acquire()
            gc.collect()  # CPython freed it already; PyPy frees it now
            """
        )
    )
    worker.send_data(channel, Channel(host_channel))
    assert [worker.receive(host_channel) for _ in range(3)] == [0, 1, 2]
    worker.expect_close(host_channel)
    worker.expect_close(channel)
    worker.send_data(host_channel, "dropped")  # retired: no channel is made for it again
    assert worker.status()["numchannels"] == 0


def test_worker_made_channel_freed_is_closed_and_kept_while_held(worker):
    channel = worker.exec_(
        src(
            """
            import gc
            kept = channel.gateway.newchannel()
            freed = channel.gateway.newchannel()
            channel.send((kept, freed))
            del freed
            gc.collect()
            kept.send("still open")
            channel.send(channel.receive())  # hold 'kept' until the host says
            del kept
            gc.collect()
            """
        )
    )
    kept, freed = worker.receive(channel)
    worker.expect_close(freed.id)
    assert worker.receive(kept.id) == "still open"
    worker.no_frame(kept.id)
    worker.send_data(channel, "go")
    assert worker.receive(channel) == "go"
    worker.expect_close(kept.id)
    worker.expect_close(channel)


def test_unclaimed_and_callback_channels_are_not_freed(worker):
    # Data for a channel the worker's code has not got yet waits for it; a channel
    # whose callback is set keeps receiving after the code dropped it.
    host_channel = worker.new_id()
    worker.send_data(host_channel, "early")
    channel = worker.exec_(
        src(
            """
            import gc
            ch = channel.receive()
            ch.setcallback(lambda item: channel.send(("cb", item)))
            del ch
            gc.collect()
            channel.send("callback set")
            channel.receive()
            """
        )
    )
    worker.no_frame(host_channel)
    worker.send_data(channel, Channel(host_channel))
    assert worker.receive(channel) == ("cb", "early")
    assert worker.receive(channel) == "callback set"
    worker.send_data(host_channel, "late")
    assert worker.receive(channel) == ("cb", "late")
    worker.no_frame(host_channel)
    worker.send(CHANNEL_CLOSE, host_channel)
    worker.send_data(channel, "end")
    worker.expect_close(channel)


def test_remote_exec_from_worker_refused_by_host(worker):
    channel = worker.exec_(
        src(
            """
            sub = channel.gateway.remote_exec("channel.send(1)")
            channel.send(sub.id)
            try:
                sub.receive()
            except channel.RemoteError as exc:
                channel.send("refused: " + str(exc))
            """
        )
    )
    sub_id = worker.receive(channel)
    assert sub_id % 2 == 0
    frame = worker.next_frame(sub_id)
    assert frame.code == CHANNEL_EXEC and frame.obj == ("channel.send(1)", None, None, {})
    worker.send_obj(CHANNEL_CLOSE_ERROR, sub_id, "hosts do not run worker code")
    assert worker.receive(channel) == "refused: hosts do not run worker code"
    worker.expect_close(channel)


def test_gateway_attributes(worker):
    (result,) = worker.run(
        "g = channel.gateway\nchannel.send((g.id, g.execmodel.backend, channel.id, repr(channel)))"
    )
    gateway_id, backend, channel_id, text = result
    assert (gateway_id, backend) == ("gw-test", "thread")
    assert text == "<Channel id=%d open>" % channel_id


# -- callbacks and files ----------------------------------------------------------


def test_setcallback_delivers_queued_items_then_new_ones_then_endmarker(worker):
    channel = worker.exec_(
        src(
            """
            import time
            out = channel.gateway.newchannel()
            channel.send(out)
            assert channel.receive() == "start"
            time.sleep(0.3)  # items 1 and 2 arrive meanwhile and are queued
            channel.setcallback(out.send, endmarker="END")
            channel.send("callback set")
            """
        )
    )
    out = worker.receive(channel)
    for item in ["start", 1, 2]:
        worker.send_data(channel, item)
    assert worker.receive(channel) == "callback set"
    # the execution ended with a callback set: LAST_MESSAGE, not CLOSE
    assert worker.next_frame(channel).code == CHANNEL_LAST_MESSAGE
    worker.send_data(channel, 3)
    worker.send(CHANNEL_CLOSE, channel)
    assert [worker.receive(out.id) for _ in range(4)] == [1, 2, 3, "END"]


def test_setcallback_after_close_gets_items_and_endmarker(worker):
    channel = worker.exec_(
        src(
            """
            other = channel.gateway.newchannel()
            channel.send(other)
            other.waitclose(10)
            seen = []
            other.setcallback(seen.append, endmarker=None)
            channel.send(seen)
            """
        )
    )
    other = worker.receive(channel)
    worker.send_data(other.id, "a")
    worker.send_data(other.id, "b")
    worker.send(CHANNEL_CLOSE, other.id)
    assert worker.receive(channel) == ["a", "b", None]


def test_waitclose_returns_after_the_endmarker_was_delivered(worker):
    channel = worker.exec_(
        src(
            """
            import time
            other = channel.gateway.newchannel()
            seen = []
            def slow(item):
                if item == "END":
                    time.sleep(0.3)
                seen.append(item)
            other.setcallback(slow, endmarker="END")
            channel.send(other)
            other.waitclose(10)
            channel.send(seen)
            """
        )
    )
    other = worker.receive(channel)
    worker.send_data(other.id, "a")
    worker.send(CHANNEL_CLOSE, other.id)
    assert worker.receive(channel) == ["a", "END"]


def test_callback_error_closes_channel_with_traceback(worker):
    channel = worker.exec_(
        src(
            """
            def callback(item):
                raise KeyError(item)
            channel.setcallback(callback)
            """
        )
    )
    assert worker.next_frame(channel).code == CHANNEL_LAST_MESSAGE
    worker.send_data(channel, "bad item")
    text = worker.expect_close_error(channel)
    assert "KeyError: 'bad item'" in text and "in callback" in text


def test_receive_with_callback_set_raises(worker):
    (message,) = worker.run(
        src(
            """
            other = channel.gateway.newchannel()
            other.setcallback(lambda item: None)
            try:
                other.receive()
            except IOError as exc:
                channel.send(str(exc))
            other.close()
            """
        )
    )
    assert "callback" in message


def test_makefile_write(worker):
    channel = worker.exec_(
        src(
            """
            f = channel.makefile("w")
            f.write("hello\\n")
            f.write(b"raw bytes")
            f.writelines(["a", "b"])
            f.flush()
            f.close()
            channel.send(f.isatty())
            """
        )
    )
    assert [worker.receive(channel) for _ in range(5)] == ["hello\n", b"raw bytes", "a", "b", False]
    worker.expect_close(channel)


@pytest.mark.parametrize("kind", [str, bytes])
def test_makefile_read(worker, kind):
    channel = worker.exec_(
        src(
            """
            f = channel.makefile("r")
            result = [f.readline(), f.read(3), f.readline(), f.read(100), f.readline(), f.read()]
            channel.send(result)
            """
        )
    )
    for chunk in ["line one\nab", "cdef\nsecond", " part\nrest", "!"]:
        worker.send_data(channel, kind(chunk, "ascii") if kind is bytes else chunk)
    worker.send(CHANNEL_LAST_MESSAGE, channel)
    expected = ["line one\n", "abc", "def\n", "second part\nrest!", "", ""]
    if kind is bytes:
        expected = [item.encode() for item in expected]  # empty results keep the type
    assert worker.receive(channel) == expected
    worker.expect_close(channel)


# -- control messages ---------------------------------------------------------------


def test_status(worker):
    status = worker.status()
    assert status == {"numchannels": 0, "numexecuting": 0, "execmodel": "thread"}
    channel = worker.exec_("channel.receive()")
    assert wait_until(lambda: worker.status() == {"numchannels": 1, "numexecuting": 1, "execmodel": "thread"})
    worker.send_data(channel, None)
    worker.expect_close(channel)
    # the count drops together with the close: no waiting needed
    assert worker.status() == {"numchannels": 0, "numexecuting": 0, "execmodel": "thread"}


def test_reconfigure_is_accepted_and_ignored(worker):
    worker.send_obj(RECONFIGURE, 0, (True, False))
    worker.send_obj(RECONFIGURE, 7, (False, True))
    assert worker.run("channel.send('fine')") == ["fine"]
    assert worker.status()["numchannels"] == 0


def test_unknown_message_codes_are_skipped(worker):
    worker.send(42, 9, b"some payload the worker does not understand")
    worker.send(-3, 0, b"")
    assert worker.run("channel.send('fine')") == ["fine"]


@pytest.mark.parametrize("how", ["process environment", "env keyword"])
def test_tracing_with_execnet_debug(spawn, how):
    if how == "env keyword":
        worker = spawn(env={"EXECNET_DEBUG": "1"})
    else:
        worker = spawn(proc_env={"EXECNET_DEBUG": "1"})
    worker.allow_stderr = True
    assert worker.run("channel.send(1)") == [1]
    assert wait_until(lambda: "sending CHANNEL_CLOSE channel 1" in worker.stderr)
    assert "received CHANNEL_EXEC channel 1" in worker.stderr
    # execnet's layout: "[PID] message", starting with the gateway's creation
    assert worker.stderr.startswith("[%d] creating workergateway" % worker.proc.pid), worker.stderr


def test_no_tracing_by_default(worker):
    assert worker.run("channel.send(1)") == [1]
    assert worker.stderr == ""


# -- sending in bursts, receivers reading for themselves ---------------------------


def test_a_burst_then_long_computation_still_arrives_promptly(worker):
    # The burst is queued for the flusher; the items must not wait for the
    # sender's next send or receive, which come seconds later.
    ch = worker.exec_(
        src(
            """
            import time
            for i in range(50):
                channel.send(i)
            deadline = time.time() + 3
            while time.time() < deadline:  # busy: holds the GIL but for switches
                pass
            channel.send("done")
            """
        )
    )
    assert [worker.receive(ch, timeout=1.0) for _ in range(50)] == list(range(50))
    assert worker.receive(ch, timeout=10) == "done"
    worker.expect_close(ch)


def test_frames_from_many_threads_stay_whole_and_in_order_per_thread(worker):
    ch = worker.exec_(
        src(
            """
            import threading
            def produce(k):
                for i in range(2000):
                    channel.send((k, i, b"x" * (i % 300)))
            threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
            for t in threads: t.start()
            for t in threads: t.join()
            """
        )
    )
    seen = {k: 0 for k in range(4)}
    for _ in range(8000):
        k, i, blob = worker.receive(ch)
        assert i == seen[k] and blob == b"x" * (i % 300)
        seen[k] += 1
    worker.expect_close(ch)


def test_a_receiver_reading_for_itself_hands_on_other_frames(worker):
    # The first execution waits in receive() and reads frames itself; what
    # arrives meanwhile for other channels (data, a new execution, a close)
    # must still reach them, in order.
    first = worker.exec_("for item in channel:\n    channel.send(('first', item))")
    worker.send_data(first, 0)
    assert worker.receive(first) == ("first", 0)
    second = worker.exec_("for item in channel:\n    channel.send(('second', item))")
    for i in range(1, 200):
        worker.send_data(second, i)
        worker.send_data(first, i)
    for i in range(1, 200):
        assert worker.receive(second) == ("second", i)
        assert worker.receive(first) == ("first", i)
    third = worker.exec_("channel.send('third')")
    assert worker.receive(third) == "third"
    worker.expect_close(third)
    worker.send_data(first, "last")
    assert worker.receive(first) == ("first", "last")


def test_a_timed_receive_is_served_while_another_receiver_reads(worker):
    ch = worker.exec_(
        src(
            """
            import threading
            other = channel.gateway.newchannel()
            channel.send(other)
            got = []
            t = threading.Thread(target=lambda: got.append(other.receive()))
            t.start()  # waits in receive(), reading frames itself
            channel.send(channel.receive(timeout=5))
            t.join(5)
            channel.send(got)
            """
        )
    )
    other = worker.receive(ch)
    worker.send_data(ch, "timed")
    assert worker.receive(ch) == "timed"
    worker.send_data(other.id, "plain")
    assert worker.receive(ch) == ["plain"]
    worker.expect_close(ch)


def test_round_trips_alternate_with_another_channel_s_traffic(worker):
    a = worker.exec_(ECHO)
    b = worker.exec_(ECHO)
    for i in range(300):
        worker.send_data(a, i)
        assert worker.receive(a) == i
        if i % 7 == 0:
            worker.send_data(b, -i)
            assert worker.receive(b) == -i


def test_channel_table_keeps_a_new_entry_when_an_old_ones_callback_runs_late(worker_module):
    # On PyPy a dead channel's weakref callback may run after a new channel with the
    # same id took its place (concurrent forwarded imports lost their answers so).
    class Obj:
        pass

    table = worker_module._WeakValues()
    old, new = Obj(), Obj()
    table[1] = old
    old_entry = table._refs[1]  # kept alive, as PyPy keeps it until its callback ran
    table[1] = new  # the place is taken before the old entry's callback ran
    del old  # its callback runs now, late
    assert old_entry() is None
    assert table.get(1) is new and len(table) == 1
    del new
    assert table.get(1) is None and len(table) == 0 and table.values() == []
