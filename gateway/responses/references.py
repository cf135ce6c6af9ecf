"""`item_reference` input items: the ids a Responses request refers to, and its input with
each reference replaced by the stored item it names (before the mapping to chat)."""

from __future__ import annotations

from typing import Any

from ..errors import NotFound, PayloadTooLarge
from ..jsonfast import dumps
from .request import item_string


def _is_reference(item: dict[str, Any]) -> bool:
    # OpenAI's ItemReference may omit `type`: an item with an id and no role is one.
    kind = item.get("type")
    return kind == "item_reference" or (kind is None and "role" not in item and "id" in item)


def references(value: str | list[dict[str, Any]]) -> list[str]:
    """The item ids `input` refers to (`{"type": "item_reference", "id": ...}`), in order."""
    if isinstance(value, str):
        return []
    ids: list[str] = []
    for i, item in enumerate(value):
        if _is_reference(item):
            ids.append(item_string(item, "id", f"input[{i}]"))
    return ids


def with_references(
    value: str | list[dict[str, Any]], found: dict[str, dict[str, Any]]
) -> str | list[dict[str, Any]]:
    """`input` with each item reference replaced by the stored item it names; an id not
    `found` (unknown, expired, not stored, or another key's) is a 404 naming it."""
    if isinstance(value, str):
        return value
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if not _is_reference(item):
            out.append(item)
            continue
        iid = item_string(item, "id", f"input[{i}]")
        stored = found.get(iid)
        if stored is None:
            raise NotFound(
                f"Item with id '{iid[:128]}' not found (input[{i}]): items of stored responses "
                "of this API key can be referenced; responses created with `store: false` keep "
                "none.",
                param=f"input[{i}].id",
                code="item_not_found",
            )
        out.append(stored)
    return out


def check_expanded_size(
    value: str | list[dict[str, Any]], found: dict[str, dict[str, Any]], limit: int
) -> None:
    """A 413 when `input` with its references expanded would be larger than `limit` bytes
    (`server.max_body_bytes`, the bound a client sending the items itself meets). A thousand
    references to one large stored item would otherwise become a thousand copies of it in
    the upstream body: measured by each distinct item's size times its references, before
    anything is expanded."""
    if isinstance(value, str):
        return
    sizes = {iid: len(dumps(item)) for iid, item in found.items()}
    total = 0
    for i, item in enumerate(value):
        if _is_reference(item):
            total += sizes.get(str(item.get("id")), 0)
        if total > limit:
            raise PayloadTooLarge(
                f"The input's item references expand to more than {limit} bytes "
                f"(server.max_body_bytes), at input[{i}].",
                param=f"input[{i}]",
            )


def referable(value: str | list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The input items a later request may reference: those that carry an id."""
    if isinstance(value, str):
        return {}
    return {item["id"]: item for item in value if isinstance(item.get("id"), str)}
