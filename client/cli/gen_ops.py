"""``forkwire gen-ops``: a workload in the shape of the real operations.txt."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, TextIO

import typer

from forkwire.client.calc.opsfile import generate_ops
from forkwire.client.cli.app import command
from forkwire.client.errors import InputError


@command(interrupted="interrupted; the file is incomplete")
def gen_ops(
    *,
    lines: Annotated[int, typer.Option(min=1, help="How many lines.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same file).")] = 0,
    out: Annotated[
        str, typer.Option("-o", "--out", help="File to write; - (the default) for stdout.")
    ] = "-",
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
    hostile_every: Annotated[
        int, typer.Option(min=0, help="One hostile line every N lines (0: none).")
    ] = 2000,
) -> None:
    """Write a workload in the shape of the real operations.txt, hostile lines included."""
    ops = generate_ops(lines, seed=seed, hostile_every=hostile_every)
    if out == "-":
        _write(ops, sys.stdout)
        return
    path = Path(out)
    if path.exists() and not force:
        # The checkout's own operations.txt is tracked: never replace a file by surprise.
        raise InputError(f"{path} exists; use --force to overwrite it, or another --out")
    try:
        handle = path.open("w", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    with handle:
        _write(ops, handle)
    typer.echo(f"{lines} lines -> {path}", err=True)


def _write(lines: Iterator[str], out: TextIO) -> None:
    for line in lines:
        out.write(line + "\n")
