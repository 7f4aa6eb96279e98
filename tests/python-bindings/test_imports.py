"""Import forwarding through the bindings: `//forward_imports` serves the remote side
what this interpreter can import (its sys.path), nothing installed over there."""

import sys
import textwrap

import pytest

import execnet_rs as execnet


@pytest.fixture
def hostpkg(tmp_path, monkeypatch):
    """A package with a subpackage and a data file, importable here only."""
    root = tmp_path / "hostroot"
    pkg = root / "hostpkg_fwd"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sub.calc import double\nNAME = 'hostpkg_fwd'\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "calc.py").write_text(
        textwrap.dedent(
            """
            def double(x):
                return 2 * x

            def fail():
                raise ValueError("from the host's source")
            """
        )
    )
    (pkg / "table.txt").write_text("alpha\nbeta\n")
    monkeypatch.syspath_prepend(str(root))
    return root


CODE = """
import importlib.resources, hostpkg_fwd
from hostpkg_fwd.sub import calc
text = importlib.resources.files("hostpkg_fwd").joinpath("table.txt").read_text()
channel.send((hostpkg_fwd.double(21), hostpkg_fwd.__file__, calc.__spec__.name, text))
"""


def test_a_host_package_is_imported_remotely(hostpkg):
    gw = execnet.makegateway("popen//forward_imports")
    try:
        value, file, specname, text = gw.remote_exec(CODE).receive(timeout=30)
        assert value == 42
        assert file == str(hostpkg / "hostpkg_fwd" / "__init__.py")
        assert specname == "hostpkg_fwd.sub.calc"
        assert text == "alpha\nbeta\n"
        # A remote traceback shows the host's source lines.
        ch = gw.remote_exec("from hostpkg_fwd.sub import calc; calc.fail()")
        with pytest.raises(execnet.RemoteError) as info:
            ch.receive(timeout=30)
        assert "from the host's source" in str(info.value)
        assert "calc.py" in str(info.value)
    finally:
        gw.exit()


def test_without_forward_imports_the_package_is_missing(hostpkg):
    gw = execnet.makegateway("popen")
    try:
        ch = gw.remote_exec("import hostpkg_fwd")
        with pytest.raises(execnet.RemoteError, match="No module named 'hostpkg_fwd'"):
            ch.receive(timeout=30)
    finally:
        gw.exit()


def test_only_the_named_packages_are_served(hostpkg):
    gw = execnet.makegateway("popen//forward_imports=otherpkg")
    try:
        ch = gw.remote_exec("import hostpkg_fwd")
        with pytest.raises(execnet.RemoteError, match="No module named 'hostpkg_fwd'"):
            ch.receive(timeout=30)
    finally:
        gw.exit()


def test_import_path_without_forward_imports_is_refused():
    with pytest.raises(ValueError, match="need forward_imports"):
        execnet.makegateway("popen//import_path=/tmp")
