"""``forkwire-server`` whose job children run ``child_targets.act_on_directive``, and
whose memory:// store never finishes closing when ``HANG_STORE_CLOSE`` is set.

Run as a script (``python tests/server/targeted_server.py ARGS``): the shutdown tests need
a real server process whose jobs can be told to hang. The script's folder is on
``sys.path``, and the forkserver inherits it, so the children import ``child_targets``.
"""

from __future__ import annotations

import asyncio
import functools
import os

import child_targets

import forkwire.server.app
from forkwire.server.__main__ import main
from forkwire.server.storage.memory import MemoryRepository

forkwire.server.app.JobRunner = functools.partial(  # type: ignore[misc]
    forkwire.server.app.JobRunner, target=child_targets.act_on_directive
)


async def _never(self: MemoryRepository) -> None:
    # Like a driver stuck in a close: deaf to cancellation too.
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue


if os.environ.get("HANG_STORE_CLOSE"):
    MemoryRepository.close = _never  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
