"""Where readings are stored: one small ``Repository`` protocol, one module per backend.

Backends are chosen by URL and imported on first use, so a server that stores in SQLite
never imports asyncpg. ``screen://`` is no store (it keeps nothing): it can only be a sink
(see ``forkwire.server.sinks``).
"""

from __future__ import annotations

import importlib
from typing import Final

from forkwire.server.sinks import Sink
from forkwire.server.storage.base import (
    AddResult,
    Durability,
    Entry,
    Key,
    Repository,
    SchemaError,
    StoredReading,
)

__all__ = [
    "SCHEMES",
    "AddResult",
    "Durability",
    "Entry",
    "Key",
    "Repository",
    "SchemaError",
    "StoredReading",
    "open_repository",
    "open_sink",
]

#: URL scheme -> backend module in this package, for the stores.
SCHEMES: Final = {
    "memory": "memory",
    "sqlite": "sqlite",
    "postgresql": "postgres",
    "postgres": "postgres",
    "csv": "csv",
}
#: The extra that installs a backend's driver.
_EXTRAS: Final = {"postgres": "postgres"}


#: Seconds a storage call may take, unless told otherwise (``--storage-timeout``).
DEFAULT_TIMEOUT: Final = 10.0


async def open_repository(
    url: str, durability: Durability = "normal", *, storage_timeout: float = DEFAULT_TIMEOUT
) -> Repository:
    """Open the store a URL names.

    ``memory://``, ``sqlite:///relative.sqlite`` / ``sqlite:////absolute.sqlite``,
    ``postgresql://user@host:port/db?schema=NAME`` (or ``postgres://``),
    ``csv:///relative.csv`` / ``csv:////absolute.csv``.

    Raises:
        ValueError: the scheme is unknown, names a sink, the URL is malformed for its
            backend, or the backend's driver is not installed.
        SchemaError: the store was written by a newer forkwire.
        TimeoutError: the database did not answer within ``storage_timeout`` seconds (which also
            bounds each statement of PostgreSQL and SQLite's wait for a lock).
    """
    scheme, sep, _ = url.partition("://")
    module_name = SCHEMES.get(scheme.lower()) if sep else None
    if module_name is None:
        if sep and scheme.lower() == "screen":
            raise ValueError(
                "screen:// keeps nothing, so it cannot be the store: give a store first "
                "(--db sqlite:///forkwire.sqlite --db screen://)"
            )
        supported = ", ".join(f"{name}://" for name in SCHEMES)
        # The scheme only: the rest of a URL may hold a password.
        raise ValueError(f"unsupported storage scheme {scheme!r}; supported: {supported}")
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get(module_name)
        if extra is None or exc.name == f"{__name__}.{module_name}":
            raise
        raise ValueError(
            f"{scheme}:// needs the '{extra}' extra: pip install 'forkwire[{extra}]'"
        ) from None
    if module_name == "memory":
        repo: Repository = await module.connect(url)
    elif module_name in ("sqlite", "postgres"):
        repo = await module.connect(url, durability, storage_timeout=storage_timeout)
    else:
        repo = await module.connect(url, durability)
    return repo


async def open_sink(
    url: str, durability: Durability = "normal", *, storage_timeout: float = DEFAULT_TIMEOUT
) -> Sink:
    """Open a sink: ``screen://``, or any store URL (a mirror).

    Raises:
        ValueError: as :func:`open_repository`.
    """
    if url.partition("://")[0].lower() == "screen":
        from forkwire.server.storage.screen import ScreenSink

        return ScreenSink()
    return await open_repository(url, durability, storage_timeout=storage_timeout)
