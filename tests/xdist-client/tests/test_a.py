import os

import pytest


@pytest.mark.parametrize("i", range(20))
def test_square(i):
    assert i * i == i**2


def test_in_a_worker():
    assert os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw")
