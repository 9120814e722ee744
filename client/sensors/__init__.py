"""``forkwire sensors``: a fleet of sensors streaming readings through one outbox and network."""

from typing import Final

#: Readings per frame (``--batch``): a reading is about 80 bytes of JSON, so 500 make a
#: 40 KB frame, far below the server's 1 MiB max_frame, and drain a backlog of 100,000 in
#: 200 round trips. Here, not in ``config``, so that the command line reads it without
#: importing the fleet (and numpy).
DEFAULT_BATCH: Final = 500
