"""execnet's ``execnet.gateway`` names: the Gateway class and the checks that
``remote_exec`` applies to a function before it sends its source."""

import ast
import builtins
import inspect
import textwrap

from . import Gateway  # noqa: F401


def rinfo_source(channel):
    """What ``Gateway._rinfo()`` asks the remote side (runnable there as it is)."""
    import os
    import sys

    channel.send(
        dict(
            executable=sys.executable,
            version_info=sys.version_info[:5],
            platform=sys.platform,
            cwd=os.getcwd(),
            pid=os.getpid(),
        )
    )


def _find_non_builtin_globals(source, codeobj):
    """The names that `source` (a function's) reads but never binds and that are not
    builtins: a function using them cannot run remotely, where they do not exist.
    (Names bound anywhere in it, comprehension variables and nested functions'
    parameters included, are its own.)"""
    bound = set(codeobj.co_varnames)
    loaded = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                loaded.append(node.id)
            else:
                bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).partition(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    seen = []
    for name in loaded:
        if name not in bound and name not in vars(builtins) and name not in seen:
            seen.append(name)
    return seen


def _source_of_function(function):
    """The source `remote_exec(function)` sends, padded with newlines so that remote
    line numbers are the file's; ValueError for a function that cannot run remotely."""
    if function.__name__ == "<lambda>":
        raise ValueError("cannot send a lambda: define the function with def")
    params = inspect.getfullargspec(function).args
    if not params or params[0] != "channel":
        raise ValueError(f"function {function.__name__} must take channel as its first argument")
    if function.__closure__ is not None:
        raise ValueError(f"function {function.__name__} is not pure: it uses closure variables")
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError) as e:
        raise ValueError(f"cannot find the source of {function.__name__}: {e}") from e
    used = _find_non_builtin_globals(source, function.__code__)
    if used:
        raise ValueError(f"function {function.__name__} uses globals, which the remote side lacks", used)
    return "\n" * (function.__code__.co_firstlineno - 1) + source
