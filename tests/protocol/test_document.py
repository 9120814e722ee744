"""PROTOCOL.md, the contract for other languages, names everything the models define."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from forkwire.protocol import (
    ErrorCode,
    ExpressionCode,
    Greeted,
    ServerConnection,
    Stat,
    Welcome,
)
from forkwire.protocol.messages import REPLY_TYPES, REQUEST_TYPES, Hello, Reply, Request
from forkwire.protocol.report import AnalyticsReport, Dropout, SensorReport, ValueStats

DOCUMENT = (Path(__file__).resolve().parents[2] / "PROTOCOL.md").read_text()


def _models(union: Any) -> list[Any]:
    return list(union.__origin__.__args__)  # Annotated[A | B | ..., Field] -> [A, B, ...]


_PROSE = re.sub(r"```.*?```", "", DOCUMENT, flags=re.DOTALL)  # fences would pair backticks
CODE_WORDS = {
    word for span in re.findall(r"`([^`]+)`", _PROSE) for word in re.findall(r"\w+", span)
}


def mentioned(name: str) -> bool:
    """The name stands in the document as code: `name`, or inside `{a, name, b}`."""
    return name in CODE_WORDS


@pytest.mark.parametrize("message", sorted(REQUEST_TYPES | REPLY_TYPES))
def test_every_message_type_is_described(message: str) -> None:
    """Each type has a row in the requests or replies table."""
    assert re.search(rf"^\| `{message}` \|", DOCUMENT, re.MULTILINE), message


@pytest.mark.parametrize("model", _models(Request) + _models(Reply), ids=lambda m: m.__name__)
def test_every_field_is_described(model: Any) -> None:
    """Each field of each message is named in the document."""
    missing = [name for name in model.model_fields if not mentioned(name)]
    assert missing == []


@pytest.mark.parametrize("shape", [AnalyticsReport, SensorReport, Dropout, ValueStats])
def test_every_report_field_is_described(shape: Any) -> None:
    """The report's shape is spelled out field by field."""
    missing = [name for name in shape.__annotations__ if not mentioned(name)]
    assert missing == []


@pytest.mark.parametrize("code", [*ErrorCode, *ExpressionCode, *Stat], ids=str)
def test_every_code_and_counter_has_a_row(code: str) -> None:
    """Error codes, expression codes and stats counters each have a table row."""
    assert re.search(rf"^\| [^\n]*`{code}`", DOCUMENT, re.MULTILINE), code


def test_the_byte_example_is_a_hello_the_server_accepts() -> None:
    """The frame of section 11, fed to the server's conversation, is a hello from "demo"."""
    shown = re.search(r"```\n(00 00 00 20.*?)\n             \{", DOCUMENT, re.DOTALL)
    assert shown is not None
    frame = bytes.fromhex(" ".join(line.strip() for line in shown.group(1).splitlines()))
    conversation = ServerConnection(Welcome(server="x", max_frame=1024))
    conversation.receive_data(frame)
    event = conversation.next_event()
    assert isinstance(event, Greeted)
    assert event.hello == Hello(client="demo")
