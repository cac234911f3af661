"""Issue 16's web attacks, as an attacker or an agent meets them, over HTTP against the real
app (SQLite and PostgreSQL): the login redirect, the login throttle, bidirectional controls in
names, the unverified and claims-reference marks, sender authentication per message and the
reply box of a case another agent holds. The browser side is in test_trust_web_browser.py."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from inbox.accounts import LoginLimits, address_key, throttle_delay
from inbox.display import strip_bidi
from inbox.models import Attachment, Case, Contact, LoginAttempt, Message
from inbox.web.config import InboxSettings
from inbox.web.trust import auth_line, safe_next
from tests.support.helpers import ingest_and_normalize
from tests.support.inbox_helpers import PASSWORD, email_case, make_user

pytest_plugins = ["tests.support.inbox_fixtures"]

# Every bidirectional control the issue names, written out here rather than taken from the
# code under test.
BIDI = [
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u200e",
    "\u200f",
    "\u061c",
]
RLO = "\u202e"

# --- the redirect after login ------------------------------------------------------------------

# As the login page receives them: aiohttp has already percent-decoded the query once.
HOSTILE_NEXT = [
    "/\\evil.example/",  # next=/%5Cevil.example/: Chromium reads "\" as "/"
    "/\t/evil.example/",  # next=/%09/evil.example/: the tab is dropped, leaving //evil.example
    "/\n/evil.example/",
    "/\r\n/evil.example/",
    "//evil.example/",
    "///evil.example/",
    "/\\/evil.example/",
    "\\\\evil.example",
    "https://evil.example/",
    "http:evil.example",
    "javascript:alert(document.cookie)",
    "data:text/html,<script>alert(1)</script>",
    "evil.example",
    " /queue",
    "/ /evil.example",
    "/%2F%2Fevil.example",  # decodes to //evil.example at the next hop
    "/%252F%252Fevil.example",  # twice
    "/%5Cevil.example",
    "/%09/evil.example",
    "/..//evil.example",  # the path of /..//x is //x
    "/%2e%2e//evil.example",
    "/\u3000/evil.example",  # ideographic space
    "/\uff0f/evil.example",  # full-width solidus
    "/\x00/evil.example",
    "/\x7f/evil.example",
    "/queue" + "a" * 3000,
    "",
]
OWN_PATHS = [
    "/queue",
    "/",
    "/cases/C-000123",
    "/cases/C-000123#m42",
    "/queue?status=open&channel=email",
    "/cases/C-000123/merge?into=C-000007",
]


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_a_hostile_next_falls_back_to_the_queue(target: str) -> None:
    assert safe_next(target) == "/queue"


@pytest.mark.parametrize("target", OWN_PATHS)
def test_our_own_paths_are_kept(target: str) -> None:
    assert safe_next(target) == target


def test_no_next_is_the_queue() -> None:
    assert safe_next(None) == "/queue"


async def test_the_login_page_never_carries_a_hostile_next(api: Any, engine: Engine) -> None:
    client = await api.client()
    # Raw query strings, as the attacker's link has them.
    for query, expected in (
        ("next=/%5Cevil.example/", "/queue"),
        ("next=/%09/evil.example/", "/queue"),
        ("next=//evil.example/", "/queue"),
        ("next=https://evil.example/", "/queue"),
        ("next=/cases/C-000007", "/cases/C-000007"),
    ):
        page = await (await client.get(f"/login?{query}")).text()
        found = re.search(r'data-next="([^"]*)"', page)
        assert found is not None, query
        assert html.unescape(found.group(1)) == expected, query


# --- the login throttle -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [(0, None), (4, None), (5, 1), (6, 2), (7, 4), (14, 512), (15, 900), (10_000, 900)],
)
def test_the_wait_doubles_past_the_free_failures(failures: int, seconds: int | None) -> None:
    limits = LoginLimits(
        per_account=5, delay=timedelta(seconds=1), max_delay=timedelta(seconds=900)
    )
    wait = throttle_delay(failures, 5, limits)
    assert (None if wait is None else wait.total_seconds()) == seconds


@pytest.mark.parametrize(
    ("address", "counted"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:0DB8:0001:0002:0000:0000:0000:0001", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", "not an address"),
        ("", ""),
    ],
)
def test_client_addresses_are_counted_by_line(address: str, counted: str) -> None:
    assert address_key(address) == counted


# A long first wait, so that no slowness of the test machine can let a wait run out between
# two requests; the time that passes is simulated by moving the stored failures back.
SLOW = InboxSettings(login_delay_seconds=60, login_max_delay_seconds=3600, trust_forwarded_for=True)


def _login(client: Any, name: str, password: str, address: str) -> Any:
    return client.post(
        "/api/login",
        json={"name": name, "password": password},
        headers={"X-Forwarded-For": address},
    )


def _age_failures(engine: Engine, seconds: int) -> None:
    with engine.begin() as conn:
        for row in conn.execute(select(LoginAttempt.id, LoginAttempt.at)).all():
            conn.execute(
                update(LoginAttempt)
                .where(LoginAttempt.id == row.id)
                .values(at=row.at - timedelta(seconds=seconds))
            )


async def test_a_stranger_cannot_lock_an_agent_out(make_api: Any, engine: Engine) -> None:
    api = await make_api(SLOW)
    make_user(engine, "xena")
    attacker = await api.client()
    agent = await api.client()
    a, b = "203.0.113.66", "198.51.100.20"

    statuses = []
    for n in range(50):
        response = await _login(attacker, "xena", f"guess number {n}", a)
        statuses.append(response.status)
        if response.status == 429:
            assert 0 < int(response.headers["Retry-After"]) <= 60
            assert (await response.json())["retry_after"] == int(response.headers["Retry-After"])
    # Five free failures, then the attacker waits; refused tries are not even checked.
    assert statuses == [401] * 5 + [429] * 45
    with engine.connect() as conn:
        assert conn.execute(select(LoginAttempt.name, LoginAttempt.ip)).all() == [("xena", a)] * 5

    # Xena, elsewhere, with her password: in.
    response = await _login(agent, "xena", PASSWORD, b)
    assert response.status == 200
    assert (await response.json())["user"]["name"] == "xena"
    # Her success did not wipe the attacker's count: still slowed.
    assert (await _login(attacker, "xena", PASSWORD, a)).status == 429

    # Each further failure doubles the wait: 60 s, then 120, then 240.
    for wait in (60, 120, 240):
        _age_failures(engine, wait - 5)
        early = await _login(attacker, "xena", "one more guess", a)
        assert early.status == 429 and int(early.headers["Retry-After"]) <= 5
        _age_failures(engine, 5)
        assert (await _login(attacker, "xena", "one more guess", a)).status == 401
        slowed = await _login(attacker, "xena", "and another", a)
        assert slowed.status == 429
        assert wait < int(slowed.headers["Retry-After"]) <= 2 * wait
    # And Xena from her own address is still never refused.
    assert (await _login(agent, "xena", PASSWORD, b)).status == 200


async def test_one_address_failing_on_many_names_is_slowed_not_the_team(
    make_api: Any, engine: Engine
) -> None:
    api = await make_api(SLOW)
    make_user(engine, "yara")
    make_user(engine, "zeno")
    attacker = await api.client()
    team = await api.client()
    # From one IPv6 line, a new address for each try, a new name for each try: one per name
    # stays under the per-(account, address) allowance, so only the per-address count holds.
    names = ["yara", "zeno"] + [f"agent{i}" for i in range(18)]
    for i, name in enumerate(names):
        response = await _login(attacker, name, "wrong password", f"2001:db8:77:1::{i + 1:x}")
        assert response.status == 401, (i, name)
    for i, name in enumerate(("yara", "zeno", "somebody.new")):
        blocked = await _login(attacker, name, PASSWORD, f"2001:db8:77:1::{100 + i:x}")
        assert blocked.status == 429, name
        assert 0 < int(blocked.headers["Retry-After"]) <= 60
    # The team, from their own addresses, log in as usual.
    assert (await _login(team, "yara", PASSWORD, "198.51.100.21")).status == 200
    assert (await _login(team, "zeno", PASSWORD, "2001:db8:99:1::5")).status == 200
    # Another /64 of the same provider is another line.
    assert (await _login(attacker, "yara", PASSWORD, "2001:db8:77:2::1")).status == 200


async def test_a_forged_forwarded_for_is_ignored_unless_a_proxy_is_trusted(
    make_api: Any, engine: Engine
) -> None:
    api = await make_api(InboxSettings(login_delay_seconds=60))
    make_user(engine, "wim")
    attacker = await api.client()
    # Each try claims a fresh address; the app counts the real one (the test client's).
    for n in range(5):
        response = await _login(attacker, "wim", "wrong password", f"192.0.2.{n + 1}")
        assert response.status == 401
    assert (await _login(attacker, "wim", "wrong password", "192.0.2.99")).status == 429
    with engine.connect() as conn:
        addresses = set(conn.execute(select(LoginAttempt.ip)).scalars())
    assert addresses == {"127.0.0.1"}


# --- bidirectional controls ---------------------------------------------------------------------

ATTACHED = (
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    "--b1\r\nContent-Type: text/plain\r\n\r\nMy invoice is attached.\r\n"
    "--b1\r\nContent-Type: application/octet-stream\r\n"
    'Content-Disposition: attachment; filename="invoice.bin"\r\n\r\n'
    "MZ not really a program\r\n"
    "--b1--\r\n"
)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("invoice\u202egpj.exe", "invoicegpj.exe"),
        ("\u2067Ann\u2069 Smith", "Ann Smith"),
        ("Refund \u202adue\u202c \u200e\u200f\u061c", "Refund due "),
        ("\u0645\u0631\u062d\u0628\u0627", "\u0645\u0631\u062d\u0628\u0627"),  # Arabic stays
        ("plain", "plain"),
    ],
)
def test_strip_bidi(text: str, shown: str) -> None:
    assert strip_bidi(text) == shown


def _hostile_names(engine: Engine) -> tuple[str, int]:
    """A case whose names carry bidi controls, set in the store as a sender could make them."""
    raw = (
        "From: ann@example.org\r\nTo: help@support.example.com\r\nSubject: Invoice\r\n"
        "Message-ID: <bidi@mail.example>\r\nDate: Fri, 20 Nov 2026 10:00:00 +0000\r\n" + ATTACHED
    ).encode()
    outcome = ingest_and_normalize(engine, raw)
    with engine.begin() as conn:
        case = conn.execute(select(Case).where(Case.id == outcome.case_id)).one()
        conn.execute(update(Case).where(Case.id == case.id).values(subject=f"Refund {RLO}fdp.exe"))
        conn.execute(
            update(Contact).where(Contact.id == case.contact_id).values(name=f"Ann {RLO}htimS")
        )
        conn.execute(
            update(Message)
            .where(Message.id == outcome.message_id)
            .values(subject=f"Refund {RLO}fdp.exe", from_name=f"Ann {RLO}htimS")
        )
        conn.execute(
            update(Attachment)
            .where(Attachment.message_id == outcome.message_id)
            .values(filename=f"invoice{RLO}gpj.exe")
        )
        attachment = conn.execute(
            select(Attachment.id).where(Attachment.message_id == outcome.message_id)
        ).scalar_one()
    return str(case.reference), int(attachment)


async def test_bidi_controls_are_shown_nowhere(api: Any, engine: Engine) -> None:
    make_user(engine, "ann")
    reference, attachment = _hostile_names(engine)
    client, _ = await api.session("ann")
    pages = {
        "queue": await (await client.get("/queue")).text(),
        "queue rows": await (await client.get("/queue/rows")).text(),
        "case": await (await client.get(f"/cases/{reference}")).text(),
    }
    for name, page in pages.items():
        assert not [c for c in BIDI if c in page], name
        assert "Refund fdp.exe" in page, name
        assert "Ann htimS" in page, name
    assert "invoicegpj.exe" in pages["case"]
    download = await client.get(f"/api/attachments/{attachment}")
    assert download.status == 200
    disposition = download.headers["Content-Disposition"]
    assert disposition == (
        "attachment; filename=\"invoicegpj.exe\"; filename*=UTF-8''invoicegpj.exe"
    )
    # The API keeps the stored data as it is (for machines); the pages are what people read.
    data = await (await client.get(f"/api/cases/{reference}")).json()
    assert data["subject"] == f"Refund {RLO}fdp.exe"


async def test_a_body_keeps_its_marks_inside_its_own_isolated_block(
    api: Any, engine: Engine
) -> None:
    make_user(engine, "ann")
    # Right-to-left writing uses the marks; the body is shown whole, in a dir="auto" block.
    text = "\u05e9\u05dc\u05d5\u05dd\u200f, order 4471"
    utf8 = "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    reference = email_case(engine, "dana@example.org", "Order", text, extra=utf8)
    client, _ = await api.session("ann")
    page = await (await client.get(f"/cases/{reference}")).text()
    assert f'<div class="text" dir="auto">{text}' in page


# --- what agents must see -----------------------------------------------------------------------

PASS = {
    "spf": "pass",
    "dkim": "pass",
    "dmarc": "pass",
    "arc": None,
    "from_domain": "customer.example",
    "verdict": "pass",
}
FAIL = {
    "spf": "softfail",
    "dkim": "none",
    "dmarc": "fail",
    "arc": None,
    "from_domain": "customer.example",
    "verdict": "fail",
}
TEMP = {
    "spf": "temperror",
    "dkim": "temperror",
    "dmarc": "temperror",
    "arc": None,
    "from_domain": "customer.example",
    "verdict": "temperror",
}
ARC = {
    "spf": "fail",
    "dkim": "fail",
    "dmarc": "fail",
    "arc": "pass",
    "from_domain": "lists.example",
    "verdict": "fail",
}


@pytest.mark.parametrize(
    ("auth", "line"),
    [
        (PASS, {"text": "Sender: DMARC pass (customer.example)", "state": "pass"}),
        (
            FAIL,
            {
                "text": "Sender not authenticated: DMARC fail, DKIM none, SPF softfail "
                "(customer.example)",
                "state": "fail",
            },
        ),
        (
            TEMP,
            {
                "text": "Sender could not be checked: DMARC temperror, DKIM temperror, "
                "SPF temperror (customer.example)",
                "state": "temperror",
            },
        ),
        (
            ARC,
            {
                "text": "Sender not authenticated: DMARC fail, DKIM fail, SPF fail, ARC pass "
                "(lists.example)",
                "state": "fail",
            },
        ),
        (
            {"spf": "pass", "dkim": "none", "dmarc": "none", "verdict": "pass"},
            {"text": "Sender: DMARC none, DKIM none, SPF pass", "state": "pass"},
        ),
        (
            {"dmarc": "<b>x</b>", "from_domain": "evil.example\u202e", "verdict": "pass"},
            {"text": "Sender: DMARC unknown, DKIM none, SPF none", "state": "pass"},
        ),
        (None, None),
        ("pass", None),
    ],
)
def test_auth_line(auth: Any, line: dict[str, str] | None) -> None:
    assert auth_line(auth) == line


def _set(engine: Engine, reference: str, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(Case).where(Case.reference == reference).values(**values))


def _set_auth(engine: Engine, reference: str, auth: dict[str, Any] | None) -> None:
    with engine.begin() as conn:
        case_id = conn.execute(select(Case.id).where(Case.reference == reference)).scalar_one()
        conn.execute(update(Message).where(Message.case_id == case_id).values(auth=auth))


def _sender_lines(page: str) -> list[tuple[str, str]]:
    return [
        (state, html.unescape(text))
        for state, text in re.findall(
            r'<span class="sender-check auth-(\w+)" data-state="\w+">([^<]*)</span>', page
        )
    ]


async def test_unverified_and_claims_marks_and_sender_lines(api: Any, engine: Engine) -> None:
    make_user(engine, "ann")
    real = email_case(engine, "innocent@customer.example", "My account", "Locked out.")
    forged = email_case(
        engine, "innocent@customer.example.forged.test", "Send the link", "To mallory please."
    )
    claims = email_case(engine, "mallory@attacker.example", f"About {real}", f"Re {real}")
    unchecked = email_case(engine, "old@customer.example", "From before", "Old mail.")
    # The rows are stated directly: customer.example's SPF never allows the tests' address,
    # so the normalizer marks every case above unverified; `real` stands for authenticated
    # mail and `unchecked` for mail filed before senders were checked.
    for plain in (real, unchecked):
        _set(engine, plain, unverified_from=None)
    _set(engine, forged, unverified_from="innocent@customer.example")
    _set(engine, claims, claims_reference=real)
    _set_auth(engine, real, PASS)
    _set_auth(engine, forged, FAIL)
    _set_auth(engine, claims, TEMP)
    _set_auth(engine, unchecked, None)
    client, _ = await api.session("ann")

    queue = html.unescape(await (await client.get("/queue")).text())
    rows = dict(re.findall(r'<tr data-reference="([^"]+)"(.*?)</tr>', queue, re.S))
    assert set(rows) == {real, forged, claims, unchecked}
    assert "Unverified: claims to be from innocent@customer.example" in rows[forged]
    assert f"Claims to be about {real}" in rows[claims]
    for plain in (real, unchecked):
        assert "Unverified" not in rows[plain] and "Claims to be about" not in rows[plain]
    items = {i["reference"]: i for i in (await (await client.get("/api/queue")).json())["cases"]}
    assert items[forged]["unverified_from"] == "innocent@customer.example"
    assert items[claims]["claims_reference"] == real
    assert items[real]["unverified_from"] is None and items[real]["claims_reference"] is None

    pages = {ref: await (await client.get(f"/cases/{ref}")).text() for ref in rows}
    banner = re.compile(r'<p class="banner (\w+)" id="[\w-]+" role="alert">(.*?)</p>', re.S)

    def banners(ref: str) -> dict[str, str]:
        return {
            kind: re.sub(r"<[^>]+>", "", html.unescape(text))
            for kind, text in banner.findall(pages[ref])
        }

    assert banners(forged)["unverified"].startswith(
        "Unverified: claims to be from innocent@customer.example."
    )
    assert set(banners(forged)) == {"unverified"}
    assert banners(claims)["claims"].startswith(f"Claims to be about {real}.")
    assert f'<a href="/cases/{real}">{real}</a>' in pages[claims]
    assert set(banners(claims)) == {"claims"}
    assert banners(real) == {} and banners(unchecked) == {}

    assert _sender_lines(pages[real]) == [("pass", "Sender: DMARC pass (customer.example)")]
    assert _sender_lines(pages[forged]) == [
        ("fail", "Sender not authenticated: DMARC fail, DKIM none, SPF softfail (customer.example)")
    ]
    assert _sender_lines(pages[claims]) == [
        (
            "temperror",
            "Sender could not be checked: DMARC temperror, DKIM temperror, SPF temperror "
            "(customer.example)",
        )
    ]
    assert _sender_lines(pages[unchecked]) == [("none", "Sender not checked")]


async def test_the_reply_box_is_shut_while_another_agent_holds_the_case(
    api: Any, engine: Engine
) -> None:
    make_user(engine, "ann")
    make_user(engine, "bo")
    reference = email_case(engine, "pat@example.org", "Card declined", "It failed again.")
    ann, ann_csrf = await api.session("ann")
    bo, bo_csrf = await api.session("bo")
    fieldset = re.compile(r'<fieldset id="reply-fields"( disabled)?>')

    open_page = await (await bo.get(f"/cases/{reference}")).text()
    assert fieldset.search(open_page).group(1) is None  # type: ignore[union-attr]

    claimed = await ann.post(f"/api/cases/{reference}/claim", json={}, headers=ann_csrf)
    assert claimed.status == 200
    until = (await claimed.json())["lease"]["until"]
    held = await (await bo.get(f"/cases/{reference}")).text()
    assert fieldset.search(held).group(1) == " disabled"  # type: ignore[union-attr]
    line = re.search(r'<p class="held" id="reply-held" role="status">([^<]*)</p>', held)
    assert line is not None
    assert line.group(1) == (
        f"ann holds this case until {until}: you can reply once they release it or the hold ends."
    )
    # The holder's own page is open for her.
    mine = await (await ann.get(f"/cases/{reference}")).text()
    assert fieldset.search(mine).group(1) is None  # type: ignore[union-attr]
    assert re.search(r'<p class="held" id="reply-held" role="status" hidden>', mine)
    # The server still refuses Bo's reply, whatever the page shows.
    refused = await bo.post(
        f"/api/cases/{reference}/replies",
        json={"text": "Try again now", "channel": "email", "handle": "pat@example.org"},
        headers=bo_csrf,
    )
    assert refused.status == 409 and (await refused.json())["holder"] == "ann"
    # Released: open again.
    released = await ann.delete(f"/api/cases/{reference}/claim", headers=ann_csrf)
    assert released.status == 200
    again = await (await bo.get(f"/cases/{reference}")).text()
    assert fieldset.search(again).group(1) is None  # type: ignore[union-attr]
    # A lease that ran out is no hold either.
    assert (await ann.post(f"/api/cases/{reference}/claim", json={}, headers=ann_csrf)).ok
    _set(engine, reference, lease_until=datetime.now(UTC) - timedelta(seconds=1))
    expired = await (await bo.get(f"/cases/{reference}")).text()
    assert fieldset.search(expired).group(1) is None  # type: ignore[union-attr]
