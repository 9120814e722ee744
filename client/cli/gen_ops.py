"""``forkwire gen-ops``: a workload in the shape of the real operations.txt."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from forkwire.client.calc.opsfile import generate_ops
from forkwire.client.cli.app import command
from forkwire.client.errors import InputError


@command(interrupted="interrupted; the file is incomplete")
def gen_ops(
    *,
    lines: Annotated[int, typer.Option(min=1, help="How many lines.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same file).")] = 0,
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write.")] = Path(
        "operations.txt"
    ),
    hostile_every: Annotated[
        int, typer.Option(min=0, help="One hostile line every N lines (0: none).")
    ] = 2000,
) -> None:
    """Write a workload in the shape of the real operations.txt, hostile lines included."""
    try:
        handle = output.open("w", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror or exc}") from None
    with handle:
        for line in generate_ops(lines, seed=seed, hostile_every=hostile_every):
            handle.write(line + "\n")
    typer.echo(f"{lines} lines -> {output}")
