"""The JSON Schema of the wire protocol, generated from the message models.

``python -m forkwire.protocol.schema > protocol/schema.json`` writes it; the file is kept
in the repository for implementers in other languages, and a test fails when it no longer
matches the models.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from forkwire.protocol.codes import ErrorCode, ExpressionCode, Stat
from forkwire.protocol.messages import PROTOCOL_VERSION, Reply, Request, Sealed


def protocol_schema() -> dict[str, Any]:
    """Requests and replies of this protocol version as one JSON Schema (2020-12)."""
    by_key, schema = TypeAdapter.json_schemas(
        [
            ("Request", "validation", TypeAdapter(Request)),
            ("Reply", "validation", TypeAdapter(Reply)),
            ("Sealed", "validation", TypeAdapter(Sealed)),
        ],
        title=f"forkwire wire protocol v{PROTOCOL_VERSION}",
        description=(
            "The JSON payload of one frame (a u32 big-endian length, then this). A client "
            "sends a Request, a server a Reply. See PROTOCOL.md for framing, ordering, "
            "number encoding and UDP."
        ),
    )
    definitions = schema["$defs"]
    definitions["Request"] = by_key[("Request", "validation")]
    definitions["Reply"] = by_key[("Reply", "validation")]
    # Only a UDP datagram to a server with a token carries it, around a Request's JSON.
    definitions["Sealed"] = by_key[("Sealed", "validation")]
    definitions["ErrorCode"] = {"enum": [code.value for code in ErrorCode]}
    definitions["ExpressionCode"] = {"enum": [code.value for code in ExpressionCode]}
    definitions["Stat"] = {"enum": [name.value for name in Stat]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "anyOf": [{"$ref": "#/$defs/Request"}, {"$ref": "#/$defs/Reply"}],
    }


def main() -> None:
    """Print the schema."""
    print(json.dumps(protocol_schema(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
