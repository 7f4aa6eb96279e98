import os

import pytest


@pytest.mark.parametrize("i", range(20))
def test_square(i):
    assert i * i == i**2


def test_in_a_worker():
    assert os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw")


def test_runs_from_the_rsynced_copy():
    # scripts/test.sh's --rsyncdir run sets this: the workers must run the copy that
    # execnet_rs's RSync made in their chdir, not the original files
    where = os.environ.get("XDIST_CLIENT_RSYNC_DIR")
    if not where:
        pytest.skip("not an --rsyncdir run")
    assert os.path.realpath(__file__).startswith(os.path.realpath(where) + os.sep)


def test_runs_on_the_bare_interpreter_with_forwarded_imports():
    # scripts/test.sh's import-forwarding run sets this: the workers run an interpreter
    # with nothing installed. xdist's remote module imports pytest before anything else,
    # so pytest and _pytest come from the host over the import channel (later imports
    # may be local: for popen workers xdist hands over the controller's sys.path).
    bare = os.environ.get("XDIST_CLIENT_BARE_PYTHON")
    if not bare:
        pytest.skip("not an import-forwarding run")
    import sys

    assert os.path.realpath(sys.prefix) == os.path.realpath(os.path.dirname(os.path.dirname(bare)))
    assert pytest.__path__ == [], "pytest was forwarded from the host"
    loader = sys.modules["_pytest.config"].__spec__.loader
    assert type(loader).__name__ == "_Loader" and hasattr(loader, "host"), loader
