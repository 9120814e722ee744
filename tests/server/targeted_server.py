"""``forkwire-server`` whose job children run ``child_targets.act_on_directive``.

Run as a script (``python tests/server/targeted_server.py ARGS``): the shutdown tests need
a real server process whose jobs can be told to hang. The script's folder is on
``sys.path``, and the forkserver inherits it, so the children import ``child_targets``.
"""

from __future__ import annotations

import functools

import child_targets

import forkwire.server.app
from forkwire.server.__main__ import main

forkwire.server.app.JobRunner = functools.partial(  # type: ignore[misc]
    forkwire.server.app.JobRunner, target=child_targets.act_on_directive
)

if __name__ == "__main__":
    main()
