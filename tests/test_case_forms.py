"""The case page's merge, undo, link and unlink forms over HTTP with the real app, on SQLite and
PostgreSQL: login and CSRF, the confirmation step, POST/redirect/GET with a one-shot message,
and the store's refusals shown as sentences on the page."""

from __future__ import annotations

import html
import re
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, func, select

from inbox.models import CaseMerge, Identity, Message
from tests.support.inbox_helpers import Api, case_row, email_case, link_identity, make_user

pytest_plugins = ["tests.support.inbox_fixtures"]

ALICE_TEXT = "My parcel 5521 never arrived and the tracking page is blank."
ALICE_AGAIN = "Any news about parcel 5521? Still nothing here."
BOB_TEXT = "Please refund order 7781, it was charged twice."
CAROL_TEXT = "The app crashes when I open settings."


def flash_of(page: str) -> tuple[str, str] | None:
    found = re.search(r'<p class="flash flash-(\w+)" id="flash"[^>]*>(.*?)</p>', page, re.S)
    return (found.group(1), html.unescape(found.group(2))) if found else None


def section(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}".*?</section>', page, re.S)
    assert found, f"no #{element_id} in the page"
    return html.unescape(found.group(0))


def identity_item(page: str, kind: str, handle: str) -> str:
    found = re.search(
        rf'<li data-identity="{re.escape(kind)}:{re.escape(handle)}">(.*?)</li>', page, re.S
    )
    assert found, f"no identity {kind}:{handle} on the page"
    return html.unescape(found.group(1))


async def get_page(client: TestClient[Any, Any], path: str) -> str:
    response = await client.get(path)
    text = await response.text()
    assert response.status == 200, f"{path}: {response.status} {text}"
    assert response.content_type == "text/html"
    return text


async def post_form(
    client: TestClient[Any, Any], path: str, data: dict[str, str], expect_location: str
) -> str:
    """Post a page form, check it redirects to `expect_location`, and return that page."""
    response = await client.post(path, data=data, allow_redirects=False)
    assert response.status == 303, f"{path}: {response.status} {await response.text()}"
    assert response.headers["Location"] == expect_location
    return await get_page(client, expect_location)


def merge_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(CaseMerge).order_by(CaseMerge.id)))


def case_of_messages(engine: Engine, texts: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t: conn.execute(select(Message.case_id).where(Message.text.contains(t))).scalar_one()
            for t in texts
        }


def snapshot(engine: Engine) -> Any:
    with engine.connect() as conn:
        return (
            [(r.id, r.undone_at) for r in conn.execute(select(CaseMerge).order_by(CaseMerge.id))],
            list(conn.execute(select(Identity.id, Identity.contact_id).order_by(Identity.id))),
            list(conn.execute(select(Message.id, Message.case_id).order_by(Message.id))),
        )


def cases(engine: Engine) -> tuple[str, str, str]:
    alice = email_case(engine, "alice@example.com", "Parcel missing", ALICE_TEXT)
    again = email_case(engine, "alice@example.com", "Parcel still missing", ALICE_AGAIN)
    assert again == alice  # a follow-up joins the open case: alice's case has 2 messages
    bob = email_case(engine, "bob@example.org", "Refund please", BOB_TEXT)
    carol = email_case(engine, "carol@example.net", "App crash", CAROL_TEXT)
    return alice, bob, carol


async def test_every_form_needs_a_login_and_the_csrf_token(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    alice, bob, carol = cases(engine)
    link_identity(engine, alice, "phone", "+15550001111")
    first = await api.call("ann", "POST", f"/api/cases/{carol}/merge", 201, json={"into": alice})
    forms = [
        (f"/cases/{bob}/merge", {"into": alice}, bob, f"/cases/{alice}"),
        (
            f"/cases/{alice}/merges/{first['merge']['id']}/undo",
            {},
            alice,
            f"/cases/{alice}",
        ),
        (
            f"/cases/{alice}/identities/link",
            {"channel": "email", "handle": "bob@example.org"},
            alice,
            f"/cases/{alice}",
        ),
        (
            f"/cases/{alice}/identities/unlink",
            {"channel": "phone", "handle": "+15550001111"},
            alice,
            f"/cases/{alice}",
        ),
    ]
    before = snapshot(engine)
    anonymous = await api.client()
    client, header = await api.session("ann")
    token = header["X-CSRF-Token"]
    for path, data, reference, _ in forms:
        response = await anonymous.post(path, data=data, allow_redirects=False)
        assert response.status == 303, path
        # After logging in, the visitor lands on the case page (a login ends with a GET).
        assert response.headers["Location"] == f"/login?next=/cases/{reference}", path
        for sent in ({}, {"csrf_token": "not-the-token"}, {"csrf_token": ""}):
            refused = await client.post(path, data={**data, **sent}, allow_redirects=False)
            assert refused.status == 403, path
            assert "security token" in await refused.text()
        assert snapshot(engine) == before, path
    confirm = await anonymous.get(f"/cases/{bob}/merge?into={alice}", allow_redirects=False)
    assert confirm.status == 303
    assert confirm.headers["Location"] == f"/login?next=/cases/{bob}/merge"
    # The same forms with the session's token go through (so the refusals above were the
    # token's doing, not a broken route).
    for path, data, _, location in forms:
        await post_form(client, path, {**data, "csrf_token": token}, location)
    assert snapshot(engine) != before


async def test_merge_through_the_confirmation_then_undo(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    alice, bob, _ = cases(engine)
    bob_status = case_row(engine, bob).status
    client, header = await api.session("ann")
    token = header["X-CSRF-Token"]

    page = await get_page(client, f"/cases/{bob}")
    assert f'action="/cases/{bob}/merge"' in page and 'id="merge-into"' in page
    assert '<li class="empty">None.</li>' in section(page, "merges").replace("\n", "")

    # The confirmation shows both cases; nothing has moved yet.
    confirm = await get_page(client, f"/cases/{bob}/merge?into={alice.lower()}")
    source, into = section(confirm, "merge-source"), section(confirm, "merge-target")
    assert bob in source and "bob@example.org" in source and "Refund please" in source
    assert '<dd class="count">1</dd>' in source
    assert alice in into and "alice@example.com" in into and "Parcel missing" in into
    assert '<dd class="count">2</dd>' in into
    assert f'name="csrf_token" value="{token}"' in confirm
    assert f'name="into" value="{alice}"' in confirm
    assert merge_rows(engine) == [] and case_row(engine, bob).status == bob_status

    survivor = await post_form(
        client, f"/cases/{bob}/merge", {"csrf_token": token, "into": alice}, f"/cases/{alice}"
    )
    assert flash_of(survivor) == (
        "ok",
        f"{bob} was merged into {alice}: 1 message moved. "
        "Undo it under Merges if that was a mistake.",
    )
    for text in (ALICE_TEXT, ALICE_AGAIN, BOB_TEXT):
        assert text in survivor
    [row] = merge_rows(engine)
    history = section(survivor, "merges")
    assert f'data-merge="{row.id}"' in history and f"/cases/{alice}/merges/{row.id}/undo" in history
    # The message shows once: a reload does not repeat it.
    assert flash_of(await get_page(client, f"/cases/{alice}")) is None

    absorbed = await get_page(client, f"/cases/{bob}")
    banner = section(absorbed, "merged-into").split("</div>")[0]
    assert f'Merged into <a href="/cases/{alice}">{alice}</a>' in banner
    assert f'action="/cases/{bob}/merges/{row.id}/undo"' in banner
    assert 'id="merge-into"' not in absorbed  # a merged case is not merged again
    # Nor answered or re-statused there: those live on the surviving case.
    assert 'id="merged-note"' in absorbed
    assert all(f'<form id="{form}"' not in absorbed for form in ("reply", "status", "assign"))

    # Undo from the absorbed case's banner: both cases as they were.
    restored = await post_form(
        client, f"/cases/{bob}/merges/{row.id}/undo", {"csrf_token": token}, f"/cases/{bob}"
    )
    assert flash_of(restored) == (
        "ok",
        f"Merge #{row.id} undone: {bob} and {alice} are separate cases again.",
    )
    assert BOB_TEXT in restored and 'id="merged-into"' not in restored
    assert ALICE_TEXT not in restored
    alice_page = await get_page(client, f"/cases/{alice}")
    assert ALICE_TEXT in alice_page and ALICE_AGAIN in alice_page and BOB_TEXT not in alice_page
    assert "undone by user:ann" in section(alice_page, "merges")
    assert case_row(engine, bob).status == bob_status
    owners = case_of_messages(engine, [ALICE_TEXT, ALICE_AGAIN, BOB_TEXT])
    assert owners == {
        ALICE_TEXT: case_row(engine, alice).id,
        ALICE_AGAIN: case_row(engine, alice).id,
        BOB_TEXT: case_row(engine, bob).id,
    }


async def test_refusals_are_sentences_on_the_page(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    make_user(engine, "bo")
    make_user(engine, "meg", role="manager")
    alice, bob, carol = cases(engine)
    ann, ann_header = await api.session("ann")
    meg, meg_header = await api.session("meg")
    ann_token, meg_token = ann_header["X-CSRF-Token"], meg_header["X-CSRF-Token"]
    back = f"/cases/{bob}"

    # An unknown target, the case itself, an empty target: back to the case, with a reason.
    for into, reason in (
        ("C-999999", "Cannot merge: no case C-999999."),
        (bob, "A case cannot be merged into itself."),
        ("", "Name the case to merge this one into (C-…)."),
    ):
        response = await ann.get(f"/cases/{bob}/merge?into={into}", allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == back
        assert flash_of(await get_page(ann, back)) == ("error", reason)

    # bo holds alice's case: an agent's merge into it is refused (the API's 409), a manager
    # may force it, as the API allows.
    await api.call("bo", "POST", f"/api/cases/{alice}/claim", json={})
    confirm = await get_page(ann, f"/cases/{bob}/merge?into={alice}")
    assert f"{alice} is being worked on by bo" in confirm and 'name="force"' not in confirm
    refused = await post_form(
        ann, f"/cases/{bob}/merge", {"csrf_token": ann_token, "into": alice}, back
    )
    assert flash_of(refused) == ("error", f"Not merged: {alice} is being worked on by bo.")
    await api.call("ann", "POST", f"/api/cases/{bob}/merge", 409, json={"into": alice})
    assert merge_rows(engine) == []
    assert 'name="force"' in await get_page(meg, f"/cases/{bob}/merge?into={alice}")
    await post_form(
        meg,
        f"/cases/{bob}/merge",
        {"csrf_token": meg_token, "into": alice, "force": "1"},
        f"/cases/{alice}",
    )
    # Then alice's case onward into carol's: undoing the first merge now is out of order.
    await post_form(
        meg,
        f"/cases/{alice}/merge",
        {"csrf_token": meg_token, "into": carol, "force": "1"},
        f"/cases/{carol}",
    )
    first, second = merge_rows(engine)
    out_of_order = await post_form(
        meg, f"/cases/{bob}/merges/{first.id}/undo", {"csrf_token": meg_token}, back
    )
    assert flash_of(out_of_order) == (
        "error",
        f"Not undone: undo merge {second.id} first: it merged the surviving case onward.",
    )
    assert merge_rows(engine)[0].undone_at is None
    missing = await post_form(
        meg, f"/cases/{bob}/merges/999999/undo", {"csrf_token": meg_token}, back
    )
    assert flash_of(missing) == ("error", "Not undone: no merge 999999.")
    twice = f"/cases/{alice}/merges/{second.id}/undo"
    await post_form(meg, twice, {"csrf_token": meg_token}, f"/cases/{alice}")
    again = await post_form(meg, twice, {"csrf_token": meg_token}, f"/cases/{alice}")
    assert flash_of(again) == ("error", f"Not undone: merge {second.id} was undone already.")

    # Identity forms: a bad channel, an unknown handle, the contact's only identity.
    link = f"/cases/{carol}/identities/link"
    bad = await post_form(
        ann, link, {"csrf_token": ann_token, "channel": "fax", "handle": "x"}, f"/cases/{carol}"
    )
    kind, text = flash_of(bad) or ("", "")
    assert kind == "error" and text.startswith("Not linked: the form is not valid: channel:")
    unknown = await post_form(
        ann,
        link,
        {"csrf_token": ann_token, "channel": "email", "handle": "nobody@example.com"},
        f"/cases/{carol}",
    )
    assert flash_of(unknown) == ("error", "Not linked: no email identity 'nobody@example.com'.")
    only = await post_form(
        ann,
        f"/cases/{carol}/identities/unlink",
        {"csrf_token": ann_token, "channel": "email", "handle": "carol@example.net"},
        f"/cases/{carol}",
    )
    assert flash_of(only) == (
        "error",
        "Not unlinked: email:carol@example.net is its contact's only identity already.",
    )

    # An unknown case page is an HTML page that says so, not JSON.
    response = await ann.get("/cases/C-999999")
    assert response.status == 404 and response.content_type == "text/html"
    assert "no case C-999999" in await response.text()


async def test_link_and_unlink_an_identity_from_the_page(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    alice = email_case(engine, "alice@example.com", "Locked out", ALICE_TEXT)
    work = email_case(engine, "alice.w@work.example", "Locked out again", BOB_TEXT)
    phone = link_identity(engine, alice, "phone", "+15550001111")  # inserted verified
    with engine.connect() as conn:
        verified = dict(conn.execute(select(Identity.handle, Identity.verified)).all())
    assert verified == {
        "alice@example.com": False,
        "alice.w@work.example": False,
        "+15550001111": True,
    }
    client, header = await api.session("ann")
    token = header["X-CSRF-Token"]
    page = await get_page(client, f"/cases/{alice}")
    assert "verified: replied to our acknowledgement" in identity_item(
        page, "phone", "+15550001111"
    )
    assert "not verified" in identity_item(page, "email", "alice@example.com")
    assert 'data-identity="email:alice.w@work.example"' not in page
    for kind in ("email", "phone", "twitter", "reddit"):
        assert f'<option value="{kind}">{kind}</option>' in section(page, "identities")

    linked = await post_form(
        client,
        f"/cases/{alice}/identities/link",
        {"csrf_token": token, "channel": "email", "handle": "  Alice.W@Work.example "},
        f"/cases/{alice}",
    )
    assert flash_of(linked) == (
        "ok",
        f"Linked email: alice.w@work.example to this case's contact. Cases moved along: {work}.",
    )
    assert "not verified" in identity_item(linked, "email", "alice.w@work.example")
    contact = case_row(engine, alice).contact_id
    assert case_row(engine, work).contact_id == contact
    assert BOB_TEXT in linked  # the moved case's messages are on the contact's timeline now

    unlinked = await post_form(
        client,
        f"/cases/{alice}/identities/unlink",
        {"csrf_token": token, "channel": "email", "handle": "alice.w@work.example"},
        f"/cases/{alice}",
    )
    assert flash_of(unlinked) == (
        "ok",
        "Unlinked email: alice.w@work.example; it is a contact of its own now. "
        f"Cases moved along: {work}.",
    )
    assert 'data-identity="email:alice.w@work.example"' not in unlinked
    with engine.connect() as conn:
        owner = conn.execute(
            select(Identity.contact_id).where(Identity.handle == "alice.w@work.example")
        ).scalar_one()
        identities_left = conn.execute(
            select(func.count()).select_from(Identity).where(Identity.contact_id == contact)
        ).scalar_one()
    assert owner != contact and identities_left == 2
    assert case_row(engine, work).contact_id == owner
    assert case_row(engine, alice).contact_id == contact and phone


async def test_undo_on_a_held_case_needs_a_manager_and_force(api: Api, engine: Engine) -> None:
    make_user(engine, "ann")
    make_user(engine, "bo")
    make_user(engine, "meg", role="manager")
    alice, bob, _ = cases(engine)
    ann, ann_header = await api.session("ann")
    meg, meg_header = await api.session("meg")
    await post_form(
        ann,
        f"/cases/{bob}/merge",
        {"csrf_token": ann_header["X-CSRF-Token"], "into": alice},
        f"/cases/{alice}",
    )
    [row] = merge_rows(engine)
    await api.call("bo", "POST", f"/api/cases/{alice}/claim", json={})
    undo = f"/cases/{alice}/merges/{row.id}/undo"

    # The agent has no force box, and her undo (even with a forged force field) is refused.
    assert 'name="force"' not in section(await get_page(ann, f"/cases/{alice}"), "merges")
    refused = await post_form(
        ann, undo, {"csrf_token": ann_header["X-CSRF-Token"], "force": "1"}, f"/cases/{alice}"
    )
    assert flash_of(refused) == ("error", f"Not undone: {alice} is being worked on by bo.")
    assert merge_rows(engine)[0].undone_at is None

    # The manager sees the box, and undoes with it.
    assert 'name="force"' in section(await get_page(meg, f"/cases/{alice}"), "merges")
    done = await post_form(
        meg, undo, {"csrf_token": meg_header["X-CSRF-Token"], "force": "1"}, f"/cases/{alice}"
    )
    assert (flash_of(done) or ("", ""))[0] == "ok"
    assert merge_rows(engine)[0].undone_at is not None
