"""The channel registry (inbox/channels.py): complete, consistent, and the only list.

The expected facts below are written out by hand from what each platform and today's
behaviour are, not read from the registry, so a changed fact fails here until both agree.
The scan proves that no module of ours keeps its own list of channels beside the registry.
"""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ValidationError, create_model

from inbox import channels
from inbox.channels import (
    CHANNEL_FACTS,
    CHANNEL_NAMES,
    CONNECTOR_CHANNELS,
    IDENTITY_KIND_NAMES,
    IDENTITY_KINDS,
    MAIL_ADDRESS_CHANNELS,
    MESSAGE_ID_CHANNELS,
    SENDER_CHECKED_CHANNELS,
    fold_handle,
    raw_extension,
)
from inbox.web.api import IdentityKindName, ReplyChannel

pytest_plugins = ["tests.support.inbox_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("parity", "connectors", "normalizer", "inbox")
REGISTRY = Path("inbox/channels.py")

# channel: (identity kind, reply channel, may be public, badge colour), as shipped before the
# registry (the colours were app.css's).
EXPECTED = {
    "email": ("email", "email", False, "#e3edff"),
    "sms": ("phone", "sms", False, "#e2f6e9"),
    "voice": ("phone", "sms", False, "#f3e8ff"),
    "twitter": ("twitter", "twitter", True, "#e0f4fd"),
    "reddit": ("reddit", "reddit", True, "#ffe9df"),
    # A WhatsApp id is the phone number: one identity with SMS, replies on WhatsApp.
    "whatsapp": ("phone", "whatsapp", False, "#dcf8c6"),
    "messenger": ("messenger", "messenger", True, "#e4e6fb"),
    "instagram": ("instagram", "instagram", True, "#fde4f2"),
    # Private chats with the bot only: group messages are not taken in.
    "telegram": ("telegram", "telegram", False, "#e3f2fb"),
    # The contact form: the submission is the identity; a reply is on the status page.
    "web": ("web", "web", False, "#fff4d6"),
}
# channel: (its sender is authenticated by the mail sender check, replies thread by
# Message-ID, raw source's extension, its handles are mail addresses), as email behaved when
# each was an `if channel == "email"`: only mail has a forgeable From, a Message-ID and a
# raw source that is a message file; the others' raw sources are the platforms' JSON/forms.
EXPECTED_PIPELINE = {
    "email": (True, True, "eml", True),
    "sms": (False, False, "txt", False),
    "voice": (False, False, "txt", False),
    "twitter": (False, False, "txt", False),
    "reddit": (False, False, "txt", False),
    "whatsapp": (False, False, "txt", False),
    "messenger": (False, False, "txt", False),
    "instagram": (False, False, "txt", False),
    "telegram": (False, False, "txt", False),
    "web": (False, False, "txt", False),
}
# channel: (the platform can carry files we send, Parity's sender sends them, formatting,
# part length), as issue 22 has them: MMS, WhatsApp, Messenger, Instagram and Telegram media
# and X's DM media can carry files, Reddit and the status page cannot; every sender that can
# sends them (X and Instagram in Direct messages); only mail is rich; an SMS part is 160
# GSM-7 characters.
EXPECTED_REPLIES = {
    "email": (True, True, "markdown", 0),
    "sms": (True, True, "plain", 160),
    "voice": (True, True, "plain", 160),
    "twitter": (True, True, "plain", 0),
    "reddit": (False, False, "plain", 0),
    "whatsapp": (True, True, "plain", 0),
    "messenger": (True, True, "plain", 0),
    "instagram": (True, True, "plain", 0),
    "telegram": (True, True, "plain", 0),
    "web": (False, False, "plain", 0),
}
EXPECTED_CONNECTORS = {
    "smtp": {"email"},
    "imap": {"email"},
    "twilio": {"sms", "voice"},
    "twitter": {"twitter"},
    "reddit": {"reddit"},
    "meta": {"whatsapp", "messenger", "instagram"},
    "telegram": {"telegram"},
    "webform": {"web"},
}


# --- the registry is complete and consistent -----------------------------------------------


def test_the_channels_are_the_ones_we_serve() -> None:
    assert set(CHANNEL_NAMES) == set(EXPECTED)
    assert set(IDENTITY_KIND_NAMES) == {kind for kind, _, _, _ in EXPECTED.values()}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_channel_has_every_fact(name: str) -> None:
    facts = CHANNEL_FACTS[name]
    kind, reply, public, colour = EXPECTED[name]
    assert facts.name == name
    assert (facts.identity_kind, facts.reply_channel, facts.public, facts.colour) == (
        kind,
        reply,
        public,
        colour,
    )
    for field in fields(facts):
        value = getattr(facts, field.name)
        # public_messages is empty exactly when nothing can be public, ack is None exactly
        # when the channel's connector acknowledges (test_every_channel_is_acknowledged_...).
        if field.name not in ("public_messages", "ack"):
            assert value not in ("", None, ()), f"{name}.{field.name} is empty"
    assert bool(facts.public_messages) == facts.public
    assert set(facts.visibilities) <= {"public", "private"}
    assert "private" in facts.visibilities  # every channel can take a private message
    assert re.fullmatch(r"#[0-9a-f]{6}", facts.colour)
    assert 0 < facts.max_public_text <= facts.max_text
    assert isinstance(facts.sends_attachments, bool)


@pytest.mark.parametrize("name", sorted(EXPECTED_PIPELINE))
def test_each_channel_has_its_pipeline_facts(name: str) -> None:
    facts = CHANNEL_FACTS[name]
    checked, by_message_id, extension, mail_address = EXPECTED_PIPELINE[name]
    assert facts.authenticates_sender is checked
    assert facts.threads_by_message_id is by_message_id
    assert facts.raw_extension == extension
    assert IDENTITY_KINDS[facts.identity_kind].mail_address is mail_address
    assert raw_extension(name) == extension
    # The derived sets the use sites read agree with the table, channel by channel.
    assert (name in SENDER_CHECKED_CHANNELS) is checked
    assert (name in MESSAGE_ID_CHANNELS) is by_message_id
    assert (name in MAIL_ADDRESS_CHANNELS) is mail_address


@pytest.mark.parametrize("name", sorted(EXPECTED_REPLIES))
def test_each_channel_says_what_a_reply_may_carry(name: str) -> None:
    facts = CHANNEL_FACTS[name]
    carries, sends, formatting, segment = EXPECTED_REPLIES[name]
    assert (facts.carries_attachments, facts.sends_attachments) == (carries, sends)
    assert (facts.formatting, facts.segment_text) == (formatting, segment)
    # Parity sends files only where the platform can carry them.
    assert not facts.sends_attachments or facts.carries_attachments


def test_an_unknown_channel_has_a_plain_text_raw_source() -> None:
    assert raw_extension("carrier-pigeon") == "txt"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_channel_points_at_facts_that_exist(name: str) -> None:
    facts = CHANNEL_FACTS[name]
    assert facts.identity_kind in IDENTITY_KINDS
    reply = CHANNEL_FACTS[facts.reply_channel]
    # A reply goes out on a channel that replies on itself, to the same kind of handle.
    assert reply.replyable and reply.identity_kind == facts.identity_kind
    assert facts.replyable == (name != "voice")


@pytest.mark.parametrize("kind", sorted(IDENTITY_KINDS))
def test_channels_of_one_identity_kind_agree_where_replies_go(kind: str) -> None:
    replies = [c.reply_channel for c in CHANNEL_FACTS.values() if c.identity_kind == kind]
    # A number is answered by SMS, or by WhatsApp where the person wrote on WhatsApp: every
    # reply channel of a kind is a channel of that kind that replies on itself, and the
    # first is the default.
    assert set(channels.REPLY_CHANNELS_OF_KIND[kind]) == set(replies)
    assert channels.REPLY_CHANNEL_OF_KIND[kind] == replies[0]
    for reply in replies:
        assert CHANNEL_FACTS[reply].replyable and CHANNEL_FACTS[reply].identity_kind == kind
    assert IDENTITY_KINDS[kind].noun and IDENTITY_KINDS[kind].stored_as


@pytest.mark.parametrize("connector", sorted(EXPECTED_CONNECTORS))
def test_every_connector_brings_channels_that_exist(connector: str) -> None:
    assert set(CONNECTOR_CHANNELS[connector]) == EXPECTED_CONNECTORS[connector]
    assert set(channels.channels_of(connector)) <= set(CHANNEL_FACTS)


def test_every_channel_has_a_connector() -> None:
    assert set(CONNECTOR_CHANNELS) == set(EXPECTED_CONNECTORS)
    brought = {c for names in CONNECTOR_CHANNELS.values() for c in names}
    assert brought == set(CHANNEL_FACTS)
    assert channels.channels_of("web") == ()


@pytest.mark.parametrize(
    ("kind", "handle", "typed", "folded"),
    [
        ("email", "  Ann.Lee@Example.ORG ", False, "ann.lee@example.org"),
        ("email", "Ann.Lee@Example.ORG", True, "ann.lee@example.org"),
        ("phone", " +49 151 2345678", False, "+49 151 2345678"),  # E.164 is the parser's job
        ("phone", "+4915123456789\t", True, "+4915123456789"),
        ("twitter", " 1460323737035677698 ", False, "1460323737035677698"),
        ("twitter", "AnnLee", True, "AnnLee"),  # user ids; case is kept
        ("reddit", " Throwaway_Ann ", False, "throwaway_ann"),
        ("reddit", "u/Throwaway_Ann", True, "throwaway_ann"),
        # The prefix goes before case-folding, as inbox.identities always did it.
        ("reddit", "U/Throwaway_Ann", True, "u/throwaway_ann"),
        # Where a handle is matched, not typed, a prefix is not dropped (inbox.replies).
        ("reddit", "u/Throwaway_Ann", False, "u/throwaway_ann"),
        # Telegram user ids: digits, kept as they are.
        ("telegram", " 718293645 ", False, "718293645"),
    ],
)
def test_handles_fold_as_the_store_keeps_them(
    kind: str, handle: str, typed: bool, folded: str
) -> None:
    assert fold_handle(kind, handle, typed=typed) == folded


def test_an_unknown_identity_kind_is_refused() -> None:
    with pytest.raises(KeyError):
        fold_handle("fax", "+4930123456")


def test_the_stylesheet_has_every_badge() -> None:
    css = channels.stylesheet()
    for name, (_, _, _, colour) in EXPECTED.items():
        assert f".ch-{name} {{ background: {colour}; }}" in css


# --- the API's registry-made types behave as the Literals they replaced --------------------


def _literal_model(values: tuple[str, ...]) -> type[BaseModel]:
    kind: Any = Literal.__getitem__(values)
    model: type[BaseModel] = create_model("Body", value=(kind, ...))
    return model


def _errors(model: type[BaseModel], raw: str) -> list[tuple[Any, ...]]:
    try:
        model.model_validate_json(raw)
    except ValidationError as exc:
        return [(e["loc"], e["type"], e["msg"]) for e in exc.errors()]
    return []


@pytest.mark.parametrize(
    "raw", ['"email"', '"voice"', '"phone"', '"Email"', '""', "5", "null", "[]", '{"a": 1}']
)
@pytest.mark.parametrize(
    ("new", "values"),
    [
        (
            ReplyChannel,
            (
                "email",
                "sms",
                "twitter",
                "reddit",
                "whatsapp",
                "messenger",
                "instagram",
                "telegram",
                "web",
            ),
        ),
        (IdentityKindName, IDENTITY_KIND_NAMES),
    ],
)
def test_api_types_accept_refuse_and_describe_as_a_literal_did(
    new: Any, values: tuple[str, ...], raw: str
) -> None:
    old = _literal_model(values)
    made: type[BaseModel] = create_model("Body", value=(new, ...))
    body = f'{{"value": {raw}}}'
    assert _errors(made, body) == _errors(old, body)
    assert made.model_json_schema() == old.model_json_schema()


# --- pages take their filters and styles from the registry ---------------------------------


async def test_pages_serve_the_registry_styles_and_filters(api: Any, engine: Any) -> None:
    from tests.support.inbox_helpers import make_user

    make_user(engine, "ann")
    client, _ = await api.session("ann")
    css = await client.get("/static/channels.css")
    assert css.status == 200 and css.content_type == "text/css"
    text = await css.text()
    queue = await (await client.get("/queue")).text()
    assert '<link rel="stylesheet" href="/static/channels.css">' in queue
    for name, (_, _, _, colour) in EXPECTED.items():
        assert f".ch-{name} {{ background: {colour}; }}" in text
        assert f'<option value="{name}" >{name}</option>' in queue
    assert ".ch-" not in (ROOT / "inbox/web/static/app.css").read_text()


# --- nothing else keeps a list of channels -------------------------------------------------

# The few places that must name two channels together, each with why. Keyed by file and the
# enclosing definition (or module-level name), so a moved line does not matter; an entry that
# matches nothing fails too, so the list cannot go stale.
ALLOWED: dict[tuple[str, str], str] = {
    # [outbox.email], the SMTP relay's settings table: a documented setting name, kept as it
    # is; the relay is the one sender there is no other table for.
    ("connectors/config.py", "OutboxSettings"): "the relay's [outbox.email] table",
    # Meta's own names in its webhook bodies (its `object` and comment `field` per channel):
    # the wire protocol of the one connector that brings these channels in.
    ("connectors/meta/parse.py", "OBJECTS"): "Meta's webhook object names",
    ("connectors/meta/parse.py", "COMMENT_FIELDS"): "Meta's comment field names",
    # The contact form's own fields: the address a person typed, a claim until confirmed.
    ("connectors/webform/form.py", "Checked"): "the form's email-address field",
}


def channel_lists(source: str, names: frozenset[str]) -> list[tuple[int, str, list[str]]]:
    """(line, enclosing name, channel names) of every tuple, list, set or dict (keys and
    values) written with two or more of `names` as string constants. A `Literal[...]` of
    several values is a tuple, and `frozenset({...})` a set, so both are found."""
    found: list[tuple[int, str, list[str]]] = []

    def named(elts: list[ast.expr | None]) -> list[str]:
        return [
            e.value
            for e in elts
            if isinstance(e, ast.Constant) and isinstance(e.value, str) and e.value in names
        ]

    def visit(node: ast.AST, scope: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scope = node.name if not scope else f"{scope}.{node.name}"
        elif isinstance(node, ast.Assign | ast.AnnAssign) and not scope:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            scope = ",".join(t.id for t in targets if isinstance(t, ast.Name))
        hits: list[str] = []
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            hits = named(list(node.elts))
        elif isinstance(node, ast.Dict):
            hits = named([*node.keys, *node.values])
        if len(set(hits)) >= 2:
            found.append((getattr(node, "lineno", 0), scope, hits))
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(ast.parse(source), "")
    return found


def channel_slots(source: str, names: frozenset[str]) -> list[tuple[int, str, list[str]]]:
    """(line, class, [name]) of every field or attribute a class declares under one of
    `names`: a name annotated or assigned in its body (`sms: AckTemplate = ...`), a method or
    property of that name, or `self.<name> = ...` in one of its methods. A class with a slot
    per channel is a list of channels too: a new channel would have to edit it."""
    found: list[tuple[int, str, list[str]]] = []
    for cls in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef)):
        for statement in cls.body:
            declared: list[ast.expr] = []
            if isinstance(statement, ast.AnnAssign):
                declared = [statement.target]
            elif isinstance(statement, ast.Assign):
                declared = list(statement.targets)
            elif isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                if statement.name in names:
                    found.append((statement.lineno, cls.name, [statement.name]))
                declared = [
                    node
                    for node in ast.walk(statement)
                    if isinstance(node, ast.Attribute)
                    and isinstance(node.ctx, ast.Store)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "self"
                ]
            for target in declared:
                name = target.id if isinstance(target, ast.Name) else None
                if isinstance(target, ast.Attribute):
                    name = target.attr
                if name in names:
                    found.append((target.lineno, cls.name, [name]))
    return found


SCAN_NAMES = frozenset(CHANNEL_NAMES) | frozenset(IDENTITY_KIND_NAMES)
SLOT_NAMES = frozenset(CHANNEL_NAMES)


def findings(source: str) -> list[tuple[int, str, list[str]]]:
    return channel_lists(source, SCAN_NAMES) + channel_slots(source, SLOT_NAMES)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ('CHANNELS = ("email", "sms", "voice", "twitter", "reddit")', True),
        ('KINDS = ["email", "phone"]', True),
        ('Channel = Literal["email", "sms"]', True),
        ('PUBLIC = frozenset({"twitter", "reddit"})', True),
        ('KIND = {"sms": "phone", "voice": "phone"}', True),
        ('KIND = {"a": "email", "b": "sms"}', True),
        ('def f(c):\n    return c in ("sms", "voice")', True),
        ('def f(c):\n    return c == "email"', False),
        ('NAMES = ("smtp", "imap", "web")', False),
        ('ONE = ("email", "email", "other")', False),
        ('STATUSES = ("open", "resolved")', False),
        # A class with a slot per channel, as AckSettings had one template field each.
        ('class AckSettings(Strict):\n    sms: AckTemplate = AckTemplate(body="{tag}")', True),
        ("class Relays:\n    email = None", True),
        ("class Sender:\n    def __init__(self) -> None:\n        self.voice = True", True),
        ("class Views:\n    @property\n    def whatsapp(self) -> str:\n        return ''", True),
        ("class Spec:\n    async def instagram(self) -> None: ...", True),
        # Ordinary code: a value naming one channel, a connector's or identity kind's name,
        # reading an attribute, another object's attribute, a module-level name.
        ('class Row:\n    channel: str = "sms"', False),
        ("class ConnectorsSettings:\n    smtp: SmtpSettings = SmtpSettings()", False),
        ('class Identity:\n    phone: str = ""', False),
        ("def relay(settings):\n    return settings.outbox.email", False),
        ("class Copy:\n    def to(self, other) -> None:\n        other.email = 1", False),
        ("sms = 1", False),
        ("class Case:\n    def reply(self, sms: str) -> None:\n        self.text = sms", False),
    ],
)
def test_the_scan_finds_a_list_of_channels(source: str, flagged: bool) -> None:
    assert bool(findings(source)) is flagged


def modules() -> list[Path]:
    return sorted(
        path.relative_to(ROOT)
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.relative_to(ROOT) != REGISTRY
    )


# The other registry: connectors/registry.py names each connector's [connectors.<name>]
# table, and a connector may be named as its channel is (twitter, reddit).
REGISTRIES = (REGISTRY, Path("connectors/registry.py"))
# Email's shared package beside its two connectors' (the relay, connectors/mail/__init__.py).
SHARED_PACKAGES = {"email": ("connectors/mail",)}


def own_packages(channel: str) -> tuple[str, ...]:
    """The packages that may name `channel`: its connectors' and the one they share."""
    own = tuple(f"connectors/{c}" for c, names in CONNECTOR_CHANNELS.items() if channel in names)
    return own + SHARED_PACKAGES.get(channel, ())


def outside_own(path: Path, channel: str) -> bool:
    return path not in REGISTRIES and not any(path.is_relative_to(p) for p in own_packages(channel))


def test_no_module_keeps_its_own_list_of_channels() -> None:
    assert len(modules()) > 50  # the scan sees the code, not an empty directory
    offending: list[str] = []
    used: set[tuple[str, str]] = set()
    for path in modules():
        source = (ROOT / path).read_text()
        slots = [
            (line, scope, hits)
            for line, scope, hits in channel_slots(source, SLOT_NAMES)
            if outside_own(path, hits[0])
        ]
        for line, scope, hits in channel_lists(source, SCAN_NAMES) + slots:
            key = (path.as_posix(), scope)
            if key in ALLOWED:
                used.add(key)
            else:
                offending.append(f"{path}:{line} ({scope or 'module'}): {hits}")
    assert not offending, "lists of channels outside inbox/channels.py:\n" + "\n".join(offending)
    assert used == set(ALLOWED), f"allow-list entries that match nothing: {set(ALLOWED) - used}"


# --- each channel is named only in its own packages and the registries -----------------------

# A channel's name used for something else in one file: not the channel.
HOMONYMS: dict[tuple[str, str], str] = {
    ("connectors/meta/parse.py", "voice"): "WhatsApp's `voice` flag on an audio message",
    ("connectors/telegram/parse.py", "voice"): "the Bot API's `voice` message (a voice note)",
    ("connectors/webform/form.py", "email"): "the contact form's email-address field",
    ("connectors/webform/web.py", "email"): "the contact form's email-address field",
    ("connectors/config.py", "web"): "the connector that serves the agents' inbox",
}


def files_naming(channel: str) -> set[str]:
    """The files of our code outside `channel`'s own packages and the registries that name
    it as a string, the README's "Measured" figure (settings.toml and the docs, which name
    every channel by design, are not code)."""
    found: set[str] = set()
    for path in modules():
        if not outside_own(path, channel) or (path.as_posix(), channel) in HOMONYMS:
            continue
        tree = ast.parse((ROOT / path).read_text())
        if any(isinstance(n, ast.Constant) and n.value == channel for n in ast.walk(tree)):
            found.add(path.as_posix())
    return found


def test_the_count_finds_a_file_that_names_a_channel() -> None:
    # The scan would see "email" where it was before the registry told each file its name.
    source = 'InboundMessage(channel="email", sender=Sender(kind="email"))'
    assert any(
        isinstance(n, ast.Constant) and n.value == "email" for n in ast.walk(ast.parse(source))
    )
    assert outside_own(Path("normalizer/mail.py"), "email")
    assert not outside_own(Path("connectors/mail/relay.py"), "email")
    assert not outside_own(Path("connectors/twilio/parse.py"), "voice")
    assert outside_own(Path("connectors/twilio/parse.py"), "email")
    assert not outside_own(Path("connectors/registry.py"), "twitter")


@pytest.mark.parametrize("channel", CHANNEL_NAMES)
def test_no_file_outside_its_packages_names_a_channel(channel: str) -> None:
    assert files_naming(channel) == set()
    assert {name for _, name in HOMONYMS} <= set(CHANNEL_NAMES)


def test_the_mail_and_relay_channel_come_from_the_registry() -> None:
    from connectors.registry import RELAY_CHANNEL

    # The MIME parser's and the mbox import's channel, and the one the SMTP relay sends:
    # written out here, read from the facts there.
    assert channels.MAIL_CHANNEL == "email"
    assert RELAY_CHANNEL == "email"
