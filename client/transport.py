"""How a client reaches the server: the one list of transports every command offers."""

from __future__ import annotations

import enum


class Transport(enum.StrEnum):
    """A TCP stream of frames, or one frame per UDP datagram."""

    tcp = "tcp"
    udp = "udp"
