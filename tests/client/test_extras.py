"""Optional dependencies: a missing one is one line naming the extra that installs it.

The CLI tests run the real command in a subprocess in which the dependency cannot be
imported (``sys.modules[name] = None``, as if it were not installed).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from fwtest import free_port, run_code

from forkwire.client.calc.opsfile import SEVEN_ZIP_MAGIC
from forkwire.client.errors import MissingExtra
from forkwire.client.extras import require

#: ``python -c`` code: hide one module, then run ``forkwire ARGS``.
WITHOUT = (
    "import sys\n"
    "sys.modules[sys.argv.pop(1)] = None\n"
    "sys.argv[0] = 'forkwire'\n"
    "from forkwire.client.cli.main import main\n"
    "main()\n"
)


def run_without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``forkwire ARGS`` with ``module`` missing; output captured."""
    return run_code(WITHOUT, module, *args)


def test_require_returns_the_module() -> None:
    """An installed module is imported and returned."""
    assert require("json", "none", "a test") is json


def test_require_names_the_extra_of_a_missing_module() -> None:
    """A missing module is a MissingExtra whose message is the whole advice."""
    with pytest.raises(MissingExtra) as caught:
        require("forkwire_no_such_module", "plot", "report.png")
    assert str(caught.value) == "report.png needs the 'plot' extra: pip install 'forkwire[plot]'"
    assert caught.value.extra == "plot"
    assert caught.value.exit_status == 1


def test_a_module_missing_its_own_dependency_is_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed but broken (it imports something absent): the real error, not an extra."""
    (tmp_path / "forkwire_broken_extra.py").write_text("import forkwire_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="forkwire_absent_dependency"):
        require("forkwire_broken_extra", "plot", "report.png")


@pytest.mark.parametrize(
    ("module", "extra", "purpose"),
    [
        ("faker", "profiles", "forkwire profiles"),
        ("psutil", "system", "the 'system' sensor kind"),
        ("py7zr", "archive", "reading {archive} (a 7z archive)"),
    ],
)
def test_a_command_without_its_extra_says_which_in_one_line(
    tmp_path: Path, module: str, extra: str, purpose: str
) -> None:
    """profiles without Faker, a system sensor without psutil, a .7z without py7zr: exit 1
    and one line naming the extra, before anything is written."""
    archive = tmp_path / "ops.7z"
    archive.write_bytes(SEVEN_ZIP_MAGIC + b"\0" * 32)
    port = str(free_port())
    args = {
        "faker": ["profiles", "3", "--spool", str(tmp_path / "spool.jsonl"), "--port", port],
        "psutil": ["sensors", "--kinds", "system", "--duration", "1", "--no-live",
                   "--outbox", str(tmp_path / "outbox.sqlite"), "--port", port],
        "py7zr": ["calc", str(archive), "-o", str(tmp_path / "results.txt"), "--port", port],
    }[module]  # fmt: skip
    done = run_without(module, *args)
    assert done.returncode == 1, done.stderr
    expected = purpose.format(archive=archive)
    advice = f"needs the '{extra}' extra: pip install 'forkwire[{extra}]'"
    assert done.stderr == f"forkwire: {expected} {advice}\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ops.7z"]


def test_report_without_matplotlib_skips_the_png_with_a_note(tmp_path: Path) -> None:
    """report still writes report.json and filled.csv; report.png is left out, said once."""
    sqlite3.connect(tmp_path / "empty.sqlite").close()  # a store, empty: report reads it
    done = run_without(
        "matplotlib", "report", "--db", f"sqlite:///{tmp_path / 'empty.sqlite'}",
        "--out", str(tmp_path / "report"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "report.png not drawn: report.png needs the 'plot' extra" in done.stderr
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "filled.csv",
        "report.json",
    ]


def test_demo_without_matplotlib_skips_the_png_with_a_note(tmp_path: Path) -> None:
    """The demo measures and writes demo.json; demo.png is left out and the notes say why."""
    done = run_without(
        "matplotlib", "demo", "--rates", "500", "--count", "200", "--noise", "none",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "demo.png").exists()
    notes = json.loads((tmp_path / "demo.json").read_text())["notes"]
    assert "demo.png not drawn: demo.png needs the 'plot' extra: pip install 'forkwire[plot]'" in (
        notes
    )
    assert "demo.png not drawn" in done.stdout
