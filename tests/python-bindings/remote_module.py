# Sent whole by test_api.test_module: runs in the worker.
if __name__ == "__channelexec__":
    x = channel.receive()  # noqa: F821
    channel.send((__name__, x * x))  # noqa: F821
