"""--config forkwire.toml: flag > environment > file > default; an unknown key is an error
naming it; and --version."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_cli import server_cli

import forkwire
from forkwire.server.__main__ import load_settings


def test_precedence_is_flag_then_environment_then_file_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "forkwire.toml"
    config.write_text(
        'workers = 3\nmax_depth = 7\njob_timeout = 4.5\ndb = ["memory://", "screen://"]\n'
    )
    monkeypatch.setenv("FORKWIRE_WORKERS", "5")
    monkeypatch.setenv("FORKWIRE_MAX_DEPTH", "8")
    settings = load_settings({"workers": 6}, config)
    assert settings.workers == 6  # the flag
    assert settings.max_depth == 8  # the environment
    assert settings.job_timeout == 4.5  # the file
    assert settings.db == ("memory://", "screen://")  # the file, a list
    assert settings.grace == 10.0  # the default
    monkeypatch.delenv("FORKWIRE_WORKERS")
    assert load_settings({}, config).workers == 3


def test_an_unknown_key_is_one_line_naming_it_and_status_2(tmp_path: Path) -> None:
    config = tmp_path / "forkwire.toml"
    config.write_text("port = 0\nmax_frames = 4096\n")
    result = server_cli("--config", str(config))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"forkwire-server: {config}: unknown setting 'max_frames'"
    ]


@pytest.mark.parametrize(
    ("text", "said"),
    [("port = \n", "Invalid value"), ("port = 70000\n", "--port")],
)
def test_a_bad_file_is_one_line_and_status_2(tmp_path: Path, text: str, said: str) -> None:
    config = tmp_path / "forkwire.toml"
    config.write_text(text)
    result = server_cli("--config", str(config), env={**os.environ, "FORKWIRE_DB": "memory://"})
    assert result.returncode == 2, result.stderr
    assert said in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    result = server_cli("--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert "absent.toml" in result.stderr


def test_version() -> None:
    result = server_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"forkwire {forkwire.__version__}\n"
