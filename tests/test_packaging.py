"""The package as users install it: one top-level name, and the import contract."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from fwtest import REPO

FOLDERS = ("protocol", "server", "client")


def _fresh_modules(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``, run outside the checkout."""
    script = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=Path(sys.executable).parent,  # not the checkout: its folders must not shadow
    )
    return set(result.stdout.split())


def test_pyproject_lists_every_package_folder() -> None:
    """Every folder with an __init__.py under protocol/, server/, client/ is installed."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {"forkwire"} | {
        "forkwire." + ".".join(init.parent.relative_to(REPO).parts)
        for folder in FOLDERS
        for init in (REPO / folder).rglob("__init__.py")
    }
    assert listed == found


def test_protocol_imports_no_io_and_neither_side() -> None:
    """`import forkwire.protocol` loads no asyncio or ssl, nor either side.

    socket and selectors are checked on protocol's own imports only (lint-imports):
    pydantic loads them through importlib.metadata without using them.
    """
    modules = _fresh_modules("import forkwire.protocol")
    forbidden = {"asyncio", "ssl", "forkwire.server", "forkwire.client"}
    assert "forkwire.protocol" in modules
    assert {m for m in modules if m in forbidden or m.split(".")[0] in forbidden} == set()


@pytest.mark.slow
def test_wheel_installs_only_forkwire(tmp_path: Path) -> None:
    """The wheel holds one top-level package, forkwire, typed, with every subpackage."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=REPO,
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("forkwire-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"forkwire"}
    for path in (
        "forkwire/__init__.py",
        "forkwire/__main__.py",
        "forkwire/py.typed",
        "forkwire/protocol/framing.py",
        "forkwire/server/storage/sqlite.py",
        "forkwire/client/__main__.py",
    ):
        assert path in names
    assert not [name for name in names if name.startswith(("forkwire/tests/", "forkwire/bench/"))]


def test_python_m_forkwire_runs_the_client() -> None:
    """`python -m forkwire` and `python -m forkwire.server` answer --help."""
    for module, words in (("forkwire", "calc"), ("forkwire.server", "--max-frame")):
        result = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=Path(sys.executable).parent,
        )
        assert result.returncode == 0, result.stderr
        assert words in result.stdout
