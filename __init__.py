"""forkwire: arithmetic jobs in per-job child processes, and durable sensor ingest.

This checkout is the ``forkwire`` package. Installed (``pip install .``), its folders
``protocol/``, ``server/`` and ``client/`` become ``forkwire.protocol`` (the wire format,
sans-IO), ``forkwire.server`` (the daemon) and ``forkwire.client`` (the commands); see
``package-dir`` in pyproject.toml.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    # Looked up on first use: importlib.metadata pulls in email, and with it socket,
    # which forkwire.protocol promises not to import.
    if name == "__version__":
        from importlib.metadata import version

        return version("forkwire")
    raise AttributeError(f"module 'forkwire' has no attribute {name!r}")
