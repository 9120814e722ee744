"""Optional dependencies: imported where a command needs them, one line when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from forkwire.client.errors import MissingExtra


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtra` naming the extra that installs it.

    Raises:
        MissingExtra: ``module`` (or one of its own dependencies) is not installed.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.split(".")[0] != exc.name.split(".")[0]:
            raise  # the module is there but broken: a real bug, keep the traceback
        raise MissingExtra(extra, purpose) from None
