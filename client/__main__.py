"""``python -m forkwire.client``, and the ``forkwire`` script: the client's commands."""

from forkwire.client.cli.main import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
