"""``python -m forkwire.client``, and the ``forkwire`` script: the client's commands."""

import gc

# What a start imports (modules, classes, functions: tens of thousands of objects) lives
# as long as the process: the collector is kept from scanning it while it is imported
# (15-20 ms of a start, measured) and at every full collection after.
gc.disable()
from forkwire.client.cli.main import main  # noqa: E402

gc.freeze()
gc.enable()

__all__ = ["main"]

if __name__ == "__main__":
    main()
