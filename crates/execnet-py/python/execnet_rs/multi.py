"""execnet's ``execnet.multi`` names: groups, multi-channels and safe_terminate."""

from . import Group, MultiChannel, default_group, makegateway, set_execmodel  # noqa: F401
from .gateway_base import WorkerPool


def safe_terminate(execmodel, timeout, list_of_paired_functions):
    """Calls each pair's first function (terminate) in a thread of its own; a pair
    whose terminate has not returned within `timeout` seconds gets its second one
    (kill) called. Returns when every pair is done."""
    pool = WorkerPool(execmodel)

    def term_then_kill(term, kill):
        try:
            pool.spawn(term).get(timeout=timeout)
        except OSError:
            kill()

    replies = [pool.spawn(term_then_kill, term, kill) for term, kill in list_of_paired_functions]
    for reply in replies:
        reply.get()
    pool.waitall(timeout=timeout)
