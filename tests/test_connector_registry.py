"""The connector registry (connectors/registry.py): complete, consistent, and the only list.

Every connector declares every part of the contract (connectors/contract.py); the registry
agrees with the channel registry and with the settings' sections; and the composition root
(parity/) never compares a name with a connector's, so a new connector is one declaration.
The expected values below are written out by hand from today's settings and behaviour.
"""

from __future__ import annotations

import ast
import pickle
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from connectors.config import CONNECTOR_NAMES
from connectors.contract import Endpoint, url_endpoint
from connectors.registry import (
    CONNECTORS,
    HTTP_LISTENER,
    NAMES,
    REGISTRY,
    ConnectorsSettings,
    ack_route_table,
    availability,
    parser_table,
)
from connectors.twitter.settings import TwitterSettings
from inbox.channels import CHANNEL_FACTS, CONNECTOR_CHANNELS
from normalizer.ack_plan import AckCase, AckOut
from normalizer.parse import parse_mail

ROOT = Path(__file__).resolve().parent.parent

ACCOUNT = {"name": "support", "host": "mail.example.org", "username": "u", "password_env": "PW_A"}
SECOND = {"name": "sales", "host": "imap.example.net", "port": 1993, "username": "s"}

# connector: (channels, a section to declare on, its endpoints there, its sender's key or
# None, serves HTTP, its part of the start-up line there or None)
EXPECTED: dict[
    str, tuple[set[str], dict[str, Any], list[Endpoint], str | None, bool, str | None]
] = {
    "smtp": (
        {"email"},
        {"host": "192.0.2.10", "port": 25, "support_domains": ["help.example.com"]},
        [],
        "email-relay",
        False,
        "SMTP on 192.0.2.10:25 for help.example.com",
    ),
    "imap": (
        {"email"},
        {"accounts": [ACCOUNT, {**SECOND, "password_env": "PW_B"}]},
        [
            Endpoint("IMAP account support", "mail.example.org", 993),
            Endpoint("IMAP account sales", "imap.example.net", 1993),
        ],
        "email-relay",
        False,
        None,
    ),
    "twilio": (
        {"sms", "voice"},
        {"api_base_url": "http://127.0.0.1:8099"},
        [Endpoint("Twilio API", "127.0.0.1", 8099)],
        "twilio",
        True,
        None,
    ),
    "twitter": (
        {"twitter"},
        {},
        [Endpoint("X API", "api.twitter.com", 443)],
        None,
        False,
        None,
    ),
    "reddit": (
        {"reddit"},
        {"oauth_url": "https://oauth.reddit.example:8443"},
        [Endpoint("Reddit API", "oauth.reddit.example", 8443)],
        None,
        False,
        None,
    ),
    "meta": (
        {"whatsapp", "messenger", "instagram"},
        {"graph_base_url": "http://127.0.0.1:8098"},
        [Endpoint("Graph API", "127.0.0.1", 8098)],
        "meta",
        True,
        None,
    ),
    "telegram": (
        {"telegram"},
        {"api_base_url": "http://127.0.0.1:8097"},
        [Endpoint("Bot API", "127.0.0.1", 8097)],
        "telegram",
        True,
        None,
    ),
    "webform": (
        {"web"},
        {"public_url": "https://help.example.com/"},
        [],
        "webform",
        True,
        "contact form at https://help.example.com/contact",
    ),
    "web": (set(), {"host": "::", "port": 9000}, [], None, True, "web on http://:::9000/"),
}


def section_of(name: str, values: dict[str, Any]) -> Any:
    return getattr(ConnectorsSettings.model_validate({name: values}), name)


def env_names(model: BaseModel) -> Iterator[str]:
    """Every value of a field named `*_env`, nested models and lists of them included: what
    the settings say holds a secret, read from the model, not from the declaration."""
    for key, value in model:
        if key.endswith("_env") and isinstance(value, str):
            yield value
        elif isinstance(value, BaseModel):
            yield from env_names(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, BaseModel):
                    yield from env_names(item)


# --- the registry agrees with the channel registry and the settings -----------------------


def test_every_connector_has_a_settings_section_and_the_same_order() -> None:
    assert NAMES == CONNECTOR_NAMES == tuple(spec.name for spec in REGISTRY)
    assert set(NAMES) == set(ConnectorsSettings.model_fields) == set(EXPECTED)


def test_every_connector_brings_channels_that_exist_and_every_channel_has_one() -> None:
    brought: set[str] = set()
    for spec in REGISTRY:
        assert set(spec.channels) <= set(CHANNEL_FACTS), spec.name
        assert set(spec.channels) == set(CONNECTOR_CHANNELS.get(spec.name, ()))
        brought |= set(spec.channels)
    assert brought == set(CHANNEL_FACTS)
    assert set(CONNECTOR_CHANNELS) <= set(CONNECTORS)
    # The HTTP listener reports under the web inbox's name, as it always has.
    assert HTTP_LISTENER == "web"


# --- the parsers: declared by the connectors, handed to the normalizer as one table -------

# Where each channel's parser lives, written out: email's is the normalizer's mail pipeline
# (shared by SMTP and IMAP), every other one is in its connector's package.
PARSER_MODULES = {
    "email": "normalizer.parse",
    "sms": "connectors.twilio.parse",
    "voice": "connectors.twilio.parse",
    "twitter": "connectors.twitter.parse",
    "reddit": "connectors.reddit.parse",
    "whatsapp": "connectors.meta.parse",
    "messenger": "connectors.meta.parse",
    "instagram": "connectors.meta.parse",
    "telegram": "connectors.telegram.parse",
    "web": "connectors.webform.parse",
}


def test_every_channel_has_one_parser_declared_by_its_connectors() -> None:
    table = parser_table()
    assert set(table) == set(CHANNEL_FACTS) == set(PARSER_MODULES)
    for channel, parser in table.items():
        assert parser.__module__ == PARSER_MODULES[channel], channel
    for spec in REGISTRY:
        # A connector names the parsers of exactly the channels it brings in.
        assert set(spec.parsers) == set(spec.channels), spec.name
    assert table["email"] is parse_mail


# Channels whose acknowledgement route their connector declares (its templates and live
# state), and the connector state row the route reads; every other channel is acknowledged
# from [acknowledgements]. Written out, not derived, so a connector that drops or gains a
# route fails here.
ACK_ROUTES = {
    "twitter": ("twitter", "ack_route"),
    "reddit": ("reddit", "ack_route"),
    # The web form's acknowledgement is its answer page: it needs no connector state.
    "web": None,
}


def test_the_ack_route_table_comes_from_the_connectors_and_each_reads_its_own_state() -> None:
    table = ack_route_table(ConnectorsSettings())
    assert {c: r.state for c, r in table.items()} == ACK_ROUTES
    for spec in REGISTRY:
        routes = spec.ack_routes(spec.section(ConnectorsSettings()))
        # A connector routes only channels it brings in, and reads only its own state.
        assert set(routes) <= set(spec.channels), spec.name
        assert all(r.state is None or r.state[0] == spec.name for r in routes.values())


def test_the_ack_route_table_follows_the_connector_settings() -> None:
    """Built from [connectors], so a route uses the templates the operator wrote."""
    table = ack_route_table(
        ConnectorsSettings(
            twitter=TwitterSettings(public_ack_template="Logged as {reference}, {eta}.")
        )
    )
    case = AckCase(
        channel="twitter",
        reference="C-000007",
        token="t0ken0000000",
        visibility="public",
        handle="42",
        name="",
        external_id="77",
        automated=None,
        acknowledge=True,
        received_at=datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
        now=datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
        eta_words="within about 4 hours",
    )
    plan = table["twitter"].decide(case, {})
    assert isinstance(plan, AckOut)
    assert plan.body == "Logged as C-000007, within about 4 hours."


def test_the_parser_table_pickles_by_reference() -> None:
    """The table travels to the parse children by pickle: each parser must be a
    module-level function the child can import by name, never a lambda or a closure."""
    table = parser_table()
    assert pickle.loads(pickle.dumps(table)) == table  # noqa: S301 - our own bytes


# --- every connector declares every part of the contract ----------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_connector_declares_every_part(name: str) -> None:
    channels, values, endpoints, sender, http, describe = EXPECTED[name]
    spec = CONNECTORS[name]
    section = section_of(name, values)
    assert spec.name == name and set(spec.channels) == channels
    # Its settings model is the one its [connectors.<name>] section validates with.
    assert spec.settings_model is type(getattr(ConnectorsSettings(), name))
    assert spec.section(ConnectorsSettings.model_validate({name: values})) == section
    # Its secrets are exactly the variables its settings name, in the settings' order.
    assert list(spec.secrets(section)) == list(dict.fromkeys(env_names(section)))
    assert spec.endpoints(section) == endpoints
    assert (spec.sender.key if spec.sender else None) == sender
    assert spec.serves_http is http
    assert (spec.describe(section) if spec.describe else None) == describe
    assert callable(spec.build) and callable(spec.availability)
    # A channel connector has a way out for its channels, or says in the table why not.
    if spec.channels and sender is None:
        assert name in {"twitter", "reddit"}  # they deliver from their own loop (for now)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_connector_switched_off_is_disabled_whatever_it_needs(name: str) -> None:
    settings = ConnectorsSettings.model_validate({name: {"enabled": False}})
    assert availability(settings, name, {}) == (False, "disabled in settings")


@pytest.mark.parametrize(
    ("name", "values", "environ", "reason"),
    [
        ("smtp", {}, {}, None),
        ("web", {}, {}, None),
        ("imap", {"enabled": True}, {}, "no accounts"),
        ("imap", {"enabled": True, "accounts": [ACCOUNT]}, {}, "PW_A (account support)"),
        ("imap", {"enabled": True, "accounts": [ACCOUNT]}, {"PW_A": "x"}, None),
        ("twilio", {"enabled": True}, {}, "connectors.twilio.public_url"),
        (
            "twilio",
            {"enabled": True, "public_url": "https://x.example"},
            {"TWILIO_ACCOUNT_SID": "AC1"},
            "missing environment variable TWILIO_AUTH_TOKEN",
        ),
        ("twitter", {"enabled": True}, {}, "user_id is empty"),
        ("reddit", {"enabled": True}, {"REDDIT_CLIENT_ID": "id"}, "REDDIT_CLIENT_SECRET"),
        ("meta", {"enabled": True}, {}, "connectors.meta.whatsapp_phone_number_id"),
        (
            "meta",
            {"enabled": True, "whatsapp_phone_number_id": "1065"},
            {"META_VERIFY_TOKEN": "v", "META_APP_SECRET": "s"},
            "missing environment variable META_WHATSAPP_TOKEN",
        ),
        (
            "meta",
            {"enabled": True, "page_id": "1098"},
            {"META_VERIFY_TOKEN": "v", "META_APP_SECRET": "s", "META_WHATSAPP_TOKEN": "w"},
            "missing environment variable META_PAGE_TOKEN",
        ),
        (
            "meta",
            {"enabled": True, "page_id": "1098"},
            {"META_VERIFY_TOKEN": "v", "META_APP_SECRET": "s", "META_PAGE_TOKEN": "p"},
            None,
        ),
        ("telegram", {"enabled": True}, {}, "missing environment variable TELEGRAM_BOT_TOKEN"),
        ("telegram", {"enabled": True}, {"TELEGRAM_BOT_TOKEN": "1:x"}, None),
        (
            "telegram",
            {"enabled": True, "mode": "webhook"},
            {"TELEGRAM_BOT_TOKEN": "1:x"},
            "missing environment variable TELEGRAM_WEBHOOK_SECRET",
        ),
        (
            "telegram",
            {"enabled": True, "mode": "webhook"},
            {"TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_WEBHOOK_SECRET": "no spaces allowed"},
            "TELEGRAM_WEBHOOK_SECRET must be 1-256 characters",
        ),
        (
            "telegram",
            {"enabled": True, "mode": "webhook"},
            {"TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_WEBHOOK_SECRET": "s3cret_-X"},
            None,
        ),
        ("webform", {"enabled": True}, {}, "connectors.webform.public_url"),
        (
            "webform",
            {"enabled": True, "public_url": "https://help.example.com"},
            {},
            "missing environment variable PARITY_WEBFORM_SECRET",
        ),
        (
            "webform",
            {"enabled": True, "public_url": "https://help.example.com"},
            {"PARITY_WEBFORM_SECRET": "s"},
            None,
        ),
    ],
)
def test_availability_says_what_is_missing(
    name: str, values: dict[str, Any], environ: dict[str, str], reason: str | None
) -> None:
    ok, why = availability(ConnectorsSettings.model_validate({name: values}), name, environ)
    if reason is None:
        assert (ok, why) == (True, None)
    else:
        assert not ok and why is not None and reason in why, why


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.twitter.com", ("api.twitter.com", 443)),
        ("http://127.0.0.1:8080/base", ("127.0.0.1", 8080)),
        ("http://fake.local", ("fake.local", 80)),
        ("https://[::1]:9443", ("::1", 9443)),
    ],
)
def test_an_endpoint_is_the_url_host_and_port(url: str, expected: tuple[str, int]) -> None:
    assert url_endpoint("API", url) == Endpoint("API", *expected)


# --- parity/ never names a connector in a comparison ---------------------------------------


def connector_comparisons(source: str, names: frozenset[str]) -> list[tuple[int, str]]:
    """(line, name) of every comparison (==, !=, in, not in) with a connector's name as a
    string constant on either side, alone or in a tuple, list or set."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        if not all(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops):
            continue
        for side in [node.left, *node.comparators]:
            elts = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
            found += [
                (node.lineno, e.value)
                for e in elts
                if isinstance(e, ast.Constant) and isinstance(e.value, str) and e.value in names
            ]
    return found


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ('if name == "imap":\n    pass', True),
        ('if "twilio" != name:\n    pass', True),
        ('ok = name in ("web", "twilio")', True),
        ('ok = "smtp" in supervised', True),
        ('ok = name not in ["reddit"]', True),
        ('ok = channel == "email"', False),  # a channel, not a connector
        ('x = settings["smtp"]', False),
        ('ok = name is "twitter"', False),
    ],
)
def test_the_scan_finds_a_comparison_with_a_connector(source: str, flagged: bool) -> None:
    assert bool(connector_comparisons(source, frozenset(NAMES))) is flagged


def test_parity_never_compares_a_name_with_a_connector() -> None:
    files = sorted((ROOT / "parity").rglob("*.py"))
    assert len(files) >= 5  # the scan sees the code, not an empty directory
    offending = [
        f"{path.relative_to(ROOT)}:{line}: {name!r}"
        for path in files
        for line, name in connector_comparisons(path.read_text(), frozenset(NAMES))
    ]
    assert not offending, "connector names compared in parity/:\n" + "\n".join(offending)
