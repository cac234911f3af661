"""The channel registry: the pure facts of every channel and identity kind, in one place.

Everything above derives from these tables: the normalizer's channel list, reply routing,
the API's allowed values, the CLI's choices, the page filters and badge colours. A new
channel is one more entry here (and its connector); nothing else keeps a list of channels,
and tests/test_channel_registry.py fails on any module that does.

This module is on the lowest layer and imports nothing of ours: it is data, not behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Visibility = Literal["public", "private"]
# How a satisfaction survey is asked on a channel (inbox/csat.py): a link to the one-click
# rating page where links work, a bare 1-5 reply where they are clumsy (a text message), or
# not at all. It is always asked privately: a survey is never a public post.
SurveyMode = Literal["link", "reply", "none"]


@dataclass(frozen=True)
class IdentityKind:
    """What a sender's handle is, and how one is folded so that the same person matches."""

    name: str
    # What one handle of this kind is called in a sentence ("to the same number").
    noun: str
    # The form the normalizer stores, in words (for the docs and the reader).
    stored_as: str
    # Handles compare case-insensitively: they are stored lower-cased, and so is a typed one.
    case_insensitive: bool
    # A prefix an agent may type before a handle ("u/alice"), dropped where a handle is typed.
    typed_prefix: str = ""
    # Handles are mail addresses (local@domain): an acknowledgement's rate limit folds the
    # provider's spellings of one mailbox (plus tags, Gmail's dots) and also counts per
    # domain, and a handle must have the address's syntax before it goes into a header.
    mail_address: bool = False


@dataclass(frozen=True)
class ReplyWindow:
    """How long after a person's last message the platform lets us write to them privately.

    `free_hours` 0: no window. Within it, free text; then, for `tagged_days` days from their
    message, a reply tagged as a person's answer (Messenger's HUMAN_AGENT); after that
    `after`: an approved template, or nothing (`refuse`), and `outside` says so to the agent.
    """

    free_hours: int = 0
    tagged_days: int = 0
    after: Literal["none", "template", "refuse"] = "none"
    outside: str = "no window: a reply may go at any time"


@dataclass(frozen=True)
class AckText:
    """A channel's default acknowledgement: what `[acknowledgements.<channel>]` starts from.

    A table the operator writes is laid over it key by key, and the whole is validated as a
    template (normalizer/acks.py: the placeholders, the case named, a mail subject's {tag}).
    """

    body: str
    # How to follow up on this channel, for {follow_up}; may itself use placeholders.
    follow_up: str = ""
    # Only a channel whose messages have a subject (threads_by_message_id) sends one.
    subject: str = ""


@dataclass(frozen=True)
class ChannelFacts:
    """One channel: where its messages come from, how they are answered, how it is shown."""

    name: str
    # The identity kind its senders' handles belong to: sms and voice share the number.
    identity_kind: str
    # The channel an agent's reply to a message of this one goes out on.
    reply_channel: str
    # The visibilities its messages can have; "public" means everyone may read them.
    visibilities: tuple[Visibility, ...]
    # Which of its messages are public, in words ("" when none can be).
    public_messages: str
    # What an agent's reply on this channel answers, in words.
    replies_to: str
    # The longest outbound text the platform takes, in characters (a private message).
    max_text: int
    # The longest text of a public post (the same as max_text where nothing is public).
    max_public_text: int
    # Whether Parity's sender for this channel sends an agent's attachments (email's does).
    sends_attachments: bool
    # How pages name the channel, and its badge's background colour.
    label: str
    colour: str
    # The platform's reply window (Meta's); most channels have none.
    reply_window: ReplyWindow = ReplyWindow()
    # Its sender is only what the message claims (a forgeable From): the sender check of
    # normalizer/mailauth.py (SPF, DKIM, DMARC, ARC) decides whether the sender is believed.
    # Elsewhere the platform vouches for the sender and the connector checks the platform.
    authenticates_sender: bool = False
    # Messages carry a Message-ID: a reply threads by In-Reply-To and References and has a
    # subject; elsewhere it threads by the platform's conversation.
    threads_by_message_id: bool = False
    # The file extension of a message's raw source when an agent downloads it.
    raw_extension: str = "txt"
    # The platform can carry files in a message we send (MMS, WhatsApp media, a Telegram
    # document). Where it can and our sender does not yet, a reply with files is refused
    # with that reason; where it cannot, with this one.
    carries_attachments: bool = False
    # How an agent's reply text is sent: "markdown" becomes HTML with a plain-text
    # alternative (rich mail); "plain" is sent as typed.
    formatting: Literal["markdown", "plain"] = "plain"
    # The length of one part, where the platform splits a long text into parts that are
    # each billed and may arrive out of order (an SMS segment: 160 GSM-7 characters).
    # 0: never split.
    segment_text: int = 0
    # Its default acknowledgement, planned by the worker from [acknowledgements.<name>]. None
    # where the channel's connector declares an ack route instead and keeps its templates in
    # its own settings (Twitter and Reddit choose between a public reply and a private one).
    ack: AckText | None = None
    # How the satisfaction survey is asked after the case is resolved (SurveyMode above). A
    # channel with public messages asks only in private (a DM), so only where it has DMs.
    survey: SurveyMode = "none"

    @property
    def public(self) -> bool:
        """Some of its messages are public: a reply there may be read by everyone."""
        return "public" in self.visibilities

    @property
    def replyable(self) -> bool:
        """An agent may name this channel for a reply (voice is answered by sms instead)."""
        return self.reply_channel == self.name


IDENTITY_KINDS: Mapping[str, IdentityKind] = MappingProxyType(
    {
        k.name: k
        for k in (
            IdentityKind(
                "email",
                "address",
                "the address, lower-cased",
                case_insensitive=True,
                mail_address=True,
            ),
            IdentityKind(
                "phone",
                "number",
                "the E.164 number (+ and digits), as the Twilio parser makes it",
                case_insensitive=False,
            ),
            IdentityKind(
                "twitter",
                "account",
                "the numeric user id (a screen name can change)",
                case_insensitive=False,
            ),
            IdentityKind(
                "reddit",
                "account",
                "the username, lower-cased, without u/",
                case_insensitive=True,
                typed_prefix="u/",
            ),
            # Meta gives each person an id scoped to our page or Instagram account, not a
            # global one: the same person on Messenger and on Instagram is two identities.
            IdentityKind(
                "messenger",
                "account",
                "the page-scoped id (PSID) Meta gives the person for our page",
                case_insensitive=False,
            ),
            IdentityKind(
                "instagram",
                "account",
                "the Instagram-scoped id (IGSID) Meta gives the person for our account",
                case_insensitive=False,
            ),
            # Telegram's user id is a number for life; the username and the name can change
            # (or be absent), so they are facts of the identity, never the identity.
            IdentityKind(
                "telegram",
                "account",
                "the numeric Telegram user id (a username can change or be absent)",
                case_insensitive=False,
            ),
            # A person who filled in the contact form is only what they typed: the address or
            # number they gave is a claim until they confirm it. Until then they are the
            # holder of one form submission (its random id), never merged with anyone.
            IdentityKind(
                "web",
                "form",
                "the random id of the form submission (the address or number given is a claim)",
                case_insensitive=False,
            ),
        )
    }
)

CHANNEL_FACTS: Mapping[str, ChannelFacts] = MappingProxyType(
    {
        c.name: c
        for c in (
            ChannelFacts(
                "email",
                identity_kind="email",
                reply_channel="email",
                visibilities=("private",),
                public_messages="",
                replies_to="the message, threaded by In-Reply-To and the case tag",
                # The inbox's own bound on a reply's text (casework.MAX_TEXT).
                max_text=100_000,
                max_public_text=100_000,
                sends_attachments=True,
                carries_attachments=True,
                formatting="markdown",
                survey="link",
                label="email",
                colour="#e3edff",
                authenticates_sender=True,
                threads_by_message_id=True,
                raw_extension="eml",
                ack=AckText(
                    subject="{tag} We have your message",
                    body=(
                        "Hello {name},\n\n"
                        "we have your message and opened case {reference} for it.\n"
                        "A person will answer you {eta}.\n\n"
                        "{follow_up}\n"
                        "{other_channels}\n\n"
                        "This is an automatic acknowledgement; please don't reply just to say "
                        "thanks."
                    ),
                    follow_up=(
                        "To add anything, reply to this email and keep {tag} in the subject "
                        "line: it tells us the reply belongs to your case."
                    ),
                ),
            ),
            ChannelFacts(
                "sms",
                identity_kind="phone",
                reply_channel="sms",
                visibilities=("private",),
                public_messages="",
                replies_to="the number, by SMS",
                # Twilio's limit on one message body (it splits it into segments).
                max_text=1600,
                max_public_text=1600,
                # MMS: Twilio fetches each file from a signed URL on our listener.
                sends_attachments=True,
                # MMS: Twilio sends media to numbers of carriers that take it.
                carries_attachments=True,
                segment_text=160,
                survey="reply",
                label="sms",
                colour="#e2f6e9",
                ack=AckText(
                    "We have your message: case {reference}. A person will answer {eta}. "
                    "{follow_up}",
                    "Reply to this number to add anything.",
                ),
            ),
            ChannelFacts(
                "voice",
                identity_kind="phone",
                # A call cannot be answered with text: the same number gets an SMS.
                reply_channel="sms",
                visibilities=("private",),
                public_messages="",
                replies_to="nothing on voice: the caller's number is answered by SMS",
                max_text=1600,
                max_public_text=1600,
                # A caller is answered by SMS, which sends files as an MMS.
                sends_attachments=True,
                carries_attachments=True,
                segment_text=160,
                survey="reply",
                label="voice",
                colour="#f3e8ff",
                # A call is acknowledged by text message to the caller's number, sent when
                # the call comes in, before any voicemail exists: the call is what we have.
                ack=AckText(
                    "We have your call: case {reference}. A person will answer {eta}. {follow_up}",
                    "Reply to this text to add anything.",
                ),
            ),
            ChannelFacts(
                "twitter",
                identity_kind="twitter",
                reply_channel="twitter",
                visibilities=("public", "private"),
                public_messages="mentions and replies to our account; Direct Messages are private",
                replies_to="a public mention by a reply tweet, anything else by Direct Message",
                # A Direct Message takes 10,000 characters, a post 280.
                max_text=10_000,
                max_public_text=280,
                # Images, GIFs and MP4 video in a Direct Message, uploaded to X first, one
                # per DM (connectors/twitter); a public reply is text only.
                sends_attachments=True,
                carries_attachments=True,
                survey="link",
                label="twitter",
                colour="#e0f4fd",
            ),
            ChannelFacts(
                "reddit",
                identity_kind="reddit",
                reply_channel="reddit",
                visibilities=("public", "private"),
                public_messages="posts and comments; private messages are private",
                replies_to="a post or comment by a public reply, anything else by private message",
                # Reddit's limit on a comment and on a private message's body.
                max_text=10_000,
                max_public_text=10_000,
                sends_attachments=False,
                survey="link",
                label="reddit",
                colour="#ffe9df",
            ),
            ChannelFacts(
                "whatsapp",
                # The WhatsApp id is the phone number: an SMS and a WhatsApp message from one
                # number are one person. A reply goes back on the channel they last used.
                identity_kind="phone",
                reply_channel="whatsapp",
                visibilities=("private",),
                public_messages="",
                replies_to="the number, by WhatsApp (a template outside the 24-hour window)",
                # The Cloud API's limit on a text message's body.
                max_text=4096,
                max_public_text=4096,
                # An image or a document, uploaded to the Cloud API first (connectors/meta).
                sends_attachments=True,
                carries_attachments=True,
                survey="reply",
                label="whatsapp",
                colour="#dcf8c6",
                # Said the same way as Messenger's and Instagram's, whose comments are public.
                ack=AckText("We have your message: case {reference}. A person will answer {eta}."),
                reply_window=ReplyWindow(
                    free_hours=24,
                    after="template",
                    outside="outside WhatsApp's 24-hour window: a template will be sent",
                ),
            ),
            ChannelFacts(
                "messenger",
                identity_kind="messenger",
                reply_channel="messenger",
                visibilities=("public", "private"),
                public_messages="comments on the page's posts; Messenger messages are private",
                replies_to="a comment by a public reply, anything else by Messenger",
                # Send API text limit; a Facebook comment takes 8,000.
                max_text=2000,
                max_public_text=2000,
                # An image or a file, by the Attachment Upload API (connectors/meta).
                sends_attachments=True,
                carries_attachments=True,
                survey="link",
                label="messenger",
                colour="#e4e6fb",
                # A comment is answered publicly: only {reference} and {eta}, no name, no
                # token, nothing a stranger could use.
                ack=AckText("We have your message: case {reference}. A person will answer {eta}."),
                reply_window=ReplyWindow(
                    free_hours=24,
                    tagged_days=7,
                    after="refuse",
                    outside="cannot reach this person on Messenger any more: use another identity",
                ),
            ),
            ChannelFacts(
                "instagram",
                identity_kind="instagram",
                reply_channel="instagram",
                visibilities=("public", "private"),
                public_messages="comments on our media; Direct messages are private",
                replies_to="a comment by a public reply, anything else by Direct message",
                # A Direct message takes 1,000 bytes of text; a comment 2,200 characters.
                max_text=1000,
                max_public_text=1000,
                # Images, video and audio in a Direct message, which Meta fetches from a
                # signed URL on our listener (connectors/meta); a comment reply is text only.
                sends_attachments=True,
                carries_attachments=True,
                survey="link",
                label="instagram",
                colour="#fde4f2",
                # A comment is answered publicly: only {reference} and {eta}, no name, no
                # token, nothing a stranger could use.
                ack=AckText("We have your message: case {reference}. A person will answer {eta}."),
                reply_window=ReplyWindow(
                    free_hours=24,
                    tagged_days=7,
                    after="refuse",
                    outside="cannot reach this person on Instagram any more: use another identity",
                ),
            ),
            ChannelFacts(
                "telegram",
                identity_kind="telegram",
                reply_channel="telegram",
                # Only private chats with the bot are taken in: group messages are ignored
                # and counted (docs/channels/telegram.md says why).
                visibilities=("private",),
                public_messages="",
                replies_to="the person, in their private chat with the bot",
                # The Bot API's limit on one sendMessage text.
                max_text=4096,
                max_public_text=4096,
                # sendPhoto for a photo, sendDocument for any other file (connectors/telegram).
                sends_attachments=True,
                carries_attachments=True,
                survey="reply",
                label="telegram",
                colour="#e3f2fb",
                # The person's private chat with the bot, where they can simply write again.
                ack=AckText(
                    "We have your message: case {reference}. A person will answer {eta}. "
                    "{follow_up}",
                    "Write here to add anything.",
                ),
            ),
            ChannelFacts(
                "web",
                identity_kind="web",
                # A reply is shown on the case's status page, which the person holds the
                # link to; nothing is sent to the address they typed until they confirm it.
                reply_channel="web",
                visibilities=("private",),
                public_messages="",
                replies_to="the case's status page, which only the holder of its link can read",
                # The inbox's own bound on a reply's text, as for email.
                max_text=100_000,
                max_public_text=100_000,
                sends_attachments=False,
                survey="link",
                label="web",
                colour="#fff4d6",
            ),
        )
    }
)

# Which channels each connector brings in (the order is the order connectors start in).
CONNECTOR_CHANNELS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "smtp": ("email",),
        "imap": ("email",),
        "twilio": ("sms", "voice"),
        "twitter": ("twitter",),
        "reddit": ("reddit",),
        # One connector for Meta's three: they share the webhook, its signature and the
        # Graph API.
        "meta": ("whatsapp", "messenger", "instagram"),
        "telegram": ("telegram",),
        # The public contact form and the case status page, on the HTTP listener.
        "webform": ("web",),
    }
)

# --- derived: every list of channels elsewhere is one of these ----------------------------

CHANNEL_NAMES: tuple[str, ...] = tuple(CHANNEL_FACTS)
IDENTITY_KIND_NAMES: tuple[str, ...] = tuple(IDENTITY_KINDS)
# The channel -> identity kind table (sms and voice share the number).
IDENTITY_KIND_OF: Mapping[str, str] = MappingProxyType(
    {c.name: c.identity_kind for c in CHANNEL_FACTS.values()}
)
# The channels an agent may name for a reply.
REPLY_CHANNEL_NAMES: tuple[str, ...] = tuple(c.name for c in CHANNEL_FACTS.values() if c.replyable)
PUBLIC_CHANNEL_NAMES: frozenset[str] = frozenset(c.name for c in CHANNEL_FACTS.values() if c.public)
# The channels whose senders the mail sender check authenticates (a forged sender is possible).
SENDER_CHECKED_CHANNELS: frozenset[str] = frozenset(
    c.name for c in CHANNEL_FACTS.values() if c.authenticates_sender
)
# The channels whose replies thread by Message-ID (In-Reply-To, References) under a subject.
MESSAGE_ID_CHANNELS: frozenset[str] = frozenset(
    c.name for c in CHANNEL_FACTS.values() if c.threads_by_message_id
)
# The channel of RFC 5322 mail, whose raw source is a message file (.eml): what the MIME
# parser (normalizer/mail.py) and the mbox import (normalizer/backfill.py) make. One channel
# is mail; a second would have to say which parser is whose, and stops the import here.
(MAIL_CHANNEL,) = (c.name for c in CHANNEL_FACTS.values() if c.raw_extension == "eml")
# The channels whose senders' handles are mail addresses.
MAIL_ADDRESS_CHANNELS: frozenset[str] = frozenset(
    c.name for c in CHANNEL_FACTS.values() if IDENTITY_KINDS[c.identity_kind].mail_address
)


def reply_channels_of_kind(kind: str) -> tuple[str, ...]:
    """Every channel a reply to an identity of `kind` may go out on, the default first: a
    phone number is answered by SMS, or by WhatsApp where the person wrote on WhatsApp."""
    found = (c.reply_channel for c in CHANNEL_FACTS.values() if c.identity_kind == kind)
    return tuple(dict.fromkeys(found))


def reply_channel_of_kind(kind: str) -> str:
    """The channel a reply to an identity of `kind` goes out on when nothing says otherwise
    (the first channel of the kind's: sms for a number)."""
    return reply_channels_of_kind(kind)[0]


# The identity kind -> default reply channel table: a phone number is answered by SMS.
REPLY_CHANNEL_OF_KIND: Mapping[str, str] = MappingProxyType(
    {k: reply_channel_of_kind(k) for k in IDENTITY_KINDS}
)
# The identity kind -> every reply channel: a number by SMS or WhatsApp.
REPLY_CHANNELS_OF_KIND: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {k: reply_channels_of_kind(k) for k in IDENTITY_KINDS}
)


def ack_defaults() -> Mapping[str, AckText]:
    """channel -> its default acknowledgement, for every channel acknowledged from
    [acknowledgements], in the registry's order. Read at call time, not import time, so a
    channel registered by a test is seen the way a new entry above would be."""
    return MappingProxyType({c.name: c.ack for c in CHANNEL_FACTS.values() if c.ack is not None})


def channels_of(connector: str) -> tuple[str, ...]:
    """The channels a connector brings in; () for one that brings in none (the web)."""
    return CONNECTOR_CHANNELS.get(connector, ())


def raw_extension(channel: str) -> str:
    """The extension of a message's raw source on `channel` ("txt" for one not known here)."""
    found = CHANNEL_FACTS.get(channel)
    return found.raw_extension if found is not None else "txt"


def fold_handle(kind: str, handle: str, *, typed: bool = False) -> str:
    """A handle in the form the store keeps, so equal handles compare equal.

    `typed`: the handle was typed by a person, who may have put the kind's prefix before it
    ("u/alice"); the prefix goes before case-folding, so "U/alice" keeps its "u/".
    Raises KeyError for an unknown kind.
    """
    spec = IDENTITY_KINDS[kind]
    value = handle.strip()
    if typed and spec.typed_prefix:
        value = value.removeprefix(spec.typed_prefix)
    return value.lower() if spec.case_insensitive else value


def stylesheet() -> str:
    """The badge colour of every channel, as CSS (the pages' CSP forbids inline styles)."""
    return "".join(f".ch-{c.name} {{ background: {c.colour}; }}\n" for c in CHANNEL_FACTS.values())
