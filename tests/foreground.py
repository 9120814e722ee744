"""Run ``python -m forkwire ...`` the way a shell runs a foreground command: Ctrl-C works.

A shell script that starts a command in the background (``pytest ... &``) gives it, and
every process it starts, SIGINT ignored; Python then installs no KeyboardInterrupt handler
and a test's SIGINT would be ignored. Tests that send SIGINT start the client through this.
"""

import runpy
import signal
import sys

if __name__ == "__main__":
    # This folder holds test packages named like the real ones (tests/protocol, ...).
    sys.path.remove(sys.path[0])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = ["forkwire", *sys.argv[1:]]
    runpy.run_module("forkwire", run_name="__main__", alter_sys=True)
