"""Slack's Block Kit limits, the ones a bot hits in practice (Slack answers ``invalid_blocks``): the
terminal chat's local Slack refuses what Slack would and shows the reason."""

from __future__ import annotations

from typing import Any

# --- Block Kit limits (the ones a bot hits in practice; Slack answers invalid_blocks) ----------------

_BLOCK_TYPES = {"section", "header", "divider", "actions", "context", "input", "image", "rich_text", "file", "video"}


def block_problems(blocks: Any, surface: str = "message") -> list[str]:
    """Why Slack would reject these blocks ([] when it would not)."""
    if blocks is None:
        return []
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    errs: list[str] = []
    limit = 100 if surface == "modal" else 50
    if len(blocks) > limit:
        errs.append(f"{len(blocks)} blocks: no more than {limit} allowed in a {surface}")
    action_ids: set[str] = set()
    block_ids: set[str] = set()

    def text(obj: Any, where: str, max_len: int, plain_only: bool = False) -> None:
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            errs.append(f"{where}: must be a text object")
            return
        if obj.get("type") not in ("plain_text", "mrkdwn") or (plain_only and obj.get("type") != "plain_text"):
            errs.append(f"{where}: must be {'plain_text' if plain_only else 'plain_text or mrkdwn'}")
        if not obj["text"]:
            errs.append(f"{where}: must be more than 0 characters")
        if len(obj["text"]) > max_len:
            errs.append(f"{where}: {len(obj['text'])} characters, must be at most {max_len}")

    def element(el: Any, where: str) -> None:
        if not isinstance(el, dict):
            errs.append(f"{where}: must be an object")
            return
        aid = el.get("action_id")
        if aid is not None:
            if not isinstance(aid, str) or not aid or len(aid) > 255:
                errs.append(f"{where}/action_id: must be 1-255 characters")
            elif aid in action_ids:
                errs.append(f"{where}/action_id: duplicate action_id {aid!r}")
            else:
                action_ids.add(aid)
        if el.get("type") == "button":
            text(el.get("text"), where + "/text", 75, plain_only=True)
            if isinstance(el.get("value"), str) and len(el["value"]) > 2000:
                errs.append(f"{where}/value: more than 2000 characters")
            if el.get("style") not in (None, "primary", "danger"):
                errs.append(f"{where}/style: must be primary or danger")

    for i, b in enumerate(blocks):
        where = f"/blocks/{i}"
        if not isinstance(b, dict) or b.get("type") not in _BLOCK_TYPES:
            errs.append(f"{where}: unsupported block {b.get('type') if isinstance(b, dict) else b!r}")
            continue
        bid = b.get("block_id")
        if bid is not None:
            if not isinstance(bid, str) or not bid or len(bid) > 255:
                errs.append(f"{where}/block_id: must be 1-255 characters")
            elif bid in block_ids:
                errs.append(f"{where}/block_id: duplicate block_id {bid!r}")
            else:
                block_ids.add(bid)
        kind = b["type"]
        if kind == "header":
            text(b.get("text"), where + "/text", 150, plain_only=True)
        elif kind == "section":
            if b.get("text") is None and not b.get("fields"):
                errs.append(f"{where}: must provide either text or fields")
            if b.get("text") is not None:
                text(b["text"], where + "/text", 3000)
            fields = b.get("fields") or []
            if len(fields) > 10:
                errs.append(f"{where}/fields: no more than 10 items allowed")
            for j, f in enumerate(fields):
                text(f, f"{where}/fields/{j}", 2000)
            if b.get("accessory") is not None:
                element(b["accessory"], where + "/accessory")
        elif kind in ("actions", "context"):
            els = b.get("elements")
            most = 25 if kind == "actions" else 10
            if not isinstance(els, list) or not els:
                errs.append(f"{where}/elements: must provide at least 1 item")
                continue
            if len(els) > most:
                errs.append(f"{where}/elements: no more than {most} items allowed")
            for j, el in enumerate(els):
                if kind == "context" and isinstance(el, dict) and el.get("type") in ("plain_text", "mrkdwn"):
                    text(el, f"{where}/elements/{j}", 3000)
                else:
                    element(el, f"{where}/elements/{j}")
        elif kind == "input":
            text(b.get("label"), where + "/label", 2000, plain_only=True)
            if not isinstance(b.get("element"), dict):
                errs.append(f"{where}/element: must provide an object")
            else:
                element(b["element"], where + "/element")
    return errs


def view_problems(view: Any) -> list[str]:
    if not isinstance(view, dict):
        return ["view must be an object"]
    errs: list[str] = []
    if view.get("type") != "modal":
        errs.append("/view/type: must be modal")
    for key, limit in (("title", 24), ("submit", 24), ("close", 24)):
        obj = view.get(key)
        if obj is None:
            if key == "title":
                errs.append("/view/title: required")
            continue
        if not isinstance(obj, dict) or obj.get("type") != "plain_text" or not obj.get("text"):
            errs.append(f"/view/{key}: must be plain_text")
        elif len(obj["text"]) > limit:
            errs.append(f"/view/{key}: {len(obj['text'])} characters, must be at most {limit}")
    if len(str(view.get("private_metadata") or "")) > 3000:
        errs.append("/view/private_metadata: more than 3000 characters")
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        errs.append("/view/blocks: must provide an array")
    else:
        errs += ["/view" + e for e in block_problems(blocks, "modal")]
        if view.get("submit") is None and any(isinstance(b, dict) and b.get("type") == "input" for b in blocks):
            errs.append("/view/submit: must provide submit when using input blocks")
    return errs
