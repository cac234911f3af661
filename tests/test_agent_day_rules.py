"""Issue 22's pure rules, by tables: tag and field normalization, the rules that tag, search
filters from a query string, bulk planning, snooze times and whether a snoozed case is back."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest

from inbox.bulk import MAX_CASES, plan
from inbox.casework import Invalid, NotFound
from inbox.labels import BadTag, labelling_rules, normalize_field, normalize_tag, normalize_tags
from inbox.search import SearchFilter, filter_from_query
from inbox.snooze import MAX_SNOOZE, BadSnooze, SnoozeState, check_until, is_awake
from inbox.web.pages import match_line, snoozed_label

NOW = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)

TAGS = [
    ("Refund", "refund"),
    ("VIP customer", "vip-customer"),
    ("  vip--customer  ", "vip-customer"),
    ("vip_customer", "vip-customer"),
    ("Ｆｕｌｌ width", "full-width"),  # NFKC folds full-width letters
    ("Rückerstattung", "rückerstattung"),
    ("#billing!", "billing"),
    ("tier 2 / EU", "tier-2-eu"),
]


@pytest.mark.parametrize(("raw", "tag"), TAGS)
def test_tags_are_normalized_as_agents_would_read_them(raw: str, tag: str) -> None:
    assert normalize_tag(raw) == tag


@pytest.mark.parametrize("raw", ["", "   ", "!!!", "--", "x" * 65])
def test_no_tag_is_made_of_nothing_or_of_too_much(raw: str) -> None:
    with pytest.raises(BadTag):
        normalize_tag(raw)


def test_duplicates_go_and_the_first_order_stays() -> None:
    assert normalize_tags(["VIP", "refund", "vip", "Refund "]) == ["vip", "refund"]


FIELDS = [
    (("Order", " 4471 "), ("order", "4471")),
    (("plan_tier", "Gold"), ("plan_tier", "Gold")),
    (("order", ""), ("order", None)),  # empty clears
    (("order", None), ("order", None)),
    (("topic", "ＡＢＣ"), ("topic", "ABC")),
]


@pytest.mark.parametrize(("given", "stored"), FIELDS)
def test_fields_are_trimmed_and_names_lowered(
    given: tuple[str, str | None], stored: tuple[str, str | None]
) -> None:
    assert normalize_field(*given) == stored


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("1order", "x"),
        ("order id", "x"),
        ("", "x"),
        ("x" * 65, "x"),
        ("order", "line one\nline two"),
        ("order", "right\u202eto left"),  # a bidi override the agent would not see
        ("order", "x" * 513),
    ],
)
def test_bad_fields_are_refused_not_cleaned(name: str, value: str) -> None:
    with pytest.raises(BadTag):
        normalize_field(name, value)


def rule(name: str, pattern: str, tags: list[str], fields: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(name=name, pattern=pattern, tags=tags, fields=fields)


RULES = [
    rule("billing", r"(?i)\b(invoice|refund)\b", ["billing"], {"topic": "billing"}),
    rule("sla only", r"(?i)\burgent\b", [], {}),
    rule("security", r"(?i)\bhacked\b", ["security"], {}),
]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Please send the invoice", ["billing"]),
        ("URGENT: refund, I was hacked", ["billing", "security"]),
        ("urgent", []),  # a rule that sets no tags or fields never labels
        ("invoiced", []),  # whole words only, as the pattern says
    ],
)
def test_rules_that_label_are_those_that_match_and_set_something(
    text: str, names: list[str]
) -> None:
    assert [r.name for r in labelling_rules(RULES, text)] == names


FILTERS = [
    ({}, SearchFilter()),
    ({"status": "open,pending_customer"}, SearchFilter(statuses=("open", "pending_customer"))),
    ({"tag": "VIP Customer"}, SearchFilter(tag="vip-customer")),
    ({"channel": "sms", "assignee": "me"}, SearchFilter(channel="sms", assignee="me")),
    ({"team": "tier-2"}, SearchFilter(team="tier-2")),
    (
        {"since": "2026-12-01", "until": "2026-12-07"},
        SearchFilter(since=date(2026, 12, 1), until=date(2026, 12, 7)),
    ),
    ({"status": "", "tag": " ", "since": ""}, SearchFilter()),
]


@pytest.mark.parametrize(("params", "expected"), FILTERS)
def test_search_filters_from_a_query_string(params: dict[str, str], expected: SearchFilter) -> None:
    found = filter_from_query(params)
    assert found == expected
    assert found.any() == (expected != SearchFilter())


@pytest.mark.parametrize("params", [{"since": "last week"}, {"until": "2026-13-01"}, {"tag": "!!"}])
def test_bad_search_filters_are_refused(params: dict[str, str]) -> None:
    with pytest.raises(Invalid):
        filter_from_query(params)


def test_bulk_plans_each_case_once_in_the_order_selected() -> None:
    assert plan(("c-000002", "C-000001", " C-000002 ")) == ["C-000002", "C-000001"]
    with pytest.raises(Invalid):
        plan(())
    with pytest.raises(Invalid):
        plan(tuple(f"C-{i:06d}" for i in range(MAX_CASES + 1)))
    with pytest.raises(NotFound):
        plan(("not a case",))


@pytest.mark.parametrize(
    ("until", "ok"),
    [
        (NOW + timedelta(minutes=1), True),
        (NOW + MAX_SNOOZE, True),
        (NOW, False),
        (NOW - timedelta(hours=1), False),
        (NOW + MAX_SNOOZE + timedelta(seconds=1), False),
        (datetime(2026, 12, 8, 9, 0), False),  # no zone: whose nine o'clock?
    ],
)
def test_snooze_times(until: datetime, ok: bool) -> None:
    if ok:
        assert check_until(until, NOW) == until
    else:
        with pytest.raises(BadSnooze):
            check_until(until, NOW)
    assert check_until(None, NOW) is None


AWAKE = [
    ("not snoozed", SnoozeState(None, None), None, True),
    ("until the customer answers, no answer", SnoozeState(None, 10), 10, False),
    ("until the customer answers, answered", SnoozeState(None, 10), 11, True),
    ("until a later time", SnoozeState(NOW + timedelta(hours=1), 10), 10, False),
    ("until a time that passed", SnoozeState(NOW - timedelta(seconds=1), 10), 10, True),
    ("until the very moment", SnoozeState(NOW, 10), 10, True),
    ("a timed snooze the customer answered", SnoozeState(NOW + timedelta(days=1), 10), 12, True),
    ("snoozed on a case with no inbound message", SnoozeState(None, 0), None, False),
]


@pytest.mark.parametrize(("name", "state", "newest", "awake"), AWAKE, ids=[a[0] for a in AWAKE])
def test_when_a_snoozed_case_is_back(
    name: str, state: SnoozeState, newest: int | None, awake: bool
) -> None:
    assert is_awake(state, newest, NOW) is awake


def test_row_labels_for_snooze_and_matches() -> None:
    assert snoozed_label(None) is None
    assert snoozed_label({"until": None, "until_reply": True}) == ""
    assert snoozed_label({"until": "2026-12-08T09:00:00Z"}) == "2026-12-08T09:00:00Z"
    assert match_line([]) == ""
    assert match_line([{"kind": "handle", "channel": "email", "handle": "a@b.c"}]) == "email: a@b.c"
    assert (
        match_line(
            [
                {"kind": "handle", "channel": "email", "handle": "a@b.c"},
                {"kind": "message", "message_id": 1, "snippet": "…my printer jams…"},
            ]
        )
        == "…my printer jams…"
    )
    assert match_line([{"kind": "reference", "reference": "C-000001"}]) == "C-000001"
