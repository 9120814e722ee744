"""``forkwire``: the client commands. The only place that exits the process."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, TextIO

import typer

from client.calc import CalcFailed, CalcSummary, run_calc
from client.connection import ConnectError, Connection
from client.opsfile import InputError, generate_ops, opened_text

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="forkwire client: send compute jobs and sensor streams to a forkwire server.",
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7700
Host = Annotated[str, typer.Option(envvar="FORKWIRE_HOST", help="Server address.")]
Port = Annotated[int, typer.Option(envvar="FORKWIRE_PORT", help="Server TCP port.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"forkwire: {message}", err=True)
    return typer.Exit(code)


@app.command()
def calc(
    file: Annotated[Path, typer.Argument(help="Expressions, one per line (text or .7z).")],
    output: Annotated[
        str,
        typer.Option("-o", "--output", help="Results file, one line per input line; - for stdout."),
    ] = "results.txt",
    host: Host = DEFAULT_HOST,
    port: Port = DEFAULT_PORT,
    batch: Annotated[int, typer.Option(min=1, help="Lines per job.")] = 1000,
    window: Annotated[int, typer.Option(min=1, help="Jobs in flight at once.")] = 8,
    progress: Annotated[
        bool | None, typer.Option(help="Progress bar (default: on a terminal).")
    ] = None,
) -> None:
    """Evaluate every line of FILE on the server; write the results in input order."""
    try:
        with opened_text(file) as (text_path, size), _output(output) as out:
            summary = asyncio.run(_calc(text_path, size, out, host, port, batch, window, progress))
    except InputError as exc:
        raise _fail(str(exc), 2) from None
    except ConnectError as exc:
        raise _fail(f"{exc} (is forkwire-server running?)") from None
    except CalcFailed as exc:
        raise _fail(f"calc failed: {exc}") from None
    except KeyboardInterrupt:
        raise _fail("interrupted; the results file is incomplete", 130) from None
    typer.echo(
        f"{summary.lines} lines, {summary.errors} errors, {summary.jobs} jobs, "
        f"{summary.seconds:.2f} s, {summary.rate:,.0f} lines/s"
        + ("" if output == "-" else f" -> {output}"),
        err=output == "-",
    )


async def _calc(
    path: Path,
    size: int,
    out: TextIO,
    host: str,
    port: int,
    batch: int,
    window: int,
    progress: bool | None,
) -> CalcSummary:
    show = sys.stderr.isatty() if progress is None else progress
    connection = await Connection.open(host, port, client="forkwire-calc")
    async with connection:
        with path.open(encoding="utf-8", errors="replace") as lines:
            if not show:
                return await run_calc(lines, out, connection, batch=batch, window=window)
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            with Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>10,.0f} lines/s"),
                TimeRemainingColumn(),
                transient=False,
                console=None,
            ) as bar:
                task = bar.add_task("calc", total=size, rate=0.0)
                loop = asyncio.get_running_loop()
                started = loop.time()
                written = 0

                def on_written(count: int, chars: int) -> None:
                    nonlocal written
                    written += count
                    elapsed = max(loop.time() - started, 1e-9)
                    bar.update(task, advance=chars, rate=written / elapsed)

                return await run_calc(
                    lines, out, connection, batch=batch, window=window, on_written=on_written
                )


@contextlib.contextmanager
def _output(name: str) -> Iterator[TextIO]:
    if name == "-":
        yield sys.stdout
        return
    try:
        handle = open(name, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(f"cannot write {name}: {exc.strerror or exc}") from None
    with handle:
        yield handle


@app.command("gen-ops")
def gen_ops(
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
    with output.open("w", encoding="utf-8") as handle:
        for line in generate_ops(lines, seed=seed, hostile_every=hostile_every):
            handle.write(line + "\n")
    typer.echo(f"{lines} lines -> {output}")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="forkwire")


if __name__ == "__main__":
    main()
