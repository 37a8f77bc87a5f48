"""GA Realtime server events checked against the `openai` package's own models.

SDKs parse what they receive with these models: an event the local engine emits must validate
as the model of its `type`, with no field the model does not declare.
"""

from __future__ import annotations

import json
import typing
from typing import Any

import pydantic
from openai.types.realtime.realtime_server_event import RealtimeServerEvent

# The union carries the SDK's own discriminator marker, which pydantic ignores: index its
# members by their `type` instead, so one bad field gives one clear error.
_MEMBERS = typing.get_args(typing.get_args(RealtimeServerEvent)[0])
MODELS: dict[str, type[pydantic.BaseModel]] = {
    literal: member
    for member in _MEMBERS
    for literal in typing.get_args(member.model_fields["type"].annotation)
}


ALLOWED_EXTRA: dict[str, set[str]] = {}


def undeclared(model: Any, path: str = "") -> list[str]:
    """Fields present in the data that the SDK's models do not declare."""
    found: list[str] = []
    if isinstance(model, pydantic.BaseModel):
        found += [f"{path}{name}" for name in model.model_extra or {}]
        for name in type(model).model_fields:
            found += undeclared(getattr(model, name), f"{path}{name}.")
    elif isinstance(model, list | tuple):
        for index, value in enumerate(model):
            found += undeclared(value, f"{path}{index}.")
    return found


def check_server_event(event: dict[str, Any] | str | bytes) -> None:
    """Raise AssertionError unless `event` is a valid GA server event of a known type."""
    parsed = event if isinstance(event, dict) else json.loads(event)
    model = MODELS.get(parsed.get("type"))
    assert model is not None, f"not a GA server event type: {parsed.get('type')!r}"
    try:
        validated = model.model_validate(parsed)
    except pydantic.ValidationError as exc:
        raise AssertionError(f"{parsed['type']}: {exc}") from None
    extra = undeclared(validated)
    allowed = ALLOWED_EXTRA.get(parsed["type"], set())
    assert set(extra) <= allowed, f"{parsed['type']}: fields the SDK does not know: {extra}"
