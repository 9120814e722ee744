"""``python -m forkwire``: the client commands, as the ``forkwire`` script runs them."""

from forkwire.client.__main__ import main

if __name__ == "__main__":
    main()
