"""execnet's ``execnet.xspec`` module: the XSpec class."""

from . import XSpec  # noqa: F401
