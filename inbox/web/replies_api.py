"""The JSON API of composing replies: uploads, drafts and canned replies (issue 22).

Registered from the one route table like every route, so login and CSRF apply and each one
is in /api/openapi.json. The reply itself stays POST /api/cases/{reference}/replies.
"""

from __future__ import annotations

from aiohttp import BodyPartReader, web
from pydantic import Field

from inbox import casework, replykit
from inbox.config import Strict
from inbox.web.app import blocking, body, context, principal, reply_json
from inbox.web.routes import Param, Route

_CASE = "/api/cases/{reference}"


class DraftBody(Strict):
    text: str = Field(default="", max_length=casework.MAX_TEXT)
    # "<channel>|<handle>" as the reply form's target list has it.
    target: str = Field(default="", max_length=600)
    cc: list[str] = Field(default_factory=list, max_length=20)
    bcc: list[str] = Field(default_factory=list, max_length=20)
    attachments: list[int] = Field(default_factory=list, max_length=100)
    markdown: bool = True


class CannedBody(Strict):
    title: str = Field(min_length=1, max_length=replykit.MAX_TITLE)
    body: str = Field(min_length=1, max_length=casework.MAX_TEXT)
    # channel -> its own text (checked against that channel's length limit).
    variants: dict[str, str] = Field(default_factory=dict, max_length=20)
    # Personal: only I see it. Shared ones are made by managers.
    personal: bool = False


class CannedChange(Strict):
    title: str = Field(min_length=1, max_length=replykit.MAX_TITLE)
    body: str = Field(min_length=1, max_length=casework.MAX_TEXT)
    variants: dict[str, str] = Field(default_factory=dict, max_length=20)


def _id(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise casework.NotFound(f"no {what} {value!r}") from exc


async def upload(request: web.Request) -> web.StreamResponse:
    """One file, as multipart/form-data field "file", read only up to the reply limit."""
    limit = context(request).settings.attachments_max_bytes
    if not request.content_type.startswith("multipart/"):
        raise casework.Invalid('send the file as multipart/form-data, field "file"')
    reader = await request.multipart()
    part = await reader.next()
    if not isinstance(part, BodyPartReader) or part.name != "file":
        raise casework.Invalid('send the file as multipart/form-data, field "file"')
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(64 * 1024):
        size += len(chunk)
        if size > limit:
            # Stop reading: a bigger file costs us nothing more than the limit.
            raise casework.Invalid(f"a reply's files take at most {limit} bytes")
        chunks.append(chunk)
    result = await blocking(
        replykit.upload,
        context(request).engine,
        principal(request),
        request.match_info["reference"],
        filename=part.filename or "attachment",
        content_type=part.headers.get("Content-Type", "application/octet-stream"),
        data=b"".join(chunks),
    )
    return reply_json({"upload": result}, status=201)


async def draft_get(request: web.Request) -> web.StreamResponse:
    result = await blocking(
        replykit.get_draft,
        context(request).engine,
        principal(request),
        request.match_info["reference"],
    )
    return reply_json(result)


async def draft_put(request: web.Request) -> web.StreamResponse:
    data = await body(request, DraftBody)
    result = await blocking(
        replykit.save_draft,
        context(request).engine,
        principal(request),
        request.match_info["reference"],
        data.model_dump(),
    )
    return reply_json(result)


async def draft_delete(request: web.Request) -> web.StreamResponse:
    await blocking(
        replykit.discard_draft,
        context(request).engine,
        principal(request),
        request.match_info["reference"],
    )
    return reply_json({"ok": True})


async def canned_list(request: web.Request) -> web.StreamResponse:
    rows = await blocking(replykit.list_canned, context(request).engine, principal(request))
    return reply_json({"canned": rows})


async def canned_create(request: web.Request) -> web.StreamResponse:
    data = await body(request, CannedBody)
    row = await blocking(
        replykit.create_canned,
        context(request).engine,
        principal(request),
        title=data.title,
        body=data.body,
        variants=dict(data.variants),
        personal=data.personal,
    )
    return reply_json({"canned": row}, status=201)


async def canned_update(request: web.Request) -> web.StreamResponse:
    data = await body(request, CannedChange)
    row = await blocking(
        replykit.update_canned,
        context(request).engine,
        principal(request),
        _id(request.match_info["canned_id"], "canned reply"),
        title=data.title,
        body=data.body,
        variants=dict(data.variants),
    )
    return reply_json({"canned": row})


async def canned_delete(request: web.Request) -> web.StreamResponse:
    await blocking(
        replykit.delete_canned,
        context(request).engine,
        principal(request),
        _id(request.match_info["canned_id"], "canned reply"),
    )
    return reply_json({"ok": True})


async def canned_render(request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query
    result = await blocking(
        replykit.render_canned,
        context(request).engine,
        principal(request),
        _id(request.match_info["canned_id"], "canned reply"),
        query.get("case", ""),
        query.get("channel", ""),
    )
    return reply_json(result)


def routes() -> list[Route]:
    return [
        Route(
            "POST",
            f"{_CASE}/uploads",
            upload,
            'Upload one file for a reply (multipart field "file"); the reply names its id',
            "replies",
            responses={201: "stored", 400: "too big or not multipart"},
        ),
        Route("GET", f"{_CASE}/draft", draft_get, "My reply draft on this case", "replies"),
        Route(
            "PUT",
            f"{_CASE}/draft",
            draft_put,
            "Keep my reply draft on this case",
            "replies",
            body=DraftBody,
        ),
        Route("DELETE", f"{_CASE}/draft", draft_delete, "Discard my reply draft", "replies"),
        Route("GET", "/api/canned", canned_list, "Canned replies: shared and my own", "replies"),
        Route(
            "POST",
            "/api/canned",
            canned_create,
            "Add a canned reply (shared: managers; personal: anyone)",
            "replies",
            body=CannedBody,
            responses={201: "created", 400: "invalid", 403: "shared needs a manager"},
        ),
        Route(
            "PUT",
            "/api/canned/{canned_id}",
            canned_update,
            "Change a canned reply",
            "replies",
            body=CannedChange,
            responses={200: "OK", 400: "invalid", 403: "not yours", 404: "no such reply"},
        ),
        Route(
            "DELETE",
            "/api/canned/{canned_id}",
            canned_delete,
            "Delete a canned reply",
            "replies",
            responses={200: "OK", 403: "not yours", 404: "no such reply"},
        ),
        Route(
            "GET",
            "/api/canned/{canned_id}/render",
            canned_render,
            "A canned reply filled in for a case and channel, with how it fits the channel",
            "replies",
            query=(
                Param("case", "the case reference", required=True),
                Param("channel", "the channel the reply goes on", required=True),
            ),
            responses={200: "OK", 400: "unknown channel", 404: "no such reply or case"},
        ),
    ]
