"""Server configuration: command-line flags over ``FORKWIRE_*`` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol import DEFAULT_MAX_FRAME
from server.interpreter import Limits
from server.jobs import default_workers

DEFAULT_PORT = 7700


class Settings(BaseSettings):
    """Everything the daemon can be told. Each field is also ``FORKWIRE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FORKWIRE_", frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    workers: int = Field(default_factory=default_workers, ge=1, le=256)
    max_frame: int = Field(default=DEFAULT_MAX_FRAME, ge=1024, le=2**31)
    job_timeout: float = Field(default=10.0, gt=0)
    #: Seconds that running jobs get to finish after SIGINT/SIGTERM before they are killed.
    grace: float = Field(default=10.0, ge=0)
    max_length: int = Field(default=Limits().max_length, ge=1)
    max_depth: int = Field(default=Limits().max_depth, ge=1)
    max_digits: int = Field(default=Limits().max_digits, ge=1)
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def limits(self) -> Limits:
        """The interpreter limits every child gets."""
        return Limits(self.max_length, self.max_depth, self.max_digits)
