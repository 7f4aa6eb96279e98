"""execnet_rs.RSync: a source tree synced to popen gateways' directories."""

import os
import time

import pytest

import execnet_rs as execnet


def snapshot(top):
    """{relative path: what a user sees there} for everything under top."""
    seen = {}
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, top)
            if os.path.islink(path):
                seen[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                seen[rel] = ("dir",)
            else:
                with open(path, "rb") as f:
                    seen[rel] = ("file", f.read(), os.stat(path).st_mode & 0o777)
    return seen


@pytest.fixture
def two_gateways():
    group = execnet.Group()
    gws = [group.makegateway("popen//id=r1"), group.makegateway("popen//id=r2")]
    yield gws
    group.terminate(timeout=5)


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "source"
    (src / "pkg" / "sub").mkdir(parents=True)
    (src / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (src / "pkg" / "sub" / "data.bin").write_bytes(bytes(range(256)) * 300)
    (src / "pkg" / "sub" / "empty").write_bytes(b"")
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    (src / "old.txt").write_text("to be deleted\n")
    (src / "emptydir").mkdir()
    os.symlink("pkg/__init__.py", src / "rel-link")  # relative, inside the tree
    os.symlink(src / "pkg" / "sub", src / "abs-link")  # absolute, inside the tree
    os.symlink("/nonexistent/elsewhere", src / "outside-link")  # outside: copied as is
    return src


def test_tree_with_symlinks_and_a_deleted_file_reaches_two_gateways(two_gateways, source, tmp_path, within):
    gw1, gw2 = two_gateways
    dest1, dest2 = tmp_path / "dest1", tmp_path / "dest2"
    dest1.mkdir()
    (dest1 / "stale.txt").write_text("only at the target\n")
    finished = []

    rsync = execnet.RSync(source, verbose=False)
    rsync.add_target(gw1, dest1, finishedcallback=lambda: finished.append(1), delete=True)
    rsync.add_target(gw2, str(dest2), finishedcallback=lambda: finished.append(2))
    within(60, rsync.send)
    assert finished == [1, 2]

    want = snapshot(source)
    # an absolute link into the source tree points into the target tree instead
    want["abs-link"] = ("link", str(dest1 / "pkg" / "sub"))
    assert snapshot(dest1) == want  # stale.txt removed: delete=True
    want["abs-link"] = ("link", str(dest2 / "pkg" / "sub"))
    assert snapshot(dest2) == want
    assert (dest1 / "rel-link").read_text() == "VALUE = 1\n"
    assert sorted(os.listdir(dest2 / "abs-link")) == ["data.bin", "empty"]

    # the source changes: a file deleted, one changed, one added
    (source / "old.txt").unlink()
    (source / "pkg" / "__init__.py").write_text("VALUE = 2  # changed\n")
    (source / "pkg" / "new.py").write_text("NEW = True\n")
    rsync = execnet.RSync(source, verbose=False)
    rsync.add_target(gw1, dest1, delete=True)
    rsync.add_target(gw2, dest2)
    within(60, rsync.send)
    assert not (dest1 / "old.txt").exists()
    assert (dest2 / "old.txt").read_text() == "to be deleted\n"  # no delete for dest2
    for dest in (dest1, dest2):
        assert (dest / "pkg" / "__init__.py").read_text() == "VALUE = 2  # changed\n"
        assert (dest / "pkg" / "new.py").read_text() == "NEW = True\n"
        assert (dest / "pkg" / "sub" / "data.bin").read_bytes() == bytes(range(256)) * 300
        assert os.access(dest / "run.sh", os.X_OK)
    got = snapshot(dest1)
    want = snapshot(source)
    want["abs-link"] = ("link", str(dest1 / "pkg" / "sub"))
    assert got == want


def test_relative_destdir_is_in_the_workers_directory(tmp_path, source, within):
    work = tmp_path / "work"
    work.mkdir()
    group = execnet.Group()
    try:
        gw = group.makegateway(f"popen//chdir={work}")
        rsync = execnet.RSync(source, verbose=False)
        rsync.add_target(gw, "copy")
        within(60, rsync.send)
        assert (work / "copy" / "pkg" / "__init__.py").read_text() == "VALUE = 1\n"
    finally:
        group.terminate(timeout=5)


def test_only_changed_files_are_sent_and_reported(two_gateways, source, tmp_path, capsys, within):
    gw = two_gateways[0]
    calls = []

    def send(verbose):
        rsync = execnet.RSync(source, callback=lambda cmd, size, ch: calls.append((cmd, size)), verbose=verbose)
        rsync.add_target(gw, tmp_path / "dest")
        within(60, rsync.send)

    sizes = {
        "pkg/__init__.py": 10, "pkg/sub/data.bin": 76800, "pkg/sub/empty": 0, "run.sh": 18, "old.txt": 14,
    }
    send(verbose=True)
    assert calls[0] == ("list", sum(sizes.values()))
    assert sorted(calls[1:]) == sorted(("ack", n) for n in sizes.values())
    out = capsys.readouterr().out
    for rel in sizes:
        assert f"<= {rel}" in out, out

    calls.clear()
    send(verbose=True)
    assert calls == [("list", sum(sizes.values()))]  # nothing sent again
    assert capsys.readouterr().out == ""

    calls.clear()
    (source / "run.sh").write_text("#!/bin/sh\necho changed\n")
    send(verbose=False)
    assert calls == [("list", sum(sizes.values()) + 5), ("ack", 23)]
    assert capsys.readouterr().out == ""  # not verbose
    assert (tmp_path / "dest" / "run.sh").read_text() == "#!/bin/sh\necho changed\n"


def test_filter_leaves_paths_out(two_gateways, source, tmp_path, within):
    seen = []

    class Filtered(execnet.RSync):
        def filter(self, path):
            seen.append(path)
            return os.path.basename(path) not in ("sub", "old.txt")

    rsync = Filtered(source, verbose=False)
    rsync.add_target(two_gateways[0], tmp_path / "dest")
    within(60, rsync.send)
    got = snapshot(tmp_path / "dest")
    assert "old.txt" not in got and "pkg/sub" not in got and "pkg/sub/data.bin" not in got
    assert got["pkg/__init__.py"][1] == b"VALUE = 1\n"
    assert str(source / "pkg" / "sub") in seen
    assert str(source / "pkg" / "sub" / "data.bin") not in seen  # not entered
    assert str(source) not in seen


def test_send_without_targets(two_gateways, source, tmp_path, within):
    rsync = execnet.RSync(source, verbose=False)
    with pytest.raises(OSError):
        rsync.send()
    assert rsync.send(raises=False) is None
    rsync.add_target(two_gateways[0], tmp_path / "d1")
    within(60, rsync.send)
    # targets are used up by a send
    with pytest.raises(OSError):
        rsync.send()
    with pytest.raises(TypeError):
        rsync.add_target(two_gateways[0], tmp_path / "d2", bogus=True)


def test_remote_failure_raises_and_releases_the_other_target(two_gateways, source, tmp_path, within):
    gw1, gw2 = two_gateways
    blocked = tmp_path / "a-file"
    blocked.write_text("a file where a directory should be\n")
    rsync = execnet.RSync(source, verbose=False)
    rsync.add_target(gw1, blocked)
    rsync.add_target(gw2, tmp_path / "fine")
    with pytest.raises(execnet.RemoteError) as info:
        within(60, rsync.send)
    assert "FileExistsError" in str(info.value) or "NotADirectoryError" in str(info.value), info.value
    # the second target's receiver was told to stop: its gateway is free for more work
    assert within(30, lambda: gw2.remote_exec("channel.send(7)").receive(timeout=20)) == 7
    deadline = time.monotonic() + 20
    while gw2.remote_status().numexecuting and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw2.remote_status().numexecuting == 0


def test_directory_permissions_are_copied_even_read_only_ones(tmp_path):
    # execnet's own suite (test_rsync.py::test_permissions) found directories created
    # with the default mode.
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "private").mkdir(parents=True)
    (src / "private" / "f").write_text("x")
    (src / "private").chmod(0o700)
    (src / "frozen").mkdir()
    (src / "frozen" / "g").write_text("y")
    (src / "frozen").chmod(0o555)
    gw = execnet.makegateway("popen")
    try:
        rsync = execnet.RSync(src, verbose=False)
        rsync.add_target(gw, dest)
        rsync.send()
        assert (dest / "private").stat().st_mode & 0o777 == 0o700
        assert (dest / "frozen").stat().st_mode & 0o777 == 0o555
        assert (dest / "frozen" / "g").read_text() == "y"
    finally:
        gw.exit()
        for d in (src / "frozen", dest / "frozen"):
            if d.exists():
                d.chmod(0o755)
