"""Compares one upstream suite's two runs (junit XML files) and judges the difference.

    python scripts/upstream_compare.py SUITE REF.xml RS.xml KNOWN-DIFFERENCES.txt
        [--unexpected-out FILE] [--rerun RERUN.xml]

Prints a Markdown table per test file (passed/failed/skipped on execnet and on
execnet_rs), the skip reasons of each side, and each entry of the known-differences
list with how many tests it covers. Exits 1 when:

- a test passes on execnet and not on execnet_rs, and no list entry covers it;
- a list entry covers a test that passes on execnet_rs, or no test that ran there (it
  is stale: the list must stay true; an entry whose tests failed on execnet too, as a
  few of execnet's racier tests do under load, is reported but not stale);
- a test is skipped for want of something the run should have provided (a module, a
  --gx spec, an interpreter): the suites are run with all of that, so such a skip means
  the set-up is broken, not that the test does not apply;
- execnet_rs's run has no results at all.

A few of execnet's own tests race under load on both sides (test__rinfo: the remote
code's ``os.chdir`` after its ``send`` against the host's next ``remote_exec``).
``--unexpected-out`` writes the node ids judged unexpected, one per line, for
upstream-suites.sh to run once more on execnet_rs alone; given that run's results with
``--rerun``, a test that passes there is reported as passing on the rerun and not held
against execnet_rs (a test that fails twice is).

List entries: ``SUITE NODEID | reason`` (the node id covers all its parametrizations
and, for a class, its tests), or ``SUITE param:NAME | reason`` for every test with the
parametrization NAME (e.g. ``param:gevent``). ``SUITE ~NODEID | reason`` is a test whose
outcome on execnet_rs depends on timing (it may pass or fail, and is reported either
way; it must run).
"""

import argparse
import collections
import os
import re
import sys
import xml.etree.ElementTree as ET

# Skips that say the run lacked something it is meant to have.
ENVIRONMENT_SKIP = re.compile(r"could not import|gspecs|need '--gx|no \S+ found|command not found")


def outcomes(path):
    """{node id: (kind, skip reason)} from a junit XML file."""
    result = {}
    for case in ET.parse(path).iter("testcase"):
        parts = case.get("classname", "").split(".")  # testing.test_x.TestClass
        if parts[0] == "testing" and len(parts) > 1:
            module, rest = "/".join(parts[:2]) + ".py", parts[2:]
        else:
            module, rest = parts[0] + ".py", parts[1:]
        kind, reason = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                kind = "failed"
            elif child.tag == "skipped" and kind == "passed":
                kind, reason = "skipped", child.get("message") or ""
        result["::".join([module] + rest + [case.get("name")])] = (kind, reason)
    return result


def known_differences(path, suite):
    known = {}
    for line in open(path, encoding="utf-8"):
        if line.strip() and not line.startswith("#"):
            head, reason = line.split("|", 1)
            entry_suite, node = head.split()
            if entry_suite == suite:
                known[node] = reason.strip()
    return known


def covers(node, test):
    if node.startswith("param:"):
        params = test[test.index("[") + 1 : -1].split("-") if test.endswith("]") else []
        return node[len("param:") :] in params
    return test == node or test.startswith(node + "[") or test.startswith(node + "::")


def main(suite, ref_xml, rs_xml, list_path, unexpected_out=None, rerun_xml=None):
    for path in (ref_xml, rs_xml):
        if not os.path.exists(path):
            print(f"{suite}: FAILED: no results in {path} (the run's log, beside it, says why)")
            return 1
    ref, rs = outcomes(ref_xml), outcomes(rs_xml)
    table = collections.defaultdict(lambda: (collections.Counter(), collections.Counter()))
    for side, results in ((0, ref), (1, rs)):
        for test, (kind, _) in results.items():
            table[test.split("::")[0]][side][kind] += 1

    def cell(c):
        return "%d/%d/%d" % (c["passed"], c["failed"], c["skipped"])

    print(f"| {suite}: file | execnet passed/failed/skipped | execnet_rs passed/failed/skipped |")
    print("|---|---|---|")
    totals = (collections.Counter(), collections.Counter())
    for name in sorted(table):
        a, b = table[name]
        totals[0].update(a)
        totals[1].update(b)
        print(f"| {name} | {cell(a)} | {cell(b)} |")
    print(f"| **all** | **{cell(totals[0])}** | **{cell(totals[1])}** |")

    bad_skips = []
    for label, results in (("execnet", ref), ("execnet_rs", rs)):
        reasons = collections.Counter(r for kind, r in results.values() if kind == "skipped")
        for reason, n in reasons.most_common():
            print(f"skipped on {label}: {n} x {reason}")
            if ENVIRONMENT_SKIP.search(reason):
                bad_skips.append(f"{label}: {n} x {reason}")

    known = known_differences(list_path, suite)
    timing = {n[1:]: r for n, r in known.items() if n.startswith("~")}
    known = {n: r for n, r in known.items() if not n.startswith("~")}
    timing_tests = {t for t in rs if any(covers(n, t) for n in timing)}
    for node, reason in timing.items():
        got = collections.Counter(rs[t][0] for t in timing_tests if covers(node, t))
        print(f"timing-dependent: {node} ({reason}): {dict(got) or 'NOT RUN'}")
    worse = sorted(
        t
        for t, (k, _) in ref.items()
        if k == "passed" and rs.get(t, ("",))[0] != "passed" and t not in timing_tests
    )
    print(f"{len(worse)} tests pass on execnet but not on execnet_rs:")
    for node, reason in known.items():
        n = sum(covers(node, t) for t in worse)
        print(f"  {n:4d} listed: {node} ({reason})")
    unexpected = [t for t in worse if not any(covers(n, t) for n in known)]
    if rerun_xml:
        again = outcomes(rerun_xml) if os.path.exists(rerun_xml) else {}
        for t in [t for t in unexpected if again.get(t, ("",))[0] == "passed"]:
            print(f"  failed, then passed when run again alone: {t}")
            unexpected.remove(t)
    for t in unexpected:
        print(f"  UNEXPECTED: {t}")
    if unexpected_out:
        with open(unexpected_out, "w", encoding="utf-8") as out:
            out.writelines(t + "\n" for t in unexpected)
    stale = []
    for node in known:
        passing = sorted(t for t, (k, _) in rs.items() if k == "passed" and covers(node, t))
        if passing:
            stale.append(f"{node}: passes on execnet_rs: {', '.join(passing[:5])}")
        elif not any(covers(node, t) for t in rs):
            stale.append(f"{node}: not run on execnet_rs")
    stale += ["~" + n + ": not run on execnet_rs" for n in timing if not any(covers(n, t) for t in timing_tests)]
    for n in stale:
        print(f"STALE: listed in {list_path}: {n}")
    for s in bad_skips:
        print(f"SKIPPED FOR WANT OF SET-UP: {s}")
    if not rs:
        print("no results from execnet_rs")
    failed = bool(unexpected or stale or bad_skips or not rs)
    print(f"{suite}: {'FAILED' if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("ref_xml")
    parser.add_argument("rs_xml")
    parser.add_argument("list_path")
    parser.add_argument("--unexpected-out")
    parser.add_argument("--rerun", dest="rerun_xml")
    sys.exit(main(**vars(parser.parse_args())))
