# Makes pytest-xdist use execnet_rs wherever it imports execnet (on the controller side;
# the workers run xdist's remote module in execnet-rs's own worker).
# Workers leave `execnet` alone: they may run on an interpreter that has nothing
# installed (the import-forwarding run of scripts/test.sh), where execnet_rs, a compiled
# package, cannot be forwarded.
import os
import sys

if "PYTEST_XDIST_WORKER" not in os.environ:
    import execnet_rs

    execnet_rs.install_as_execnet()


def pytest_report_header(config):
    # scripts/test.sh checks this line: the controller really runs on execnet_rs.
    which = "execnet_rs" if sys.modules["execnet"] is sys.modules.get("execnet_rs") else "the execnet package"
    return f"xdist-client: execnet is {which}"
