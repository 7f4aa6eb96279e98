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
