"""Is the demo's UDP as good as the kernel path allows, and if not, what is the limit?

The yardstick is iperf3 at the same packet rate and size: its C receiver shows what the
kernel and this machine lose on their own. Where forkwire loses more than twice that, the
demo names the resource that ran out, from what it measured during the run: the sender's
achieved rate, the kernel's receive-buffer drops, and the CPU time of the server process
and of the whole machine (from ``/proc``, on Linux).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from forkwire.client.demo.results import RunResult
from forkwire.client.transport import Transport

#: The goal: UDP loss within this factor of iperf3's ...
FACTOR: Final = 2.0
#: ... plus this many percentage points, so 0.05 % against iperf3's 0 % is not a miss.
SLACK_POINTS: Final = 0.1
#: ... at every offered rate up to this one.
GOAL_RATE: Final = 50_000
#: A sender below this share of the offered rate could not keep the pace.
PACE_SHARE: Final = 0.9
#: CPU busy above this share counts as saturated.
BUSY: Final = 0.9


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds so far: of one process (None when unknown) and of the whole machine."""

    process: float | None
    busy: float | None
    total: float | None


def cpu_sample(pid: int | None, proc: Path = Path("/proc")) -> CpuSample:
    """The CPU time of ``pid`` and of the machine now (all None off Linux)."""
    if not sys.platform.startswith("linux"):
        return CpuSample(None, None, None)
    tick = os.sysconf("SC_CLK_TCK")
    process = busy = total = None
    if pid is not None:
        try:
            # The command may hold spaces and parentheses: the fields follow the last ')'.
            fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
            process = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            process = None
    try:
        first = (proc / "stat").read_text().splitlines()[0].split()
        ticks = [int(value) for value in first[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        total = sum(ticks[:8]) / tick  # guest time is counted in user already
        busy = total - idle / tick
    except (OSError, IndexError, ValueError):
        busy = total = None
    return CpuSample(process, busy, total)


def cpu_shares(
    before: CpuSample, after: CpuSample, seconds: float
) -> tuple[float | None, float | None]:
    """The process's CPU in cores over ``seconds`` (1.0 = one core busy), and the share of
    the machine's CPUs busy (0..1)."""
    process = None
    if before.process is not None and after.process is not None and seconds > 0:
        process = (after.process - before.process) / seconds
    machine = None
    if (
        before.busy is not None
        and before.total is not None
        and after.busy is not None
        and after.total is not None
        and after.total > before.total
    ):
        machine = (after.busy - before.busy) / (after.total - before.total)
    return process, machine


def rcvbuf_note(asked: int | None, granted: int | None, rmem_max: int | None) -> str | None:
    """One line on the server's UDP receive buffer: its size, and whether the kernel
    granted less than asked (Linux grants twice the request, for its bookkeeping, capped
    at twice ``net.core.rmem_max``)."""
    if granted is None:
        return None
    size = f"{granted / 1024:,.0f} KiB"
    if asked is None:
        return f"server UDP receive buffer: {size}"
    doubled = 2 if sys.platform.startswith("linux") else 1
    if granted >= asked * doubled:
        return f"server UDP receive buffer: {size} (asked {asked / 1024:,.0f} KiB)"
    cap = "" if rmem_max is None else f" (net.core.rmem_max = {rmem_max:,})"
    return (
        f"server UDP receive buffer: asked {asked / 1024:,.0f} KiB, the kernel granted "
        f"only {size}{cap}; as root: sysctl -w net.core.rmem_max={asked}"
    )


def read_rmem_max(path: Path = Path("/proc/sys/net/core/rmem_max")) -> int | None:
    """The kernel's cap on SO_RCVBUF, where the OS says."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def verdicts(
    runs: list[RunResult], reference: list[dict[str, Any]], rcvbuf: int | None
) -> list[str]:
    """One line per UDP rate up to ``GOAL_RATE``: within 2x of iperf3's loss, or the limit."""
    by_rate = {
        row["offered_rate"]: row
        for row in reference
        if row.get("loss_pct") is not None and not row.get("error")
    }
    lines = []
    for run in runs:
        rate = run.offered_rate
        if run.transport is not Transport.udp or run.noise is not None:
            continue
        if not isinstance(rate, int) or rate > GOAL_RATE:
            continue
        row = by_rate.get(rate)
        head = f"UDP {rate:,}/s: loss {run.loss_pct:.2f} %"
        if row is None:
            lines.append(f"{head}, no iperf3 reference to compare with")
            continue
        allowed = FACTOR * row["loss_pct"] + SLACK_POINTS
        head += f" vs iperf3 {row['loss_pct']:.2f} %"
        # A slow sender loses nothing by itself, but its loss is then that of a lower
        # rate than iperf3's: say so either way.
        slow = _slow_sender(run)
        also = f"; and {slow}" if slow else ""
        if run.loss_pct <= allowed:
            lines.append(f"{head}: within {FACTOR:g}x" + (f", but {slow}" if slow else ""))
        else:
            lines.append(f"{head}: over {FACTOR:g}x; limit: {limit(run, rcvbuf)}{also}")
    return lines


def limit(run: RunResult, rcvbuf: int | None) -> str:
    """The resource that ran out in a run that lost too much, from its measurements."""
    if run.lost_kernel >= run.lost_elsewhere:
        size = "" if rcvbuf is None else f" ({rcvbuf / 1024:,.0f} KiB)"
        where = f"the server's UDP receive buffer{size} overflowed"
        if run.host_cpu is not None and run.host_cpu >= BUSY:
            return f"{where}: the machine's CPUs were {run.host_cpu:.0%} busy"
        if run.server_cpu is not None and run.server_cpu >= BUSY:
            return f"{where}: the server used a whole core ({run.server_cpu:.0%})"
        cpu = "" if run.server_cpu is None else f" at {run.server_cpu:.0%} of a core"
        return f"{where}: the server paused{cpu} (scheduling, storage)"
    return "inside the server (see udp_datagrams_dropped_busy in stats)"


def _slow_sender(run: RunResult) -> str | None:
    rate, achieved = run.offered_rate, run.achieved_rate
    if isinstance(rate, int) and achieved is not None and achieved < PACE_SHARE * rate:
        return f"the sender (client CPU) kept only {achieved:,.0f}/s"
    return None
