"""TLS for the TCP listener: the context from the settings, and the handshake per connection.

The handshake is done here, after the connection is accepted, rather than by the
listener: asyncio's listener drops a failed handshake silently (it logs only in debug
mode), and a server whose clients cannot connect must say why. The failures are logged
rate-limited, since anyone who reaches the port can cause them at will.
"""

from __future__ import annotations

import asyncio
import ssl

import structlog

from forkwire.server.config import Settings
from forkwire.server.logs import RateLimitedLog

log = structlog.get_logger("forkwire.tls")

#: One ``tls_handshake_failed`` line per reason per this many seconds at most.
LOG_EVERY = 10.0


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2 and later), or None without ``--tls-cert``.

    Raises:
        OSError: a file cannot be read, or is not a certificate or key (ssl.SSLError).
    """
    if settings.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca is not None:
        context.load_verify_locations(cafile=settings.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class Handshakes:
    """Runs each connection's TLS handshake, bounded in time, and logs the failures."""

    def __init__(self, context: ssl.SSLContext, timeout: float) -> None:
        self.context = context
        self.timeout = timeout
        self._log = RateLimitedLog(log, every=LOG_EVERY)

    async def secure(self, writer: asyncio.StreamWriter) -> str | None:
        """Upgrade the accepted connection to TLS; return why it failed (it is then
        aborted), or None."""
        try:
            async with asyncio.timeout(self.timeout):
                await writer.start_tls(self.context)
        except TimeoutError:
            reason = "timeout"
        except ssl.SSLError as exc:
            # WRONG_VERSION_NUMBER: a plain forkwire client; HTTP_REQUEST: a browser...
            reason = exc.reason or type(exc).__name__
        except (ConnectionError, OSError) as exc:
            reason = type(exc).__name__
        else:
            return None
        writer.transport.abort()
        peer = writer.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            peer = f"{peer[0]}:{peer[1]}"
        self._log.warning(
            "tls_handshake_failed",
            key=reason,
            reason=reason,
            peer=str(peer),
        )
        return reason
