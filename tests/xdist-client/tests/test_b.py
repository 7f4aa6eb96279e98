import pytest


@pytest.mark.parametrize("word", ["alpha", "beta", "gamma", "delta"])
def test_words(word):
    assert word.isalpha()


@pytest.mark.xfail(reason="shows that failures travel back as reports")
def test_expected_failure():
    assert 0
