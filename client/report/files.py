"""``report.json`` and ``filled.csv``: the report and every point, as files."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from forkwire.client.report.fetch import SensorSeries
from forkwire.protocol import AnalyticsReport

CSV_COLUMNS: Final = ("sensor", "seq", "ts", "value", "filled")


def write_json(report: AnalyticsReport, path: Path) -> None:
    """The report as indented JSON (no NaN: other languages read it)."""
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_csv(series: Sequence[SensorSeries], path: Path) -> None:
    """Every observed reading and every filled one (``filled=1``), sensor by sensor.

    A scalar is written as its number (a stored int stays an int); vectors and records
    as compact JSON.
    """
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for stream in series:
            for seq, ts, value, filled in zip(
                stream.seq.tolist(),
                stream.ts.tolist(),
                stream.raw,
                stream.filled.tolist(),
                strict=True,
            ):
                text = str(value) if stream.kind == "scalar" else _json_text(value)
                writer.writerow((stream.sensor, seq, repr(ts), text, int(filled)))


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)
