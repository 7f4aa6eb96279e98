"""Makes execnet_rs stand in for the execnet package in a whole Python environment.

    python -m execnet_rs.standin install     # every interpreter of this environment
    python -m execnet_rs.standin uninstall
    python -m execnet_rs.standin status

``install`` writes ``execnet_rs_standin.pth`` into the environment's site-packages; it
names a directory holding a small ``execnet`` package whose import calls
``execnet_rs.install_as_execnet()``. So every interpreter of the environment that
imports ``execnet`` gets execnet_rs: subprocesses, pytest-xdist's controller and its
popen workers alike. Nothing is imported until some code imports ``execnet``.

It refuses when the execnet package itself is installed there (one of the two would
shadow the other depending on sys.path order): ``pip uninstall execnet`` first.
"""

import importlib.util
import os
import sys
import sysconfig

PTH_NAME = "execnet_rs_standin.pth"
STANDIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_standin")


def _site_packages():
    return sysconfig.get_paths()["purelib"]


def _pth_path():
    return os.path.join(_site_packages(), PTH_NAME)


def _real_execnet():
    """Where the execnet package is installed, or None."""
    spec = importlib.util.find_spec("execnet") if "execnet" not in sys.modules else sys.modules["execnet"].__spec__
    if spec is None or spec.origin is None:
        return None
    origin = os.path.abspath(spec.origin)
    if origin.startswith(STANDIN_DIR + os.sep) or origin.startswith(os.path.dirname(STANDIN_DIR) + os.sep):
        return None
    return origin


def install():
    real = _real_execnet()
    if real is not None:
        sys.exit(f"execnet_rs.standin: the execnet package is installed ({real}); "
                 "uninstall it first (pip uninstall execnet), then run this again")
    with open(_pth_path(), "w") as f:
        f.write(STANDIN_DIR + "\n")
    print(f"execnet_rs stands in for execnet in {sys.prefix} ({_pth_path()})")


def uninstall():
    try:
        os.remove(_pth_path())
    except FileNotFoundError:
        print("execnet_rs.standin: it was not installed here")
        return
    print(f"removed {_pth_path()}")


def status():
    if os.path.exists(_pth_path()):
        print(f"installed: {_pth_path()}")
    else:
        print("not installed")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    commands = {"install": install, "uninstall": uninstall, "status": status}
    if len(argv) != 1 or argv[0] not in commands:
        sys.exit("usage: python -m execnet_rs.standin install|uninstall|status")
    commands[argv[0]]()


if __name__ == "__main__":
    main()
