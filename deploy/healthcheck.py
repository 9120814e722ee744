"""Is the forkwire server here healthy? Exit 0 when it answers a ``hello`` with a
``welcome``, 1 otherwise, saying why on stderr.

The container's HEALTHCHECK runs it (Dockerfile). Standard library only, so it runs in the
slim image with nothing else installed and does not depend on the client's commands. The
port is ``FORKWIRE_PORT`` (the server's own setting, 7700 unless set) or the first
argument; the host is 127.0.0.1 unless a second argument names another.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys

TIMEOUT = 3.0
HELLO = json.dumps({"type": "hello", "client": "healthcheck"}, separators=(",", ":")).encode()


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def check(host: str, port: int) -> str | None:
    """None when the server welcomes a hello, else what went wrong."""
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
            sock.sendall(struct.pack(">I", len(HELLO)) + HELLO)
            (size,) = struct.unpack(">I", _read_exactly(sock, 4))
            if size > 1 << 20:
                return f"{host}:{port} announced a {size}-byte frame: not a forkwire server"
            reply = json.loads(_read_exactly(sock, size))
    except (OSError, ValueError) as exc:
        return f"{host}:{port}: {exc}"
    if not isinstance(reply, dict) or reply.get("type") != "welcome":
        return f"{host}:{port} answered the hello with {reply!r:.200}"
    return None


def main(argv: list[str]) -> int:
    port = int(argv[1]) if len(argv) > 1 else int(os.environ.get("FORKWIRE_PORT") or 7700)
    host = argv[2] if len(argv) > 2 else "127.0.0.1"
    problem = check(host, port)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
