"""The Twitter connector's pure rules, by tables."""

from __future__ import annotations

import random
import socket
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from connectors.twitter.api import XApi, XError, classify, describe, read_budget, seconds_until
from connectors.twitter.auth import credentials
from connectors.twitter.intake import dm_items, mention_items, newer_event, newest_tweet_id
from connectors.twitter.outbox import ack_route, ack_text, choose_ack
from connectors.twitter.settings import TwitterSettings
from inbox.outbox import backoff
from normalizer.ack_plan import AckCase, AckOut
from normalizer.acks import describe_eta
from tests.channels.twitter.fake_x import ACCOUNT_ID, CREDENTIALS, fixture


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, "rate_limited"),
        (402, "credits"),
        (401, "auth"),
        (403, "forbidden"),
        (400, "rejected"),
        (404, "rejected"),
        (500, "transient"),
        (503, "transient"),
    ],
)
def test_http_statuses_are_sorted_by_what_to_do(status, kind):
    assert classify(status) == kind


@pytest.mark.parametrize(
    ("status", "reason", "body", "line"),
    [
        (
            402,
            "Payment Required",
            "errors/402_credits_depleted.json",
            "402 Payment Required: CreditsDepleted; Your enrolled account [1412345678901234567] "
            "does not have any credits to fulfill this request.",
        ),
        (
            429,
            "Too Many Requests",
            "errors/429_too_many_requests.json",
            "429 Too Many Requests: Too Many Requests",
        ),
        (
            400,
            "Bad Request",
            "errors/400_invalid_pagination_token.json",
            "400 Bad Request: Invalid Request; "
            "One or more parameters to your request was invalid.; "
            "The `pagination_token` query parameter value [PLACEHOLDER] is not valid",
        ),
        (502, "Bad Gateway", None, "502 Bad Gateway"),
    ],
)
def test_error_bodies_become_one_line(status, reason, body, line):
    assert describe(status, reason, fixture(body) if body else None) == line


def test_rate_limit_headers_are_read_and_missing_ones_are_none():
    budget = read_budget(
        {
            "x-rate-limit-limit": "450",
            "x-rate-limit-remaining": "0",
            "x-rate-limit-reset": "1795223700",
        }  # 2026-11-21 01:15:00 UTC
    )
    assert budget is not None
    assert (budget.limit, budget.remaining, budget.reset_at) == (450, 0, 1795223700.0)
    assert budget.as_status() == {"limit": 450, "remaining": 0, "reset_at": "2026-11-21T01:15:00Z"}
    assert read_budget({"content-type": "application/json"}) is None
    assert read_budget({"x-rate-limit-remaining": "many"}) is None


@pytest.mark.parametrize(
    ("reset_at", "now", "wait"),
    [
        (1000.0, 998.5, 2.5),  # one second past the reset: clocks differ
        (1000.0, 1005.0, 0.0),  # already past
        (None, 1000.0, 60.0),  # no header: a minute
        (1000.0 + 86400, 1000.0, 960.0),  # a nonsense reset is capped at a window and a bit
    ],
)
def test_waits_for_a_rate_limit_reset(reset_at, now, wait):
    assert seconds_until(reset_at, now) == wait


def test_tweet_ids_compare_as_numbers():
    # As strings "999..." > "1000...": as snowflakes the longer one is newer.
    assert (
        newest_tweet_id("999999999999999999", "1000000000000000000", None) == "1000000000000000000"
    )
    assert newest_tweet_id(None, None) is None


def test_the_newest_dm_event_is_kept_by_time_then_id():
    first = {"id": "2123733088465847506", "created_at": "2026-11-20T11:00:00.000Z"}
    later = {"id": "2123735596659639506", "created_at": "2026-11-20T11:09:58.000Z"}
    state = newer_event((None, None), first)
    assert state[0] == first["id"]
    state = newer_event(state, later)
    assert state[0] == later["id"]
    assert newer_event(state, first) == state  # older events never move it back
    assert newer_event(state, {"id": "1"}) == state  # no time: ignored


def test_pages_leave_out_our_own_items_and_keep_the_expanded_user():
    received = datetime(2026, 11, 20, 12, tzinfo=UTC)
    body = {
        "data": fixture("mentions.json"),
        "includes": {"users": fixture("users.json")},
        "meta": {"result_count": 6},
    }
    page = mention_items(body, ACCOUNT_ID, received)
    assert page.own == 1
    assert len(page.items) == 5
    assert all(i.source_key.startswith("tweet:") and i.channel == "twitter" for i in page.items)
    body = {"data": [*fixture("dm_events.json"), {"id": "9", "event_type": "ParticipantsLeave"}]}
    page = dm_items(body, ACCOUNT_ID, received)
    assert (page.own, page.other, len(page.items)) == (1, 1, 3)


@pytest.mark.parametrize(
    ("visibility", "public_replies", "dm_available", "acknowledge", "automated", "route", "why"),
    [
        ("public", True, True, True, None, "tweet", "public reply"),
        ("public", True, False, True, None, "tweet", "public reply"),
        ("public", False, True, True, None, "dm", "public replies are off"),
        ("public", False, False, True, None, None, "public replies are off in settings and direct"),
        ("private", True, True, True, None, "dm", "direct message"),
        ("private", False, True, True, None, "dm", "direct message"),
        ("private", True, False, True, None, None, "cannot be sent"),
        ("public", True, True, False, None, None, "imported history"),
        ("private", True, True, True, "bot", None, "automated message: bot"),
    ],
)
def test_how_a_new_case_is_acknowledged(
    visibility, public_replies, dm_available, acknowledge, automated, route, why
):
    chosen, reason = choose_ack(
        visibility=visibility,
        public_replies=public_replies,
        dm_available=dm_available,
        acknowledge=acknowledge,
        automated=automated,
    )
    assert chosen == route
    assert why in reason


def test_the_default_public_reply_fits_a_tweet_and_carries_no_token():
    settings = TwitterSettings()
    text = ack_text(
        settings.public_ack_template,
        reference="C-123456789",
        # The longest wording: a date, in a time zone with one of the longest names.
        eta=describe_eta(
            datetime(2026, 12, 20, 9, 0, tzinfo=UTC),
            datetime(2026, 12, 30, 23, 59, tzinfo=UTC),
            "America/Argentina/ComodRivadavia",
        ),
        tag="[C-123456789 #abcdefghijkl]",
    )
    assert len(text) <= 280
    assert "C-123456789" in text
    assert "by Wednesday 30 December, 20:59 (America/Argentina/ComodRivadavia)" in text
    assert "#abcdefghijkl" not in text


@pytest.mark.parametrize(
    ("field", "template", "error"),
    [
        ("public_ack_template", "Case {reference}, dear {name}", "unknown placeholder {name}"),
        ("public_ack_template", "Case {reference} {tag}", "unknown placeholder {tag}"),
        ("public_ack_template", "We got it, reply by {eta}", "must contain {reference}"),
        ("public_ack_template", "{reference} " + "x" * 260, "too long"),
        ("dm_ack_template", "Case {reference} for {contact.email}", "unknown placeholder"),
        ("dm_ack_template", "Case {reference", "not a valid template"),
    ],
)
def test_templates_cannot_carry_anything_personal(field, template, error):
    with pytest.raises(ValidationError, match=error.replace("{", r"\{").replace("}", r"\}")):
        TwitterSettings(**{field: template})


def test_backoff_grows_with_jitter_and_is_capped():
    # The twitter sender's retry curve (the outbox's): 30 s doubling, capped at an hour, each
    # delay between half its ceiling and the ceiling.
    rng = random.Random(7)
    delays = [backoff(n, 30.0, 3600.0, rng.random) for n in (1, 2, 3, 20)]
    assert 15 <= delays[0] <= 30
    assert 30 <= delays[1] <= 60
    assert 60 <= delays[2] <= 120
    assert 1800 <= delays[3] <= 3600


def test_a_send_that_cannot_connect_is_retried_but_never_counted_as_unsure():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on that port now: the connection is refused before anything is sent.
    settings = TwitterSettings(
        enabled=True, api_base_url=f"http://127.0.0.1:{port}", user_id=ACCOUNT_ID
    )
    creds = credentials(settings, CREDENTIALS)
    assert creds is not None
    api = XApi(settings.api_base_url, creds, ACCOUNT_ID, timeout=(2.0, 2.0))
    with pytest.raises(XError) as caught:
        api.create_tweet("hello", None)
    assert caught.value.kind == "transient"


def new_case(visibility: str, **changes: object) -> AckCase:
    values: dict[str, object] = {
        "channel": "twitter",
        "reference": "C-000042",
        "token": "k3yt0kenabcd",
        "visibility": visibility,
        "handle": "1398765432109876543",
        "name": "Ann Example (@ann_exmpl)",
        "external_id": "2123706672739255506",
        "automated": None,
        "acknowledge": True,
        "received_at": datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
        "now": datetime(2026, 11, 20, 9, 0, 5, tzinfo=UTC),
        "eta_words": "within about 4 hours",
    }
    values.update(changes)
    return AckCase(**values)  # type: ignore[arg-type]


# The connector state the worker reads from the checkpoint table: no row yet, DMs readable,
# or the DM endpoint refused (403). What each must come to, by the rules above.
@pytest.mark.parametrize(
    ("visibility", "state", "mode", "why"),
    [
        ("private", {}, "dm", None),  # nothing refused DMs so far
        ("private", {"dm_available": True}, "dm", None),
        ("private", {"dm_available": False}, None, "direct messages cannot be sent"),
        ("public", {"dm_available": False}, "tweet", None),
    ],
)
def test_the_route_reads_the_dm_permission_from_the_stored_connector_state(
    visibility, state, mode, why
):
    plan = ack_route(TwitterSettings(), new_case(visibility), state)
    if mode is None:
        assert isinstance(plan, str) and why in plan
        return
    assert isinstance(plan, AckOut) and plan.payload["mode"] == mode
    assert plan.recipient == "1398765432109876543"
    assert "C-000042" in plan.body and "within about 4 hours" in plan.body
    # The token goes only into a private DM, never into a public reply.
    assert ("k3yt0kenabcd" in plan.body) == (mode == "dm")
    if mode == "tweet":
        assert plan.payload["in_reply_to_tweet_id"] == "2123706672739255506"


def test_with_public_replies_off_and_dms_refused_the_case_says_why():
    plan = ack_route(
        TwitterSettings(public_replies=False), new_case("public"), {"dm_available": False}
    )
    assert isinstance(plan, str)
    assert "public replies are off" in plan and "direct messages" in plan
