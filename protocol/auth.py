"""Who may talk: the shared token, checked over TCP in ``hello`` and over UDP per datagram.

A server with a token answers nothing but a ``hello`` that carries it (the rule is in
:class:`~forkwire.protocol.connection.ServerConnection`). UDP has no conversation to
remember a ``hello`` by, so each datagram proves the token itself, without carrying it:
its payload is a :class:`~forkwire.protocol.messages.Sealed` envelope, whose ``mac`` is
an HMAC-SHA256, keyed by the token, of the envelope's ``ts``, ``nonce`` and ``body`` (the
request's JSON). A datagram outside the replay window (``ts`` more than
:data:`REPLAY_WINDOW` seconds from the server's clock), or with a nonce seen inside it,
is dropped: a captured datagram cannot be sent again to store or run its request twice.

Everything here is pure: the caller passes the clock, so tests can move it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from typing import Final

from pydantic import ValidationError

from forkwire.protocol.framing import encode_frame
from forkwire.protocol.messages import Sealed, decode_sealed, encode_message

#: Seconds a sealed datagram's ``ts`` may be from the server's clock, either way: a clock
#: that far off is refused, and the server remembers each nonce this long (twice over).
REPLAY_WINDOW: Final = 30.0
#: Nonces remembered at most. Past this, the oldest are forgotten and anything as old as
#: them is refused, so a forgotten nonce can never be replayed (the window only shrinks
#: under a flood of valid datagrams, which only a token holder can make).
MAX_NONCES: Final = 200_000
#: What the HMAC covers before the fields: a MAC made for another use of the same key
#: never verifies here.
_DOMAIN: Final = b"forkwire-udp-v1\n"


class TokenCheck:
    """The expected token, compared in constant time.

    A presented token is compared by its SHA-256 digest: ``hmac.compare_digest`` over two
    digests of one length takes the same time whatever the presented token's length or
    content. The token's bytes are kept too, as the key of the UDP seals' HMAC.
    """

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the token must not be empty")
        self._digest = _digest(token)
        self._key = token.encode()

    def __repr__(self) -> str:
        return "TokenCheck(***)"

    def check(self, presented: str | None) -> bool:
        """Whether ``presented`` is the token."""
        if presented is None:
            return False
        return hmac.compare_digest(_digest(presented), self._digest)

    def mac(self, sealed: Sealed) -> str:
        """The MAC a datagram sealed with this token carries."""
        return seal_mac(self._key, sealed.ts, sealed.nonce, sealed.body)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def seal_mac(key: bytes, ts: int, nonce: str, body: str) -> str:
    """HMAC-SHA256 of a sealed datagram's fields, hex."""
    message = b"%s%d\n%s\n%s" % (_DOMAIN, ts, nonce.encode(), body.encode())
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def seal(payload: bytes, token: str, now: float) -> bytes:
    """The datagram that carries ``payload`` (a request's JSON) with proof of ``token``."""
    ts = int(now * 1000)
    nonce = secrets.token_hex(12)
    body = payload.decode()
    sealed = Sealed(ts=ts, nonce=nonce, body=body, mac=seal_mac(token.encode(), ts, nonce, body))
    return encode_frame(encode_message(sealed))


class Unsealed(Exception):
    """A datagram without valid proof of the token; ``reason`` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Opener:
    """Checks sealed datagrams: the MAC, the replay window, and each nonce once."""

    def __init__(self, token: TokenCheck, *, window: float = REPLAY_WINDOW) -> None:
        self.token = token
        self.window = window
        self._seen: OrderedDict[str, int] = OrderedDict()  # nonce -> ts (ms), oldest first
        self._horizon = -1  # ts (ms) at or before which everything is refused

    def open(self, payload: bytes, now: float) -> bytes:
        """The request payload a sealed datagram carries.

        Raises:
            Unsealed: not an envelope, a wrong MAC, outside the window, or a replay.
        """
        try:
            sealed = decode_sealed(payload)
        except (ValidationError, ValueError):
            return _raise("not_sealed")
        if not hmac.compare_digest(self.token.mac(sealed), sealed.mac):
            return _raise("bad_mac")
        now_ms = int(now * 1000)
        window_ms = int(self.window * 1000)
        if abs(sealed.ts - now_ms) > window_ms:
            return _raise("outside_window")
        if sealed.ts <= self._horizon or sealed.nonce in self._seen:
            return _raise("replayed")
        self._remember(sealed.nonce, sealed.ts, now_ms - window_ms)
        return sealed.body.encode()

    def _remember(self, nonce: str, ts: int, expired_before: int) -> None:
        seen = self._seen
        seen[nonce] = ts
        # Nonces are forgotten once their ts left the window: the window refuses them then.
        # Insertion order is close to ts order; a few out-of-order entries stay a bit longer.
        while seen:
            oldest, oldest_ts = next(iter(seen.items()))
            if oldest_ts >= expired_before and len(seen) <= MAX_NONCES:
                break
            del seen[oldest]
            if oldest_ts >= expired_before:
                self._horizon = max(self._horizon, oldest_ts)

    @property
    def remembered(self) -> int:
        """Nonces held now."""
        return len(self._seen)


def _raise(reason: str) -> bytes:
    raise Unsealed(reason)
