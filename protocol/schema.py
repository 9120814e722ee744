"""The JSON Schema of the wire protocol, generated from the message models.

``python -m forkwire.protocol.schema > protocol/schema.json`` writes it; the file is kept
in the repository for implementers in other languages, and a test fails when it no longer
matches the models.
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
from typing import Any

from pydantic import BaseModel, TypeAdapter

from forkwire.protocol import messages
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
    for name, definition in definitions.items():
        model = getattr(messages, name, None)
        if isinstance(model, type) and issubclass(model, BaseModel):
            for field, doc in attribute_docs(model).items():
                definition["properties"][field]["description"] = doc
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


def attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """The docstring under each field of ``model`` and its bases, by field name.

    The models do not ask pydantic for these (``use_attribute_docstrings``): that parses
    the source of every model as it is defined, which every client would pay for at start.
    """
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not issubclass(cls, BaseModel) or cls is BaseModel:
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
        assert isinstance(body, ast.ClassDef)
        for statement, after in zip(body.body, body.body[1:], strict=False):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[statement.target.id] = inspect.cleandoc(after.value.value)
    return {name: doc for name, doc in docs.items() if name in model.model_fields}


def main() -> None:
    """Print the schema."""
    print(json.dumps(protocol_schema(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
