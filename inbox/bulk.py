"""Bulk actions on the queue: one action over many selected cases, each case on its own.

Every case goes through the very function its single action uses (assign, tag, resolve,
snooze, merge), in its own transaction, so each is checked (leases, roles) and audited
per case exactly as if the agent had done them one by one. One case failing (held by
another agent, merged meanwhile) does not undo or stop the others: the answer lists what
happened to each case, and the page shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine

from inbox import casework, merges, suggestions
from inbox.accounts import Principal

MAX_CASES = 200
Action = Literal["assign", "tag", "untag", "resolve", "snooze", "accept_suggestion"]
ACTIONS: tuple[str, ...] = ("assign", "tag", "untag", "resolve", "snooze", "accept_suggestion")


@dataclass(frozen=True)
class BulkRequest:
    action: Action
    references: tuple[str, ...]
    assignee: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    until: datetime | None = None
    force: bool = False


def plan(references: tuple[str, ...]) -> list[str]:
    """The cases to act on: normalized, each once, in the order selected (pure)."""
    seen: dict[str, None] = {}
    for ref in references:
        seen.setdefault(casework.normalize_reference(ref), None)
    if not seen:
        raise casework.Invalid("select at least one case")
    if len(seen) > MAX_CASES:
        raise casework.Invalid(f"at most {MAX_CASES} cases at once")
    return list(seen)


def _one(engine: Engine, principal: Principal, request: BulkRequest, ref: str) -> dict[str, Any]:
    if request.action == "assign":
        return casework.assign(engine, principal, ref, request.assignee)
    if request.action == "tag":
        return casework.change_tags(engine, principal, ref, add=request.tags)
    if request.action == "untag":
        return casework.change_tags(engine, principal, ref, remove=request.tags)
    if request.action == "resolve":
        return casework.set_status(engine, principal, ref, "resolved", force=request.force)
    if request.action == "snooze":
        return casework.snooze_case(engine, principal, ref, request.until, force=request.force)
    # accept_suggestion: merge the case into its strongest near-duplicate, as the case
    # page's suggestion would after the agent confirmed it.
    found = suggestions.for_reference(engine, ref)
    if not found:
        raise casework.Invalid(f"{ref} has no merge suggestion")
    into = found[0]["reference"]
    return {"merge": merges.merge(engine, principal, ref, into, force=request.force)}


def run(engine: Engine, principal: Principal, request: BulkRequest) -> dict[str, Any]:
    """Apply the action to each case; per case `ok` with the result, or the refusal."""
    results = []
    for ref in plan(request.references):
        try:
            outcome = _one(engine, principal, request, ref)
            results.append({"reference": ref, "ok": True, "result": outcome})
        except casework.Conflict as exc:
            results.append({"reference": ref, "ok": False, "error": str(exc), "status": 409})
        except casework.NotFound as exc:
            results.append({"reference": ref, "ok": False, "error": str(exc), "status": 404})
        except PermissionError as exc:
            results.append({"reference": ref, "ok": False, "error": str(exc), "status": 403})
        except ValueError as exc:  # Invalid, BadTag, BadSnooze, a merge refused
            results.append({"reference": ref, "ok": False, "error": str(exc), "status": 400})
    done = sum(1 for r in results if r["ok"])
    return {
        "action": request.action,
        "done": done,
        "failed": len(results) - done,
        "results": results,
    }
