"""`py`, as the py.execnet 1.0 documentation spells it: ``py.execnet.PopenGateway()``,
``py.std.os``. Lets that documentation's examples run unchanged but for the import line:
``from execnet_rs.seedcompat import py``."""

import importlib
import types

import execnet_rs


class _Std:
    """``py.std.NAME`` imports the standard module NAME."""

    def __getattr__(self, name):
        return importlib.import_module(name)


py = types.SimpleNamespace(execnet=execnet_rs, std=_Std())
