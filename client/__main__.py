"""``forkwire``: the client commands. The only place that exits the process."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TextIO, TypeVar

import typer
from rich.console import Console
from rich.live import Live

from forkwire.client.calc.opsfile import generate_ops, opened_text
from forkwire.client.calc.run import DEFAULT_BATCH, CalcFailed, CalcSummary, run_calc, run_calc_udp
from forkwire.client.connection import Connection
from forkwire.client.errors import ConnectError, InputError
from forkwire.client.logs import configure_logging
from forkwire.client.transport import Transport
from forkwire.client.udp import DEFAULT_DATAGRAM, UdpConnection

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="forkwire client: send compute jobs and sensor streams to a forkwire server.",
)


class OutboxPolicyChoice(enum.StrEnum):
    """What a full outbox does."""

    block = "block"
    drop_oldest = "drop-oldest"


DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7700
Host = Annotated[str, typer.Option(envvar="FORKWIRE_HOST", help="Server address.")]
Port = Annotated[int, typer.Option(envvar="FORKWIRE_PORT", help="Server TCP port.")]


class LogLevel(enum.StrEnum):
    """How much the commands log (to stderr)."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@app.callback()
def _setup(
    log_level: Annotated[
        LogLevel, typer.Option(envvar="FORKWIRE_LOG_LEVEL", help="Log level (logs go to stderr).")
    ] = LogLevel.info,
) -> None:
    configure_logging(log_level.value)


def _fast_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory where it is installed (the calc client's hot path)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency on every POSIX platform
        return None
    return uvloop.new_event_loop


_T = TypeVar("_T")


async def _stoppable(work: Coroutine[Any, Any, _T]) -> _T:
    """Run ``work`` so that SIGTERM stops it like Ctrl-C: gracefully, with a summary.

    A supervisor (systemd, docker stop) sends SIGTERM; the fleet treats cancellation as
    the normal way to end (stop probing, await in-flight acks, keep the rest queued).
    """
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await work
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _stdout() -> Console:
    # Piped into a file, rich would fold wide tables to 80 columns and elide the numbers.
    return Console(width=None if sys.stdout.isatty() else 200)


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
    batch: Annotated[int, typer.Option(min=1, help="Lines per job (at most).")] = DEFAULT_BATCH,
    window: Annotated[int, typer.Option(min=1, help="Jobs in flight at once.")] = 8,
    transport: Annotated[
        Transport, typer.Option(help="tcp, or udp: jobs sized to one datagram, retried.")
    ] = Transport.tcp,
    datagram: Annotated[
        int, typer.Option(min=256, max=65_507, help="UDP: largest datagram in bytes.")
    ] = DEFAULT_DATAGRAM,
    progress: Annotated[
        bool | None, typer.Option(help="Progress bar (default: on a terminal).")
    ] = None,
) -> None:
    """Evaluate every line of FILE on the server; write the results in input order."""
    try:
        with opened_text(file) as (text_path, size), _output(output) as out:
            options = _CalcOptions(host, port, batch, window, transport, datagram, progress)
            with asyncio.Runner(loop_factory=_fast_loop()) as runner:
                summary = runner.run(_calc(text_path, size, out, options))
    except InputError as exc:
        raise _fail(str(exc), 2) from None
    except ConnectError as exc:
        raise _fail(f"{exc} (is forkwire-server running?)") from None
    except CalcFailed as exc:
        raise _fail(f"calc failed: {exc}") from None
    except KeyboardInterrupt:
        raise _fail("interrupted; the results file is incomplete", 130) from None
    udp = (
        f", {summary.retries} retries, {summary.given_up} jobs given up"
        if transport is Transport.udp
        else ""
    )
    typer.echo(
        f"{summary.lines} lines, {summary.errors} errors, {summary.jobs} jobs{udp}, "
        f"{summary.seconds:.2f} s, {summary.rate:,.0f} lines/s"
        + ("" if output == "-" else f" -> {output}"),
        err=output == "-",
    )


@dataclass(frozen=True)
class _CalcOptions:
    host: str
    port: int
    batch: int
    window: int
    transport: Transport
    datagram: int
    progress: bool | None


async def _calc(path: Path, size: int, out: TextIO, options: _CalcOptions) -> CalcSummary:
    show = sys.stderr.isatty() if options.progress is None else options.progress
    with path.open(encoding="utf-8", errors="replace") as lines, _progress(show, size) as tick:
        if options.transport is Transport.udp:
            udp = await UdpConnection.open(options.host, options.port)
            try:
                await udp.hello()
                return await run_calc_udp(
                    lines,
                    out,
                    udp,
                    datagram=options.datagram,
                    batch=options.batch,
                    window=options.window,
                    on_written=tick,
                )
            finally:
                udp.close()
        connection = await Connection.open(options.host, options.port, client="forkwire-calc")
        async with connection:
            return await run_calc(
                lines, out, connection, batch=options.batch, window=options.window, on_written=tick
            )


@contextlib.contextmanager
def _progress(show: bool, total: int) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar over the input's characters, with lines/s; None when hidden."""
    if not show:
        yield None
        return
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[rate]:>10,.0f} lines/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("calc", total=total, rate=0.0)
        started = time.perf_counter()
        written = 0

        def tick(count: int, chars: int) -> None:
            nonlocal written
            written += count
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=chars, rate=written / elapsed)

        yield tick


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


class Fill(enum.StrEnum):
    """How report gaps are filled."""

    linear = "linear"
    previous = "previous"
    none = "none"


@app.command()
def report(
    db: Annotated[
        str | None,
        typer.Option(
            help="Read this store directly (sqlite:///PATH, postgresql://...); "
            "without it, ask the server."
        ),
    ] = None,
    sensor: Annotated[
        list[str] | None, typer.Option("--sensor", help="Only this sensor (repeatable).")
    ] = None,
    since: Annotated[float | None, typer.Option(help="Only readings with ts >= this.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.json, filled.csv, report.png.")] = (
        Path("report")
    ),
    fill: Annotated[Fill, typer.Option(help="Gap filling for filled.csv and the plot.")] = (
        Fill.linear
    ),
    max_gap: Annotated[
        int | None, typer.Option(min=1, help="Leave gaps longer than this many seqs unfilled.")
    ] = None,
    host: Host = DEFAULT_HOST,
    port: Port = DEFAULT_PORT,
) -> None:
    """Rates, dropouts, gap filling and statistics of the stored streams."""
    from forkwire.client.errors import ClientError
    from forkwire.client.report import (
        ReportQuery,
        render_table,
        report_from_server,
        report_from_store,
    )

    query = ReportQuery(sensors=sensor, since=since, fill=fill.value, max_gap=max_gap)
    try:
        if db is not None:
            outcome = asyncio.run(report_from_store(db, out, query))
        else:
            outcome = asyncio.run(report_from_server(host, port, out, query))
    except ConnectError as exc:
        raise _fail(f"{exc} (or pass --db to read the store directly)") from None
    except ClientError as exc:
        raise _fail(str(exc), exc.exit_status) from None
    _stdout().print(render_table(outcome.report))
    for note in outcome.notes:
        typer.echo(note, err=True)
    typer.echo("wrote " + ", ".join(str(path) for path in outcome.files))


@app.command()
def sensors(
    count: Annotated[int, typer.Option(min=0, help="Sensors to run.")] = 5,
    kinds: Annotated[
        str,
        typer.Option(
            help="Sensor kinds, comma-separated, cycled over the sensors: "
            "random (5 s), fast (1 s), slow (15 s), sine, vector, system."
        ),
    ] = "random",
    period: Annotated[
        float | None, typer.Option(min=0.001, help="Seconds between readings (overrides kinds).")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Seconds to run (default: until Ctrl-C).")
    ] = None,
    slots: Annotated[int, typer.Option(min=1, help="Readings in flight across the fleet.")] = 5,
    batch: Annotated[int, typer.Option(min=1, help="Most readings per frame.")] = 5,
    outbox: Annotated[
        Path, typer.Option(help="Local outbox (SQLite): unacked readings and seqs survive.")
    ] = Path("forkwire-outbox.sqlite"),
    outbox_max: Annotated[int, typer.Option(min=1, help="Outbox bound, in readings.")] = 100_000,
    outbox_policy: Annotated[
        OutboxPolicyChoice, typer.Option(help="When the outbox is full.")
    ] = OutboxPolicyChoice.block,
    prefix: Annotated[str, typer.Option(help="Sensors are named PREFIX-N.")] = "sensor",
    transport: Annotated[Transport, typer.Option(help="tcp, or udp (fire-and-forget).")] = (
        Transport.tcp
    ),
    udp_ack: Annotated[
        bool, typer.Option(help="Over UDP, wait for acks and resend like TCP.")
    ] = False,
    noise: Annotated[
        list[str] | None,
        typer.Option(
            help="Noise stage, repeatable: dropout:2-3 (one drop every 2-3 s), "
            "random:0.05 (drop with p)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the noise stages.")] = 0,
    host: Host = DEFAULT_HOST,
    port: Port = DEFAULT_PORT,
    live: Annotated[bool | None, typer.Option(help="Live table (default: on a terminal).")] = None,
) -> None:
    """Run a fleet of sensors that stream readings to the server through a shared network."""
    import zlib

    from forkwire.client.sensors.config import FleetConfig
    from forkwire.client.sensors.fleet import run_fleet
    from forkwire.client.sensors.noise import parse_noise
    from forkwire.client.sensors.sensor import Sensor
    from forkwire.client.sensors.status import FleetSummary, render_status

    specs = list(noise or [])
    try:
        parse_noise(specs)  # a bad spec is a usage error before anything starts
    except ValueError as exc:
        raise _fail(str(exc), 2) from None

    def noise_for(sensor: Sensor) -> Callable[[object], bool] | None:
        if not specs:
            return None
        # Each sensor its own seeded stream, so runs repeat and sensors drop independently.
        return parse_noise(specs, seed=zlib.crc32(f"{seed}:{sensor.name}".encode()))

    console = Console(stderr=True)
    show = console.is_terminal if live is None else live
    display: Live | None = None

    def on_status(summary: FleetSummary) -> None:
        if display is not None:
            display.update(render_status(summary))

    try:
        config = FleetConfig(
            host=host,
            port=port,
            count=count,
            kinds=[kind.strip() for kind in kinds.split(",") if kind.strip()],
            period=period,
            duration=duration,
            slots=slots,
            batch=batch,
            outbox=outbox,
            outbox_max=outbox_max,
            outbox_policy=outbox_policy.value,
            prefix=prefix,
            transport=transport,
            udp_ack=udp_ack,
            noise=noise_for,
            on_status=on_status if show else None,
        )
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    with contextlib.ExitStack() as stack:
        if show:
            display = stack.enter_context(Live(console=console, refresh_per_second=4))
        try:
            summary = asyncio.run(_stoppable(run_fleet(config)))
        except KeyboardInterrupt:
            raise _fail("interrupted; unsent readings stay in the outbox", 130) from None
    _stdout().print(render_status(summary))


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="CSV file; its first row names the columns.")],
    sensor: Annotated[
        str | None, typer.Option(help="Stream name (default: the file's stem).")
    ] = None,
    column: Annotated[
        str | None,
        typer.Option(help="Send this column as a number (default: each row as a record)."),
    ] = None,
    interval: Annotated[
        str,
        typer.Option(help="Seconds between rows: LOW-HIGH (uniform) or one number; 0: no wait."),
    ] = "1-3",
    loop: Annotated[bool, typer.Option(help="Start again at the end, forever.")] = False,
    out: Annotated[
        Path, typer.Option(help="Append 'seq,ts,<row>' here for each row sent to the outbox.")
    ] = Path("out9.txt"),
    transport: Annotated[Transport, typer.Option(help="tcp, or udp (fire-and-forget).")] = (
        Transport.tcp
    ),
    udp_ack: Annotated[
        bool, typer.Option(help="Over UDP, wait for acks and resend like TCP.")
    ] = False,
    outbox: Annotated[
        Path, typer.Option(help="Local outbox (SQLite): unacked rows and seqs survive.")
    ] = Path("forkwire-replay.sqlite"),
    seed: Annotated[int | None, typer.Option(help="Seed of the interval draws.")] = None,
    host: Host = DEFAULT_HOST,
    port: Port = DEFAULT_PORT,
) -> None:
    """Stream FILE to the server, one row every interval; Ctrl-C stops (rest stays queued)."""
    from forkwire.client.ranges import parse_range
    from forkwire.client.replay.run import ReplayConfig, run_replay

    try:
        config = ReplayConfig(
            file=file,
            sensor=sensor,
            column=column,
            interval=parse_range(interval, "interval", float),
            loop=loop,
            out=out,
            host=host,
            port=port,
            transport=transport,
            udp_ack=udp_ack,
            outbox=outbox,
            seed=seed,
        )
        summary = asyncio.run(_stoppable(run_replay(config)))
    except (ValueError, InputError) as exc:
        raise _fail(str(exc), 2) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; unsent rows stay in the outbox", 130) from None
    ending = "file done" if summary.exhausted else "stopped"
    typer.echo(
        f"{summary.sensor}: {summary.rows} rows sent in {summary.passes} pass(es), "
        f"{summary.skipped} skipped, {summary.acked} acked, {summary.pending} left in "
        f"{outbox} ({ending}), {summary.seconds:.2f} s -> {summary.out}"
    )


class SpoolFormat(enum.StrEnum):
    """How the profiles spool stores records."""

    json = "json"
    pickle = "pickle"


class ProfileLocale(enum.StrEnum):
    """Faker locales of the profiles (and of the ages printed)."""

    en_US = "en_US"
    ru_RU = "ru_RU"


@app.command()
def profiles(
    ctx: typer.Context,
    count: Annotated[int, typer.Argument(min=1, help="Profiles to generate.")],
    interval: Annotated[
        float, typer.Option(min=0, help="Seconds between generated profiles.")
    ] = 0.5,
    spool: Annotated[
        Path | None,
        typer.Option(help="Spool file of kept profiles (default: profiles-spool.jsonl/.pickle)."),
    ] = None,
    spool_format: Annotated[
        SpoolFormat, typer.Option("--format", help="Spool format: json lines, or pickles.")
    ] = SpoolFormat.json,
    locale: Annotated[ProfileLocale, typer.Option(help="Faker locale.")] = ProfileLocale.en_US,
    ages: Annotated[str, typer.Option(help="Keep ages LOW-HIGH (inclusive).")] = "30-40",
    drain_timeout: Annotated[
        float,
        typer.Option(min=0, help="At the end, seconds the sender may take to empty the spool."),
    ] = 30.0,
    seed: Annotated[int | None, typer.Option(help="Seed of the Faker profiles.")] = None,
    host: Host = DEFAULT_HOST,
    port: Port = DEFAULT_PORT,
) -> None:
    """Generate COUNT Faker profiles, keep those in the age range, send them to the server.

    Three processes at once: a generator, a processor writing the spool file, and a
    sender that empties it into the 'profiles' stream.
    """
    from forkwire.client.profiles.config import ProfilesConfig
    from forkwire.client.profiles.pipeline import run_profiles
    from forkwire.client.ranges import parse_range

    log_level = ctx.find_root().params.get("log_level") or "info"
    try:
        low, high = parse_range(ages, "ages", int)
        config = ProfilesConfig(
            count=count,
            interval=interval,
            spool=spool,
            format=spool_format.value,
            locale=locale.value,
            ages=(low, high),
            drain_timeout=drain_timeout,
            seed=seed,
            host=host,
            port=port,
            log_level=str(log_level),
        )
        summary = run_profiles(config)
    except (ValueError, InputError) as exc:
        raise _fail(str(exc), 2) from None
    except KeyboardInterrupt:
        raise _fail("interrupted twice; unsent profiles stay in the spool", 130) from None
    typer.echo(
        f"generated {summary.generated}, kept {summary.kept}"
        + (f" (+{summary.resumed} resumed from the spool)" if summary.resumed else "")
        + f", sent {summary.sent}, "
        f"retried {summary.retried} ({summary.failures} failed sends), "
        f"left in spool {summary.left} -> {summary.spool}"
        + (" (interrupted)" if summary.interrupted else "")
    )
    if summary.failed:
        raise _fail("; ".join(summary.failed))


@app.command()
def demo(
    host: Annotated[
        str | None, typer.Option(help="Measure this server instead of starting one.")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Its TCP (and UDP) port.")] = None,
    rates: Annotated[
        str | None,
        typer.Option(
            help="Offered rates, readings/s, comma-separated; 'max' = unpaced. "
            "[1000,5000,20000,50000,100000,max]"
        ),
    ] = None,
    count: Annotated[
        int | None, typer.Option(min=1, help="Readings per run. [20000; --quick 5000]")
    ] = None,
    quick: Annotated[bool, typer.Option(help="Fewer rates and readings: under a minute.")] = False,
    out: Annotated[Path, typer.Option(help="Folder for demo.json and demo.png.")] = Path("."),
    seed: Annotated[int, typer.Option(help="Seed of the noise runs.")] = 0,
    noise: Annotated[
        str, typer.Option(help="Noise of the extra low-rate pair; 'none' skips it.")
    ] = "dropout:2-3",
    udp_rcvbuf: Annotated[
        int | None, typer.Option(help="SO_RCVBUF for the demo's own server.")
    ] = None,
) -> None:
    """Send the same readings over TCP and UDP at several rates and account for every loss."""
    from forkwire.client.demo import DemoConfig, DemoError, parse_rates, run_demo_sync

    console = _stdout()
    try:
        config = DemoConfig(
            host=host,
            port=port,
            rates=parse_rates(rates) if rates else None,
            count=count,
            quick=quick,
            out_dir=out,
            seed=seed,
            noise=None if noise == "none" else noise,
            udp_rcvbuf=udp_rcvbuf,
            progress=lambda line: console.print(f"[dim]{line}[/]"),
            console=console,
        )
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    try:
        run_demo_sync(config)
    except ConnectError as exc:
        raise _fail(str(exc)) from None
    except DemoError as exc:
        raise _fail(f"demo failed: {exc}") from None


def main() -> None:
    """Console-script entry point."""
    app(prog_name="forkwire")


if __name__ == "__main__":
    main()
