"""execnet's ``execnet.gateway_io`` names: the command lines execnet_rs's transports run
(crates/execnet/src/transport/popen.rs and ssh.rs build the same ones in Rust)."""

import shlex
import sys

# The first thing a new interpreter runs (the same one-liner as execnet's): it reads
# one line, a Python string literal holding the worker's source, and runs it.
popen_bootstrapline = "import sys;exec(eval(sys.stdin.readline()))"


def popen_args(spec):
    """The popen transport's command: the interpreter, ``-u``, ``-B`` with
    dont_write_bytecode, then the bootstrap one-liner."""
    args = shlex.split(spec.python) if spec.python else [sys.executable]
    args.append("-u")
    if spec.dont_write_bytecode:
        args.append("-B")
    args += ["-c", popen_bootstrapline]
    return args


def ssh_args(spec):
    """The ssh transport's command (without connection sharing): ``ssh -C``, the
    spec's ssh_config and host words, ``-T``, then the remote interpreter and the
    one-liner."""
    python = spec.python or "python3"
    args = ["ssh", "-C"]
    if spec.ssh_config is not None:
        args += ["-F", str(spec.ssh_config)]
    args += str(spec.ssh).split()
    args.append("-T")
    args.append(f"{python} -c '{popen_bootstrapline}'")
    return args


def vagrant_ssh_args(spec):
    raise ValueError("vagrant_ssh gateways are not supported by execnet_rs: use ssh= with the VM's address")
