"""The judgement of scripts/upstream_compare.py, which decides whether the upstream-suites
stage of scripts/test.sh is green: on small junit files written here."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "upstream_compare.py"


def junit(path, cases):
    """cases: {(classname, name): "passed" | "failed" | "skipped"}."""
    body = []
    for (cls, name), kind in cases.items():
        inner = {"passed": "", "failed": '<failure message="boom">boom</failure>',
                 "skipped": '<skipped message="why" />'}[kind]
        body.append(f'<testcase classname="{cls}" name="{name}">{inner}</testcase>')
    path.write_text(f'<testsuites><testsuite>{"".join(body)}</testsuite></testsuites>')
    return path


def judge(tmp_path, ref, rs, listed, rerun=None):
    known = tmp_path / "known.txt"
    known.write_text("# comment\n" + "".join(f"execnet {n} | a reason\n" for n in listed))
    args = [sys.executable, str(SCRIPT), "execnet", str(junit(tmp_path / "ref.xml", ref)),
            str(junit(tmp_path / "rs.xml", rs)), str(known),
            "--unexpected-out", str(tmp_path / "unexpected.txt")]
    if rerun is not None:
        args += ["--rerun", str(junit(tmp_path / "rerun.xml", rerun))]
    proc = subprocess.run(args, capture_output=True, text=True)
    return proc.returncode, proc.stdout


A = ("testing.test_a", "test_one")
B = ("testing.test_a", "test_two")
A_ID = "testing/test_a.py::test_one"


def test_same_outcomes_are_ok(tmp_path):
    code, out = judge(tmp_path, {A: "passed", B: "skipped"}, {A: "passed", B: "skipped"}, [])
    assert code == 0, out
    assert "| testing/test_a.py | 1/0/1 | 1/0/1 |" in out


def test_a_test_failing_only_on_execnet_rs_fails_the_stage_and_is_named(tmp_path):
    code, out = judge(tmp_path, {A: "passed"}, {A: "failed"}, [])
    assert code == 1
    assert f"UNEXPECTED: {A_ID}" in out
    assert (tmp_path / "unexpected.txt").read_text() == A_ID + "\n"


def test_a_listed_failure_is_ok(tmp_path):
    code, out = judge(tmp_path, {A: "passed"}, {A: "failed"}, [A_ID])
    assert code == 0, out


def test_a_listed_test_that_passes_on_execnet_rs_is_stale(tmp_path):
    code, out = judge(tmp_path, {A: "passed"}, {A: "passed"}, [A_ID])
    assert code == 1
    assert "STALE" in out and "passes on execnet_rs" in out


def test_a_listed_test_that_did_not_run_is_stale(tmp_path):
    code, out = judge(tmp_path, {A: "passed", B: "passed"}, {B: "passed"}, [A_ID])
    assert code == 1
    assert "not run on execnet_rs" in out


def test_a_listed_test_that_failed_on_execnet_too_is_not_stale(tmp_path):
    # one of execnet's racy tests failing on the reference must not turn the stage red
    code, out = judge(tmp_path, {A: "failed"}, {A: "failed"}, [A_ID])
    assert code == 0, out
    assert "0 listed" in out


def test_a_failure_that_passes_when_run_again_is_ok_and_twice_is_not(tmp_path):
    code, out = judge(tmp_path, {A: "passed"}, {A: "failed"}, [], rerun={A: "passed"})
    assert code == 0, out
    assert "passed when run again alone" in out
    code, out = judge(tmp_path, {A: "passed"}, {A: "failed"}, [], rerun={A: "failed"})
    assert code == 1


@pytest.mark.parametrize("outcome", ["passed", "failed"])
def test_a_timing_dependent_test_may_go_either_way_but_must_run(tmp_path, outcome):
    code, out = judge(tmp_path, {A: "passed"}, {A: outcome}, ["~" + A_ID])
    assert code == 0, out
    code, out = judge(tmp_path, {A: "passed", B: "passed"}, {B: "passed"}, ["~" + A_ID])
    assert code == 1 and "not run on execnet_rs" in out
