"""The JSON Schema in the repository: generated from the models, and true to them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from test_messages import EVERY_MESSAGE

import forkwire.protocol
from forkwire.protocol import encode_message
from forkwire.protocol.schema import protocol_schema

SCHEMA_FILE = Path(forkwire.protocol.__file__).parent / "schema.json"


def test_the_checked_in_schema_matches_the_models() -> None:
    """protocol/schema.json is what the models generate (regenerate it when they change)."""
    kept = json.loads(SCHEMA_FILE.read_text())
    assert kept == protocol_schema(), (
        "protocol/schema.json is stale: python -m forkwire.protocol.schema > protocol/schema.json"
    )


def test_the_schema_is_valid_json_schema() -> None:
    """The schema itself passes the 2020-12 metaschema."""
    jsonschema.Draft202012Validator.check_schema(protocol_schema())


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_every_message_on_the_wire_validates(message: Any) -> None:
    """What the models encode, an independent validator accepts."""
    jsonschema.validate(json.loads(encode_message(message)), protocol_schema())


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "calc", "id": -1, "ops": []},
        {"type": "calc", "id": 1, "ops": "1 + 1"},
        {"type": "reading", "sensor": "bad name", "seq": 0, "ts": 1.0, "value": 1},
        {"type": "readings", "items": []},
        {"type": "stats", "extra": 1},
        {"type": "teleport"},
    ],
)
def test_what_the_models_refuse_the_schema_refuses(payload: dict[str, Any]) -> None:
    """A payload the server rejects fails the schema too."""
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, protocol_schema())
