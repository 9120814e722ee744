"""Where readings are stored: one small ``Repository`` protocol, one module per backend.

Backends are chosen by URL and imported on first use, so a server that stores in SQLite
never imports asyncpg.
"""

from __future__ import annotations

import importlib
from typing import Final

from forkwire.server.storage.base import AddResult, Fanout, Key, Repository, StoredReading

__all__ = [
    "SCHEMES",
    "AddResult",
    "Fanout",
    "Key",
    "Repository",
    "StoredReading",
    "open_repository",
]

#: URL scheme -> backend module in this package.
SCHEMES: Final = {
    "memory": "memory",
    "sqlite": "sqlite",
    "postgresql": "postgres",
    "postgres": "postgres",
    "csv": "csv",
    "screen": "screen",
}


async def open_repository(url: str) -> Repository:
    """Open the repository a URL names.

    ``memory://``, ``sqlite:///relative.sqlite`` / ``sqlite:////absolute.sqlite``,
    ``postgresql://user@host:port/db?schema=NAME`` (or ``postgres://``),
    ``csv:///relative.csv`` / ``csv:////absolute.csv``, ``screen://``.

    Raises:
        ValueError: the scheme is unknown or the URL is malformed for its backend.
    """
    scheme, sep, _ = url.partition("://")
    module_name = SCHEMES.get(scheme.lower()) if sep else None
    if module_name is None:
        supported = ", ".join(f"{name}://" for name in SCHEMES)
        # The scheme only: the rest of a URL may hold a password.
        raise ValueError(f"unsupported storage scheme {scheme!r}; supported: {supported}")
    module = importlib.import_module(f"{__name__}.{module_name}")
    repo: Repository = await module.connect(url)
    return repo
