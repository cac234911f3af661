"""Honest delivery (issue 22): a channel with no working way out, or a trial Maildir, is said
on every page, and each outbound message not received says so. Pure parts by tables, the
daemon's view of a real settings file, and the pages served by the real app."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from inbox.delivery import WayOut, not_received, notices
from inbox.web.config import InboxSettings
from tests.support.inbox_helpers import email_case, make_user

pytest_plugins = ["tests.support.inbox_fixtures"]

NO_RELAY = WayOut("email", "none", "no relay configured ([outbox.email] host)", takes_in=True)


@pytest.mark.parametrize(
    ("ways", "queued", "texts"),
    [
        # Mail comes in and cannot go out: said, with why.
        (
            [NO_RELAY],
            set(),
            [
                "Nothing goes out on email (no relay configured ([outbox.email] host)): "
                "acknowledgements and replies stay queued, and customers receive nothing."
            ],
        ),
        # A connector not set up and with nothing waiting is not news.
        ([WayOut("sms", "none", "disabled in settings")], set(), []),
        # ... until something waits on it.
        (
            [WayOut("sms", "none", "disabled in settings")],
            {"sms"},
            [
                "Nothing goes out on sms (disabled in settings): acknowledgements and "
                "replies stay queued, and customers receive nothing."
            ],
        ),
        (
            [WayOut("email", "captured", "var/captured", takes_in=True)],
            set(),
            [
                "Trial mode: email is written to var/captured instead of being sent. "
                "Customers receive nothing."
            ],
        ),
        ([WayOut("email", "sends", takes_in=True)], {"email"}, []),
    ],
)
def test_the_banner_says_what_does_not_go_out(
    ways: list[WayOut], queued: set[str], texts: list[str]
) -> None:
    assert [n.text for n in notices(ways, queued)] == texts


@pytest.mark.parametrize(
    ("state", "way", "provider_id", "text"),
    [
        ("queued", NO_RELAY, None,
         "The customer has NOT received this: no relay configured ([outbox.email] host)."),
        ("queued", WayOut("email", "sends"), None,
         "The customer has NOT received this yet: it is waiting to be sent."),
        ("failed", WayOut("email", "sends"), None, "The customer has NOT received this: failed."),
        ("sent", WayOut("email", "sends"), "250 ok", None),
        ("delivered", None, None, None),
        ("sent", WayOut("email", "captured", "x"), "captured to Maildir, not sent: 1.a",
         "The customer has NOT received this: trial mode kept it in a Maildir."),
        (None, NO_RELAY, None, None),
    ],
)  # fmt: skip
def test_each_message_says_whether_the_customer_has_it(
    state: str | None, way: WayOut | None, provider_id: str | None, text: str | None
) -> None:
    assert not_received(state, way, provider_id) == text


def test_the_daemon_knows_mail_has_no_way_out_without_a_relay(db_url: str) -> None:
    from parity.daemon import Daemon
    from parity.settings import parse
    from tests.test_daemon import settings_for

    daemon = Daemon(settings_for(db_url))
    try:
        daemon.build()
        ways = {w.channel: w for w in daemon.ways_out}
        # The registry's mail channel: SMTP intake runs, the relay has no host.
        assert ways["email"].state == "none" and ways["email"].takes_in
        assert "no relay configured" in ways["email"].reason
        assert ways["sms"].state == "none" and not ways["sms"].takes_in
    finally:
        daemon.engine.dispose()
    base = settings_for(db_url).model_dump()
    base["outbox"]["email"]["capture_dir"] = "trial-mail"
    trial = Daemon(parse(base))
    try:
        trial.build()
        ways = {w.channel: w for w in trial.ways_out}
        assert (ways["email"].state, ways["email"].reason) == ("captured", "trial-mail")
    finally:
        trial.engine.dispose()


async def test_every_page_and_each_queued_message_say_it(make_api: Any, engine: Engine) -> None:
    from aiohttp.test_utils import TestServer

    from inbox.web import create_app
    from tests.support.inbox_helpers import DOMAIN, Api

    app = create_app(engine, InboxSettings(), message_id_domain=DOMAIN, ways_out=[NO_RELAY])
    server = TestServer(app)
    await server.start_server()
    api = Api(engine, server)
    try:
        make_user(engine, "ann")
        ref = email_case(engine, "kim@example.org", "Hello", "Anyone there?")
        client, _ = await api.session("ann")
        await api.call("ann", "POST", f"/api/cases/{ref}/replies", 201, json={"text": "Yes!"})
        for path in ("/queue", f"/cases/{ref}"):
            page = await (await client.get(path)).text()
            assert 'id="delivery-banner"' in page
            assert "Nothing goes out on email" in page
        case = await (await client.get(f"/cases/{ref}")).text()
        # The acknowledgement (outbox list) and the reply (timeline and outbox list).
        assert case.count("The customer has NOT received this: no relay configured") == 3
    finally:
        for c in api.clients:
            await c.close()
        await server.close()


async def test_no_banner_where_the_composition_root_says_nothing(api: Any, engine: Engine) -> None:
    make_user(engine, "ann")
    client, _ = await api.session("ann")
    assert 'id="delivery-banner"' not in await (await client.get("/queue")).text()


@pytest.mark.parametrize(
    ("relay", "line", "can_send", "captured_to"),
    [
        (
            'capture_dir = "trial-mail"\n',
            "email: captured, not sent: Trial mode: email is written to trial-mail instead of "
            "being sent. Customers receive nothing.",
            False,
            "trial-mail",
        ),
        ('host = "relay.example.net"\n', "email: can send", True, None),
        (
            "",
            "email: cannot send: no relay configured ([outbox.email] host); email stays queued",
            False,
            None,
        ),
    ],
)
def test_outbox_status_says_mail_is_captured_not_sent(
    db_url: str,
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
    relay: str,
    line: str,
    can_send: bool,
    captured_to: str | None,
) -> None:
    """`parity outbox status` says what the banner says: a trial Maildir is not sending."""
    import json

    from parity.cli import main

    settings = tmp_path / "settings.toml"
    settings.write_text(
        f'[database]\nurl = "{db_url}"\nurl_env = "PARITY_TEST_UNSET_URL"\n[outbox.email]\n{relay}'
    )
    assert main(["--settings", str(settings), "outbox", "status"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == line
    assert main(["--settings", str(settings), "outbox", "status", "--json"]) == 0
    email = json.loads(capsys.readouterr().out)["email"]
    assert (email["can_send"], email["captured_to"]) == (can_send, captured_to)
