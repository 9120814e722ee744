"""Server configuration: command-line flags over ``FORKWIRE_*`` environment variables."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from forkwire.protocol import DEFAULT_MAX_FRAME
from forkwire.server.interpreter import Limits
from forkwire.server.jobs import default_workers

DEFAULT_PORT = 7700
DEFAULT_DB = "sqlite:///forkwire.sqlite"


class Settings(BaseSettings):
    """Everything the daemon can be told. Each field is also ``FORKWIRE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FORKWIRE_", frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    #: UDP listens on the TCP port number unless told otherwise; ``udp=False`` turns it off.
    udp: bool = True
    udp_port: int | None = Field(default=None, ge=0, le=65535)
    #: SO_RCVBUF for the UDP socket; the kernel may grant less (net.core.rmem_max).
    udp_rcvbuf: int | None = Field(default=None, ge=1024)
    workers: int = Field(default_factory=default_workers, ge=1, le=256)
    max_frame: int = Field(default=DEFAULT_MAX_FRAME, ge=1024, le=2**31)
    job_timeout: float = Field(default=10.0, gt=0)
    #: Seconds that running jobs get to finish after SIGINT/SIGTERM before they are killed.
    grace: float = Field(default=10.0, ge=0)
    max_length: int = Field(default=Limits().max_length, ge=1)
    max_depth: int = Field(default=Limits().max_depth, ge=1)
    max_digits: int = Field(default=Limits().max_digits, ge=1)
    #: Where readings go: the first URL is the store (acks wait for its commit, reports
    #: read it); any later URL is a sink that gets a copy of what the store newly stored,
    #: best effort (``forkwire.server.sinks``).
    db: Annotated[tuple[str, ...], NoDecode] = (DEFAULT_DB,)
    #: Group commit: flush after this many seconds or this many readings, whichever first.
    commit_interval: float = Field(default=0.05, ge=0, le=10)
    commit_batch: int = Field(default=1000, ge=1, le=1_000_000)
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("db", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        # FORKWIRE_DB holds one URL or several separated by commas or spaces.
        if isinstance(value, str):
            value = tuple(part for part in re.split(r"[,\s]+", value) if part)
        if not value:
            raise ValueError("at least one storage URL is needed")
        return value

    @property
    def limits(self) -> Limits:
        """The interpreter limits every child gets."""
        return Limits(self.max_length, self.max_depth, self.max_digits)
