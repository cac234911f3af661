"""The case page's plain HTML forms for "one person, one case" (issue 11): merge (through a
confirmation page), undo a merge, link and unlink an identity.

These are ordinary POST forms, not script: they carry the session's CSRF token as a form
field (the middleware checks it), call the same store functions as the JSON API with the
same rules, and answer POST/redirect/GET with a one-shot message, so a reload never repeats
an action and a refusal reads as a sentence on the page, not as JSON.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from inbox import casework, identities, merges
from inbox.accounts import AccountError, UnknownAccount, has_role
from inbox.db import StorageUnavailable
from inbox.web import flash
from inbox.web.api import LinkBody, MergeBody, UnlinkBody
from inbox.web.app import blocking, context, principal
from inbox.web.pages import render
from inbox.web.routes import Route

# What an agent can act on: the store's refusals, a form that does not validate, a busy
# store. Anything else is a bug and stays a 500 (so not LookupError: a KeyError is one).
REFUSALS: tuple[type[Exception], ...] = (
    casework.NotFound,
    casework.Conflict,
    casework.Invalid,
    AccountError,
    PermissionError,
    UnknownAccount,
    ValidationError,
    StorageUnavailable,
)
CASE_PAGE = "/cases/{reference}"


def refusal(exc: Exception) -> str:
    """The store's reason, as the end of a sentence ("Not merged: ...")."""
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()
        )
        return f"the form is not valid: {problems}."
    if isinstance(exc, StorageUnavailable):
        return "the store is busy; try again in a few seconds."
    text = str(exc).strip() or type(exc).__name__
    return text if text.endswith(".") else text + "."


def _reference(request: web.Request) -> str:
    # Normalized before it goes into a Location header: a reference is C- and digits only.
    try:
        return casework.normalize_reference(request.match_info["reference"])
    except casework.NotFound as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc


def _back(reference: str) -> str:
    return CASE_PAGE.format(reference=reference)


async def _form(request: web.Request) -> dict[str, str]:
    # The middleware read the form already (for the CSRF token); aiohttp keeps it.
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str) and k != "csrf_token"}


def _held_by_other(view: dict[str, Any]) -> bool:
    lease = view.get("lease")
    return bool(lease and not lease["mine"])


# --- merge ---------------------------------------------------------------------------------


def _pair(
    engine: Any, who: Any, source: str, into: str, timing: casework.Timing
) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        casework.case_view(engine, who, source, timing),
        casework.case_view(engine, who, into, timing),
    )


async def merge_confirm(request: web.Request) -> web.StreamResponse:
    """Both cases side by side before anything moves; a suggestion only ever leads here."""
    ctx = context(request)
    who = principal(request)
    reference = _reference(request)
    into = request.rel_url.query.get("into", "").strip()
    if not into:
        raise flash.redirect(
            request, _back(reference), "error", "Name the case to merge this one into (C-…)."
        )
    try:
        target = MergeBody(into=into).into
        source_view, into_view = await blocking(
            _pair, ctx.engine, who, reference, target, ctx.settings.timing()
        )
    except REFUSALS as exc:
        raise flash.redirect(
            request, _back(reference), "error", f"Cannot merge: {refusal(exc)}"
        ) from exc
    if source_view["reference"] == into_view["reference"]:
        raise flash.redirect(
            request, _back(reference), "error", "A case cannot be merged into itself."
        )
    held = [v for v in (source_view, into_view) if _held_by_other(v)]
    return render(
        request,
        "merge_confirm.html",
        title=f"Merge {source_view['reference']} into {into_view['reference']}?",
        source=source_view,
        into=into_view,
        held=held,
        may_force=has_role(who.role, "manager"),
    )


async def merge_post(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    reference = _reference(request)
    form = await _form(request)
    try:
        data = MergeBody(into=form.get("into", ""), force=form.get("force") == "1")
        record = await blocking(
            merges.merge, ctx.engine, principal(request), reference, data.into, force=data.force
        )
    except REFUSALS as exc:
        raise flash.redirect(
            request, _back(reference), "error", f"Not merged: {refusal(exc)}"
        ) from exc
    moved = record["moved"]["messages"]
    raise flash.redirect(
        request,
        _back(record["into"]),
        "ok",
        f"{record['source']} was merged into {record['into']}: {moved} "
        f"message{'s' if moved != 1 else ''} moved. Undo it under Merges if that was a mistake.",
    )


async def merge_undo(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    reference = _reference(request)
    try:
        merge_id = int(request.match_info["merge_id"])
    except ValueError:
        raise flash.redirect(
            request, _back(reference), "error", "Not undone: no such merge."
        ) from None
    form = await _form(request)
    try:
        record = await blocking(
            merges.undo, ctx.engine, principal(request), merge_id, force=form.get("force") == "1"
        )
    except REFUSALS as exc:
        raise flash.redirect(
            request, _back(reference), "error", f"Not undone: {refusal(exc)}"
        ) from exc
    details = record["undo_details"] or {}
    returned = len(details.get("returned", []))
    later = f" {returned} message(s) that arrived since went back with it." if returned else ""
    raise flash.redirect(
        request,
        _back(reference),
        "ok",
        f"Merge #{record['id']} undone: {record['source']} and {record['into']} are separate "
        f"cases again.{later}",
    )


# --- identities ----------------------------------------------------------------------------


def _moved(refs: list[str]) -> str:
    return f" Cases moved along: {', '.join(refs)}." if refs else ""


async def identity_link(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    reference = _reference(request)
    form = await _form(request)
    try:
        data = LinkBody.model_validate(
            {
                "channel": form.get("channel", ""),
                "handle": form.get("handle", "").strip(),
                "to_case": reference,
            }
        )
        result = await blocking(
            identities.link,
            ctx.engine,
            principal(request),
            data.channel,
            data.handle,
            case_reference=data.to_case,
        )
    except REFUSALS as exc:
        raise flash.redirect(
            request, _back(reference), "error", f"Not linked: {refusal(exc)}"
        ) from exc
    identity = result["identity"]
    name = f"{identity['channel']}: {identity['handle']}"
    if not result["changed"]:
        text = f"{name} is this contact's identity already."
    else:
        text = f"Linked {name} to this case's contact.{_moved(result['moved_cases'])}"
    raise flash.redirect(request, _back(reference), "ok", text)


async def identity_unlink(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    reference = _reference(request)
    form = await _form(request)
    try:
        data = UnlinkBody.model_validate(
            {"channel": form.get("channel", ""), "handle": form.get("handle", "")}
        )
        result = await blocking(
            identities.unlink, ctx.engine, principal(request), data.channel, data.handle
        )
    except REFUSALS as exc:
        raise flash.redirect(
            request, _back(reference), "error", f"Not unlinked: {refusal(exc)}"
        ) from exc
    identity = result["identity"]
    raise flash.redirect(
        request,
        _back(reference),
        "ok",
        f"Unlinked {identity['channel']}: {identity['handle']}; it is a contact of its own "
        f"now.{_moved(result['moved_cases'])}",
    )


def routes() -> list[Route]:
    case = CASE_PAGE
    # After a login, a POST route's visitor goes back to the case page (its GET twin).
    back: dict[str, Any] = {"kind": "html", "in_openapi": False, "login_next": CASE_PAGE}
    return [
        Route("GET", f"{case}/merge", merge_confirm, "Confirm a merge", "pages", **back),
        Route("POST", f"{case}/merge", merge_post, "Merge (page form)", "pages", **back),
        Route(
            "POST",
            f"{case}/merges/{{merge_id}}/undo",
            merge_undo,
            "Undo a merge (page form)",
            "pages",
            **back,
        ),
        Route(
            "POST",
            f"{case}/identities/link",
            identity_link,
            "Link an identity to this case's contact (page form)",
            "pages",
            **back,
        ),
        Route(
            "POST",
            f"{case}/identities/unlink",
            identity_unlink,
            "Unlink an identity (page form)",
            "pages",
            **back,
        ),
    ]
