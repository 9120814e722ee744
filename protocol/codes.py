"""The names on the wire: error codes, expression error codes, and ``stats`` counters.

Both sides use these instead of bare strings. The wire itself carries plain strings, and a
peer must accept a code or counter it does not know (a newer server may add some), so the
message models type these fields as ``str``; the enums are the list this version sends.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """``error.code``: why the server refused a frame or a request.

    :data:`CLOSING_CODES` says which of them end the connection after they are sent.
    """

    #: A frame header declared more than ``max_frame`` bytes; the body is never read.
    FRAME_TOO_LARGE = "frame_too_large"
    #: The stream ended, or a datagram was cut, inside a frame (never sent; logged).
    TRUNCATED_FRAME = "truncated_frame"
    #: The payload is not UTF-8 JSON, or not a JSON object.
    BAD_JSON = "bad_json"
    #: The object has no ``type``, or one that no message of this version has.
    UNKNOWN_TYPE = "unknown_type"
    #: A known request whose fields fail validation; ``ref`` names its ``id`` if readable.
    BAD_MESSAGE = "bad_message"
    #: A message only the server sends (``welcome``, ``ack``, ...) came from a client.
    UNEXPECTED_MESSAGE = "unexpected_message"
    #: ``hello`` asked for a protocol version this server does not speak.
    UNSUPPORTED_VERSION = "unsupported_version"
    #: Readings could not be committed; none of that request is acked.
    STORAGE_UNAVAILABLE = "storage_unavailable"
    #: Readings whose key is stored with another ts or value (``keys`` names them); none
    #: of that request is acked.
    CONFLICT = "conflict"
    #: Over UDP, the reply would not fit one datagram.
    REPLY_TOO_LARGE = "reply_too_large"
    #: The server failed on a well-formed request (a bug; it is logged).
    INTERNAL_ERROR = "internal_error"
    #: The server is at a limit: at connect (``max_connections``, or its file descriptors),
    #: the server closes the connection right after it; for a ``calc`` (``max_queued_jobs``)
    #: only that request is refused (``ref`` names it). Either way: back off, then retry.
    BUSY = "busy"
    #: The connection sent nothing (no ``hello`` or first request within ``hello_timeout``,
    #: or nothing at all for ``idle_timeout`` while nothing was in flight); it is closed.
    IDLE_TIMEOUT = "idle_timeout"
    #: A frame's header arrived but not the rest of it within ``frame_timeout``; it is
    #: closed.
    FRAME_TIMEOUT = "frame_timeout"
    #: The server requires a token: a request before a ``hello`` with it, or a ``hello``
    #: with a wrong or missing one; the connection is closed.
    UNAUTHORIZED = "unauthorized"


#: Codes after which the server closes the connection: a stream whose position is lost
#: cannot go on, and after a storage failure the client must reconnect and resend what its
#: outbox holds instead of waiting for acks that will never come.
CLOSING_CODES: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.STORAGE_UNAVAILABLE,
        ErrorCode.IDLE_TIMEOUT,
        ErrorCode.FRAME_TIMEOUT,
        ErrorCode.UNAUTHORIZED,
    }
)


class ExpressionCode(StrEnum):
    """``calc_result.errors[].code``: why one expression of a job has no value."""

    #: Outside the grammar; the message names the column.
    SYNTAX = "syntax"
    #: Python would raise ZeroDivisionError.
    DIVISION_BY_ZERO = "division_by_zero"
    #: Python would raise OverflowError, or the result is not finite (JSON has no inf) or
    #: an int of over 4,300 digits.
    OVERFLOW = "overflow"
    #: Over ``max_length`` characters, or a literal over ``max_digits`` digits.
    TOO_LONG = "too_long"
    #: Over ``max_depth`` nested parentheses.
    TOO_DEEP = "too_deep"
    #: Python would give a complex number (``(-8) ** 0.5``), which JSON has no number for.
    COMPLEX = "complex"
    #: The job's child was killed after ``job_timeout``.
    TIMEOUT = "timeout"
    #: The job's child died, or answered something that is not a result.
    WORKER_CRASHED = "worker_crashed"
    #: The result would take the job's reply past the server's ``max_reply`` bytes.
    TOO_LARGE = "too_large"


class Stat(StrEnum):
    """``stats_result.counters``: the names a server of this version reports.

    Counters count since the server started; gauges (marked) are values right now. A
    counter that has not happened yet may be absent: read a missing name as 0.
    """

    CONNECTIONS_TOTAL = "connections_total"
    #: gauge
    CONNECTIONS_OPEN = "connections_open"
    #: Connections answered ``busy`` and closed at once (``max_connections``, or too few
    #: file descriptors left).
    CONNECTIONS_REFUSED = "connections_refused"
    #: Connections closed with ``idle_timeout`` or ``frame_timeout``, or because their
    #: client read none of its replies for ``idle_timeout``.
    CONNECTIONS_TIMED_OUT = "connections_timed_out"
    #: gauge: bytes of partly received TCP frames held (``max_partial`` bounds them).
    PARTIAL_BYTES = "partial_bytes"
    FRAMES_IN = "frames_in"
    FRAMES_OUT = "frames_out"
    #: Frames answered with an ``error`` (bad JSON, validation, unexpected, too large).
    FRAMES_REJECTED = "frames_rejected"
    JOBS_STARTED = "jobs_started"
    JOBS_FINISHED = "jobs_finished"
    #: gauge
    JOBS_RUNNING = "jobs_running"
    #: gauge: TCP jobs waiting for a worker (``max_queued_jobs`` bounds them).
    JOBS_QUEUED = "jobs_queued"
    #: Calcs answered ``busy``: ``max_queued_jobs`` were waiting already.
    JOBS_REFUSED = "jobs_refused"
    JOBS_TIMED_OUT = "jobs_timed_out"
    JOBS_CRASHED = "jobs_crashed"
    #: Expressions received in jobs, and those answered with an error.
    EXPRESSIONS = "expressions"
    CALC_ERRORS = "calc_errors"
    #: gauge: job children alive.
    CHILDREN_ALIVE = "children_alive"
    READINGS_RECEIVED = "readings_received"
    READINGS_STORED = "readings_stored"
    READINGS_DUPLICATE = "readings_duplicate"
    #: Readings refused because their key is stored with another ts or value.
    READINGS_CONFLICT = "readings_conflict"
    #: Commits of the store, and batches it failed to commit.
    COMMITS = "commits"
    STORAGE_FAILURES = "storage_failures"
    #: gauge: readings waiting for a commit that has not started.
    WRITER_QUEUE_DEPTH = "writer_queue_depth"
    #: Readings a sink (a ``--db`` after the first) failed to take.
    SINK_FAILURES = "sink_failures"
    UDP_DATAGRAMS_RECEIVED = "udp_datagrams_received"
    UDP_DATAGRAMS_SENT = "udp_datagrams_sent"
    #: Not one frame (dropped unanswered), or one frame that failed validation (answered).
    UDP_DATAGRAMS_MALFORMED = "udp_datagrams_malformed"
    UDP_DATAGRAMS_REJECTED = "udp_datagrams_rejected"
    #: Dropped unanswered: no valid proof of the server's token (not sealed, a wrong MAC,
    #: outside the replay window, or a nonce seen already).
    UDP_DATAGRAMS_UNAUTHENTICATED = "udp_datagrams_unauthenticated"
    #: TCP connections closed ``unauthorized`` (no valid token in their ``hello``).
    CONNECTIONS_UNAUTHORIZED = "connections_unauthorized"
    #: TLS handshakes that failed (a plain client on a TLS port, a bad certificate).
    TLS_HANDSHAKE_FAILURES = "tls_handshake_failures"
    #: Dropped because the server was shutting down.
    UDP_DATAGRAMS_REFUSED_STOPPING = "udp_datagrams_refused_stopping"
    #: Dropped unread because ``udp_max_inflight`` requests were being answered already.
    UDP_DATAGRAMS_DROPPED_BUSY = "udp_datagrams_dropped_busy"
    #: gauge: UDP requests being answered now (at most ``udp_max_inflight``).
    UDP_REQUESTS_INFLIGHT = "udp_requests_inflight"
    #: Replies not sent because even ``reply_too_large`` was larger than the request
    #: (``udp_max_reply`` 0).
    UDP_REPLIES_SUPPRESSED = "udp_replies_suppressed"
    #: ICMP errors for earlier replies (the sender went away).
    UDP_SEND_ERRORS = "udp_send_errors"
    #: gauge: the UDP socket's receive buffer, as the kernel granted it.
    UDP_RCVBUF = "udp_rcvbuf"
    #: Host-wide kernel UDP counters (Linux /proc/net/snmp), where the OS has them.
    KERNEL_UDP_RCVBUFERRORS = "kernel_udp_rcvbuferrors"
    KERNEL_UDP_INERRORS = "kernel_udp_inerrors"
    KERNEL_UDP_INDATAGRAMS = "kernel_udp_indatagrams"
    #: gauge: the server's process id (tells servers behind a balancer apart).
    PID = "pid"
