"""Server configuration, declared once: this model is the settings, their environment
variables (``FORKWIRE_<NAME>``) and, through ``__main__``, the command line.

Each field's ``description`` is its ``--help`` line; ``shown`` in its extra, where the
default needs words (``None`` meaning "the TCP port number"), is how help shows it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from forkwire.protocol import DEFAULT_MAX_FRAME, DEFAULT_PORT
from forkwire.server.interpreter import Limits
from forkwire.server.jobs import DEFAULT_MAX_REPLY, default_workers

DEFAULT_DB = "sqlite:///forkwire.sqlite"
_LIMITS = Limits()


def _shown(text: str) -> dict[str, Any]:
    return {"shown": text}


class Settings(BaseSettings):
    """Everything the daemon can be told. Each field is also ``FORKWIRE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FORKWIRE_", frozen=True, extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(
        default=DEFAULT_PORT, ge=0, le=65535, description="TCP port (0: any free port)."
    )
    udp: bool = Field(default=True, description="Serve UDP too (one frame per datagram).")
    udp_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="UDP port.",
        json_schema_extra=_shown("the TCP port number"),
    )
    udp_rcvbuf: int | None = Field(
        # The OS default (208 KiB on Linux) holds a tenth of a second of readings at
        # 20,000/s: any pause of the loop longer than that drops datagrams.
        default=4 * 1024 * 1024,
        ge=1024,
        description="SO_RCVBUF of the UDP socket, in bytes; the kernel may grant less "
        "(net.core.rmem_max), which is logged.",
    )
    udp_max_inflight: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="UDP requests answered at once; datagrams past it are dropped unread "
        "and counted (udp_datagrams_dropped_busy).",
    )
    udp_max_reply: int = Field(
        default=1400,
        ge=0,
        le=65_507,
        description="Largest UDP reply in bytes, unless the request was larger: a bigger "
        "one becomes a short reply_too_large (bounds what a forged source address gets). "
        "0: no reply larger than its request, ever (clients must pad their requests).",
    )
    workers: int = Field(
        default_factory=default_workers,
        ge=1,
        le=256,
        description="Job children alive at once; further jobs wait.",
        json_schema_extra=_shown("CPUs available"),
    )
    max_frame: int = Field(
        default=DEFAULT_MAX_FRAME,
        ge=1024,
        le=2**31,
        description="Largest request frame in bytes; a larger header closes the connection.",
    )
    job_timeout: float = Field(
        default=10.0, gt=0, description="Seconds before a job's child is killed."
    )
    max_reply: int = Field(
        default=DEFAULT_MAX_REPLY,
        ge=1024,
        le=2**31,
        description="Largest calc reply in bytes (at least --max-frame): a result that would "
        "pass it is answered too_large, a job whose errors alone would, reply_too_large.",
    )
    grace: float = Field(
        default=10.0,
        ge=0,
        description="Seconds running jobs get to answer after SIGINT/SIGTERM.",
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="TCP connections served at once; past it (or when the file descriptors "
        "left are too few) a new connection is answered busy and closed.",
    )
    hello_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a new connection has to send its first frame (hello or a "
        "request); then it is closed with idle_timeout.",
    )
    idle_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a connection may send nothing while nothing of it is in flight "
        "before it is closed (error idle_timeout); clients that stay connected send ping. "
        "Also how long a client may read none of its replies.",
    )
    frame_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a frame has, once its first bytes arrived, to arrive whole; "
        "else the connection is closed (error frame_timeout).",
    )
    connection_workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Jobs of one TCP connection running at once; the other workers stay "
        "free for other connections (a job cannot be stopped to make room).",
        json_schema_extra=_shown("half the workers, rounded up"),
    )
    max_queued_jobs: int = Field(
        default=1024,
        ge=0,
        le=10_000_000,
        description="Calc jobs waiting for a worker, server-wide (TCP); past it a calc is "
        "answered error busy (that request only) so its client backs off.",
    )
    max_partial: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Bytes of partly received frames held server-wide; past it a "
        "connection in the middle of a frame is not read until others complete theirs (or "
        "frame_timeout ends it).",
    )
    max_unsent: int = Field(
        default=8 * 1024 * 1024,
        ge=64 * 1024,
        description="Bytes of replies a connection may leave unread (and of requests it "
        "may have unanswered) before the server stops reading its requests and starting its "
        "jobs (backpressure).",
    )
    max_pipeline: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Requests one connection may have unanswered; past it the server "
        "reads no more from it until some are answered.",
    )
    max_length: int = Field(
        default=_LIMITS.max_length, ge=1, description="Characters per expression."
    )
    max_depth: int = Field(
        default=_LIMITS.max_depth, ge=1, description="Nested parentheses per expression."
    )
    max_digits: int = Field(default=_LIMITS.max_digits, ge=1, description="Digits per literal.")
    db: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(DEFAULT_DB,),
        description="The store: sqlite:///PATH, postgresql://..., csv:///PATH or memory://. "
        "Repeated (or comma-separated in the environment), later URLs are sinks that get a "
        "copy of what the store committed, best effort; screen:// prints it.",
    )
    durability: Literal["normal", "full"] = Field(
        default="normal",
        description="What an ack survives: normal, a crash of the server (SQLite "
        "synchronous=NORMAL, PostgreSQL synchronous_commit=off, CSV flushed); full, a "
        "power loss too (an fsync per commit).",
    )
    commit_interval: float = Field(
        default=0.0,
        ge=0,
        le=10,
        description="Group commit: how long a reading arriving at an idle store may wait "
        "for more to share its commit, in seconds (0: commit at once; under load batches "
        "fill while the previous commit runs).",
    )
    commit_batch: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Group commit: the most readings in one commit.",
    )
    storage_timeout: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds a storage call may take: connecting to PostgreSQL, each of its "
        "statements (a commit that runs over fails its batch: storage_unavailable, nothing "
        "acked), and SQLite's wait for another process's lock.",
    )
    log_format: Literal["auto", "console", "json"] = Field(
        default="auto", description="Log lines: console on a terminal, JSON otherwise (auto)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least important events logged."
    )

    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve Prometheus /metrics, /healthz and /readyz over HTTP on this port "
        "(0: any free port, logged as metrics_started).",
        json_schema_extra=_shown("off"),
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address the metrics endpoint binds."
    )
    daemon: bool = Field(
        default=False,
        description="Detach from the terminal and run in the background; the command exits "
        "0 once the server listens, non-zero with the reason if it cannot start.",
    )
    pidfile: str | None = Field(
        default=None,
        description="Write the server's pid to this file while it runs (removed on exit); "
        "refuses to start while the pid in it is alive.",
        json_schema_extra=_shown("none"),
    )
    log_file: str | None = Field(
        default=None,
        description="Append the log (and job children's stderr) to this file instead of "
        "stderr; SIGHUP reopens it (logrotate).",
        json_schema_extra=_shown("stderr"),
    )

    @field_validator("db", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        # FORKWIRE_DB holds one URL or several separated by commas or spaces.
        if isinstance(value, str):
            value = tuple(part for part in re.split(r"[,\s]+", value) if part)
        if not value:
            raise ValueError("at least one storage URL is needed")
        return value

    @model_validator(mode="after")
    def _reply_holds_a_frame(self) -> Settings:
        if self.max_reply < self.max_frame:
            raise ValueError(
                f"max_reply ({self.max_reply}) must be at least max_frame ({self.max_frame})"
            )
        return self

    @property
    def jobs_per_connection(self) -> int:
        """``connection_workers``, or its default: half the workers, rounded up."""
        if self.connection_workers is not None:
            return min(self.connection_workers, self.workers)
        return (self.workers + 1) // 2

    @property
    def limits(self) -> Limits:
        """The interpreter limits every child gets."""
        return Limits(self.max_length, self.max_depth, self.max_digits)
