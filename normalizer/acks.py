"""Acknowledgements: whether a new case gets one, when we expect to answer, and what it says.

Pure functions and the settings they read. The worker gathers the facts inside the case
transaction (normalizer/worker.py) and queues the result in the outbox; the connector of the
channel delivers it. Nothing here touches the store or the network.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from pydantic import (
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from inbox import channels as registry
from inbox import i18n
from inbox.channels import MAIL_ADDRESS_CHANNELS, SENDER_CHECKED_CHANNELS
from inbox.config import BusinessHours, Strict
from inbox.sla import add_business_time, business_time_between
from normalizer.mailauth import domain_of, fold_address
from normalizer.message import IDENTITY_KIND
from normalizer.threads import case_tag

# The placeholders a template may use. Values taken from inbound mail ({name}, {subject}) are
# cleaned of control characters before they are put in, so a template can't carry CR/LF into
# a header whatever it says.
PLACEHOLDERS = frozenset(
    {
        "reference",  # C-001042
        "token",  # the case's secret token ("" on public channels)
        "tag",  # [C-001042 #token] (just [C-001042] on public channels)
        "name",  # the sender's display name, or "there"
        "subject",  # the sender's subject, or "your message"
        "eta",  # "within about 3 hours" / "by Monday 23 November, 13:00 (Europe/Berlin)"
        "eta_at",  # the expected time in ISO 8601 UTC
        "queue_position",  # 1 + the open cases ahead of this one
        "follow_up",  # the channel's own "how to follow up" text
        "other_channels",  # the other ways to reach us (global)
        "channel",  # email | sms | voice | twitter | reddit
        # the case's status page with its token ("" on public channels, or when
        # [acknowledgements] status_base_url is empty)
        "status_url",
    }
)


def template_fields(template: str) -> set[str]:
    """The placeholder names in `template`; raises ValueError for anything but plain names."""
    names: set[str] = set()
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise ValueError(f"{{{field}}}: placeholders are plain names such as {{reference}}")
        if field not in PLACEHOLDERS:
            raise ValueError(
                f"unknown placeholder {{{field}}}; known: " + ", ".join(sorted(PLACEHOLDERS))
            )
        names.add(field)
    return names


class AckWords(Strict):
    """One language's texts of a channel's acknowledgement (`[acknowledgements.email.es]`):
    each key given replaces the channel's text in that language; a key left out is our
    translation of the default, or the operator's own text when they changed it."""

    subject: str = ""
    body: str = ""
    follow_up: str = ""

    @field_validator("subject", "body", "follow_up")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        template_fields(value)
        return value


class AckTemplate(Strict):
    """One channel's acknowledgement. `subject` is used by email only."""

    enabled: bool = True
    subject: str = ""
    body: str
    # How to follow up on this channel; may itself use placeholders ({tag}, {reference}).
    follow_up: str = ""
    # The operator's texts per language, written as [acknowledgements.<channel>.<lang>].
    languages: dict[str, AckWords] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _language_tables(cls, data: Any) -> Any:
        # `[acknowledgements.email.es]` reads as the table's key "es": gathered here so
        # the settings file says it the way an operator would look for it.
        if not isinstance(data, dict):
            return data
        tables = {k: v for k, v in data.items() if k in i18n.LANGUAGES}
        if not tables:
            return data
        rest = {k: v for k, v in data.items() if k not in i18n.LANGUAGES}
        return {**rest, "languages": {**dict(rest.get("languages") or {}), **tables}}

    @model_serializer(mode="wrap")
    def _dump_as_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Dumped the way it is written ([acknowledgements.email.es]), so `parity settings
        # show` prints what an operator would type and the dump loads back as it was.
        dumped: dict[str, Any] = handler(self)
        languages = dumped.pop("languages", None) or {}
        return {
            **dumped,
            **{lang: {k: v for k, v in words.items() if v} for lang, words in languages.items()},
        }

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: dict[str, AckWords]) -> dict[str, AckWords]:
        unknown = sorted(set(value) - set(i18n.LANGUAGES))
        if unknown:
            raise ValueError(
                f"no catalogue for {', '.join(unknown)}; languages: {', '.join(i18n.LANGUAGES)}"
            )
        return value

    @field_validator("subject", "body", "follow_up")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        template_fields(value)
        return value

    @model_validator(mode="after")
    def _languages_valid(self) -> AckTemplate:
        # Each language's texts keep the same rules as the channel's own (the case named,
        # a mail subject's {tag}): checked on the template they make.
        for words in self.languages.values():
            given = words.model_dump(exclude_defaults=True)
            if given:
                type(self).model_validate({**self.model_dump(exclude={"languages"}), **given})
        return self

    def texts(self, channel: str, language: str) -> tuple[str, str, str]:
        """(subject, body, follow_up) in `language`: the operator's text for it where given,
        else our translation of each default the operator kept, else their own text as is."""
        default = registry.ack_defaults().get(channel)
        words = self.languages.get(language)
        found: list[str] = []
        for key in ("subject", "body", "follow_up"):
            own = getattr(self, key)
            given = getattr(words, key) if words is not None else ""
            if given:
                found.append(given)
            elif default is not None:
                found.append(i18n.default_or_own(language, own, getattr(default, key)))
            else:
                found.append(own)
        return found[0], found[1], found[2]

    @model_validator(mode="after")
    def _names_the_case(self) -> AckTemplate:
        used = template_fields(self.subject) | template_fields(self.body)
        if not used & {"reference", "tag"}:
            raise ValueError(
                "an acknowledgement must give the case reference ({reference} or {tag})"
            )
        if "follow_up" in template_fields(self.follow_up):
            raise ValueError("follow_up cannot include itself")
        return self


# Text the sender chose never goes into an acknowledgement's headers: a forged sender would
# otherwise write the Subject of mail we send to their victim.
SENDER_CHOSEN = frozenset({"name", "subject"})


class MailAckTemplate(AckTemplate):
    """The acknowledgement of a channel whose messages are mail: a subject that threads the
    reply (`threads_by_message_id`) and a From anyone can forge (`authenticates_sender`)."""

    # Only mail whose From is authenticated (DMARC pass, or an aligned SPF or DKIM pass) is
    # acknowledged: anything else may be forged to aim our acknowledgements at a victim.
    require_authenticated_sender: bool = True

    @model_validator(mode="after")
    def _tag_in_subject(self) -> MailAckTemplate:
        # The tag in the subject is what threads a reply from a client that drops
        # In-Reply-To and References, and what keeps a stranger's reply out of the case.
        if "tag" not in template_fields(self.subject):
            raise ValueError("the email subject must contain {tag}")
        chosen = template_fields(self.subject) & SENDER_CHOSEN
        if chosen:
            raise ValueError(
                "the email subject cannot use "
                + ", ".join(f"{{{f}}}" for f in sorted(chosen))
                + ": the sender chose that text, and it would go into our mail's headers"
            )
        return self


def template_model(channel: str) -> type[AckTemplate]:
    """The model of `channel`'s [acknowledgements.<channel>] table, from its registry facts:
    a channel whose messages are mail has the mail template's key and rules."""
    facts = registry.CHANNEL_FACTS[channel]
    mail = facts.threads_by_message_id or facts.authenticates_sender
    return MailAckTemplate if mail else AckTemplate


def channel_template(channel: str, given: object = None) -> AckTemplate:
    """`channel`'s template: the table `given` (a partial one too) laid over the channel's
    default from the registry, key by key, as pydantic's nested defaults did; or `given`
    itself when it already is a template of the channel's model.

    Raises KeyError for a channel without a default, ValidationError for a bad table.
    """
    model = template_model(channel)
    if type(given) is model:
        return given
    default = registry.ack_defaults()[channel]
    if given is None:
        given = {}
    if not isinstance(given, dict):
        return model.model_validate(given)  # refused, with the model's own error
    base = {"subject": default.subject, "body": default.body, "follow_up": default.follow_up}
    return model.model_validate({**base, **given})


class AckLimits(Strict):
    """[acknowledgements.limits]: token buckets across all channels, shared by every instance.

    Each bucket holds up to `*_burst` acknowledgements and regains `*_per_hour` of them an
    hour; an acknowledgement takes one token from each of its three buckets, or is withheld.
    """

    # One recipient (an address folded where its provider ignores dots or +tags, a number).
    recipient_burst: int = Field(default=3, ge=1)
    recipient_per_hour: float = Field(default=0.5, ge=0)
    # One recipient domain (email only).
    domain_burst: int = Field(default=60, ge=1)
    domain_per_hour: float = Field(default=120.0, ge=0)
    # Everything this desk sends.
    global_burst: int = Field(default=500, ge=1)
    global_per_hour: float = Field(default=1000.0, ge=0)


class AckSettings(Strict):
    """[acknowledgements]: the settings every channel shares, and one table per channel that
    the worker acknowledges from a template ([acknowledgements.<channel>]).

    The channel tables are not fields: they are the model's extra keys, one for each channel
    with a default acknowledgement in the registry (inbox/channels.py `AckText`), so a new
    channel adds its default there and nothing here. A partial table is laid over that
    default; a table for any other channel is refused, naming the channels that have one.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    # SerializeAsAny: a mail channel's template dumps with its own keys too.
    __pydantic_extra__: dict[str, SerializeAsAny[AckTemplate]] = Field(init=False)

    enabled: bool = True
    # No second acknowledgement to a sender acknowledged on the same channel this recently.
    sender_window_hours: int = Field(default=24, ge=0)
    # Throughput for the expected response time: cases first answered in this many days.
    throughput_days: int = Field(default=7, ge=1)
    # With fewer answered cases than this in that window, the SLA target is the estimate.
    min_answered: int = Field(default=5, ge=1)
    # Ahead-of-you counts stop here; the estimate is already far past any target by then.
    max_queue_count: int = Field(default=10_000, ge=1)
    # The other ways to reach us, for {other_channels}.
    other_channels: str = ""
    # The public URL of the status pages (the web form's public_url), for {status_url};
    # empty leaves {status_url} empty.
    status_base_url: str = ""
    limits: AckLimits = AckLimits()

    @field_validator("other_channels")
    @classmethod
    def _plain(cls, value: str) -> str:
        template_fields(value)
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _channel_tables(
        cls, data: Any, handler: ModelWrapValidatorHandler[AckSettings]
    ) -> AckSettings:
        if not isinstance(data, dict):
            return handler(data)
        defaults = registry.ack_defaults()
        errors: list[InitErrorDetails] = []
        shared: dict[str, Any] = {}
        for key, value in data.items():
            if key in cls.model_fields:
                shared[key] = value
            elif key not in defaults:
                errors.append(_unknown_table(key, value, tuple(defaults)))
        tables: dict[str, AckTemplate] = {}
        for channel in defaults:
            try:
                tables[channel] = channel_template(channel, data.get(channel))
            except ValidationError as exc:
                errors.extend(_located(channel, exc))
        try:
            settings = handler({**shared, **tables})
        except ValidationError as exc:
            errors = [*_located(None, exc), *errors]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return settings

    @property
    def templates(self) -> Mapping[str, AckTemplate]:
        """channel -> its template, for every channel acknowledged from [acknowledgements]."""
        return MappingProxyType(dict(self.__pydantic_extra__ or {}))

    def template(self, channel: str) -> AckTemplate | None:
        return (self.__pydantic_extra__ or {}).get(channel)


def _unknown_table(key: str, value: Any, known: tuple[str, ...]) -> InitErrorDetails:
    """The error for a key of [acknowledgements] that is neither a setting nor a channel's
    table: a table names the channels that have one, a plain value is an unknown key."""
    if not isinstance(value, dict | AckTemplate):
        return InitErrorDetails(type="extra_forbidden", loc=(key,), input=value)
    elsewhere = (
        f"; {key} is acknowledged by its connector, with the templates of its own settings"
        if key in registry.CHANNEL_FACTS
        else ""
    )
    return InitErrorDetails(
        type=PydanticCustomError(
            "unknown_channel",
            "unknown channel '{channel}': [acknowledgements] has a table for {known}{elsewhere}",
            {"channel": key, "known": ", ".join(known), "elsewhere": elsewhere},
        ),
        loc=(key,),
        input=value,
    )


def _located(channel: str | None, exc: ValidationError) -> list[InitErrorDetails]:
    """`exc`'s errors as they would be reported for a field named `channel` (None: as they
    are), so a bad key of [acknowledgements.sms] is reported as sms.body, as it was."""
    prefix = () if channel is None else (channel,)
    found: list[InitErrorDetails] = []
    for error in exc.errors():
        detail = InitErrorDetails(
            type=error["type"], loc=(*prefix, *error["loc"]), input=error["input"]
        )
        if "ctx" in error:
            detail["ctx"] = error["ctx"]
        found.append(detail)
    return found


# --- whether ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AckFacts:
    """What the decision needs, gathered by the worker for a message that opened a case."""

    channel: str
    acknowledge: bool  # False for imported history
    automated: str | None  # the parser's reason this message came from a robot, if any
    recipient: str  # the sender's handle: address, number, user id
    anonymous: bool = False
    # Email: whether the From is authenticated (normalizer/mailauth.py); None elsewhere.
    authenticated: bool | None = None


def withhold_reason(facts: AckFacts, settings: AckSettings) -> str | None:
    """Why this new case gets no acknowledgement, or None when it should get one.

    The "recently acknowledged" check needs the store and is `recently_acknowledged`.
    """
    if not facts.acknowledge:
        return "imported history is never acknowledged"
    if not settings.enabled:
        return "acknowledgements are turned off"
    template = settings.template(facts.channel)
    if template is None or not template.enabled:
        return f"acknowledgements on {facts.channel} are turned off"
    if facts.automated:
        return f"automated message ({facts.automated})"
    if (
        facts.channel in SENDER_CHECKED_CHANNELS
        # A channel the mail sender check covers has the mail template and its switch.
        and (not isinstance(template, MailAckTemplate) or template.require_authenticated_sender)
        and not facts.authenticated
    ):
        return UNAUTHENTICATED
    if facts.anonymous or not facts.recipient:
        return "no address to answer"
    if not answerable(facts.channel, facts.recipient):
        return "the sender's address cannot be answered safely"
    return None


UNAUTHENTICATED = "unauthenticated sender"


@dataclass(frozen=True)
class Bucket:
    key: str
    burst: int
    per_hour: float
    reason: str  # the withheld reason when this bucket is empty


def ack_buckets(channel: str, recipient: str, limits: AckLimits) -> list[Bucket]:
    """The buckets one acknowledgement draws on, narrowest first."""
    kind = IDENTITY_KIND.get(channel, channel)
    mailbox = channel in MAIL_ADDRESS_CHANNELS
    folded = fold_address(recipient) if mailbox else recipient.strip().lower()
    buckets = [
        Bucket(
            f"recipient:{kind}:{folded}"[:400],
            limits.recipient_burst,
            limits.recipient_per_hour,
            "rate limit: recipient",
        )
    ]
    domain = domain_of(folded) if mailbox else ""
    if domain:
        buckets.append(
            Bucket(
                f"domain:{domain}"[:400],
                limits.domain_burst,
                limits.domain_per_hour,
                "rate limit: recipient domain",
            )
        )
    buckets.append(
        Bucket("global", limits.global_burst, limits.global_per_hour, "rate limit: global")
    )
    return buckets


def refill(tokens: float, updated_at: datetime, now: datetime, bucket: Bucket) -> float:
    """The bucket's level at `now`: what it held plus what it regained, at most its burst."""
    elapsed = max(0.0, (now - updated_at).total_seconds())
    return min(float(bucket.burst), tokens + elapsed / 3600 * bucket.per_hour)


def take_tokens(
    buckets: list[Bucket], stored: dict[str, tuple[float, datetime]], now: datetime
) -> tuple[str | None, dict[str, float]]:
    """(the withheld reason or None, each bucket's new level).

    All or nothing: an acknowledgement that one bucket refuses takes no token from the
    others, so a flood aimed at one recipient does not use up the domain's or the desk's.
    """
    levels = {
        b.key: refill(*stored[b.key], now, b) if b.key in stored else float(b.burst)
        for b in buckets
    }
    for bucket in buckets:
        if levels[bucket.key] < 1:
            return bucket.reason, levels
    return None, {key: level - 1 for key, level in levels.items()}


def recently_acknowledged(
    last_ack_at: datetime | None, now: datetime, settings: AckSettings
) -> str | None:
    if last_ack_at is None or settings.sender_window_hours == 0:
        return None
    if now - last_ack_at < timedelta(hours=settings.sender_window_hours):
        return (
            f"sender already acknowledged at {last_ack_at.isoformat(timespec='seconds')}, "
            f"within {settings.sender_window_hours} h"
        )
    return None


def answerable(channel: str, recipient: str) -> bool:
    """A handle we may put in an address header or an API call: no controls, no spaces."""
    if len(recipient) > 320 or any(not ch.isprintable() or ch.isspace() for ch in recipient):
        return False
    if channel in MAIL_ADDRESS_CHANNELS:
        local, at, domain = recipient.rpartition("@")
        return bool(at and local and domain) and not any(c in recipient for c in '<>()[],;:"\\')
    return True


# --- when --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Eta:
    at: datetime
    basis: Literal["queue", "sla"]
    ahead: int


def expected_response(
    now: datetime,
    *,
    ahead: int,
    answered: int,
    since: datetime,
    due_at: datetime,
    hours: BusinessHours,
    min_answered: int,
) -> Eta:
    """When this case will likely be answered.

    From the queue: `ahead` open cases come first, and `answered` cases were first answered
    between `since` and `now`, so each takes about the working time elapsed over `answered`;
    ours is done after `ahead + 1` of those. Without enough history the case's own due time
    (the SLA target) is the honest estimate.
    """
    worked = business_time_between(since, now, hours)
    if answered < min_answered or worked <= timedelta(0):
        return Eta(due_at, "sla", ahead)
    per_case = worked / answered
    minutes = math.ceil((per_case * (ahead + 1)).total_seconds() / 60)
    return Eta(add_business_time(now, minutes, hours), "queue", ahead)


def describe_eta(now: datetime, at: datetime, timezone: str, language: str = "en") -> str:
    """The estimate in words of `language`, rounded up so we never promise sooner than we
    expect."""
    _ = partial(i18n.gettext_in, language)
    delta = at - now
    minutes = max(1, math.ceil(delta.total_seconds() / 60))
    if minutes <= 45:
        return _("within about {minutes} minutes").format(minutes=math.ceil(minutes / 15) * 15)
    hours = math.ceil(minutes / 60)
    if hours < 24:
        if hours == 1:
            return _("within about an hour")
        return _("within about {hours} hours").format(hours=hours)
    local = at.astimezone(ZoneInfo(timezone))
    return _("by {when} ({timezone})").format(
        when=i18n.format_when(local, language, _("EEEE d MMMM, HH:mm")), timezone=timezone
    )


# --- what --------------------------------------------------------------------------------------


def header_text(value: str, limit: int) -> str:
    """`value` safe for one header line: control and line-break characters become spaces.

    "=?" is broken up too: Python before 3.11.10 decodes an RFC 2047 encoded word found in a
    header value while writing the header out, so "=?utf-8?q?a=0D=0ABcc:...?=" taken from
    inbound mail would come out as a real line break and a header of the sender's choosing
    (CVE-2024-6923).
    """
    cleaned = " ".join("".join(ch if ch.isprintable() else " " for ch in value).split())
    cleaned = cleaned.replace("=?", "= ?")
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class AckContent:
    subject: str
    body: str


def _fill(template: str, fields: dict[str, str]) -> str:
    template_fields(template)  # settings were validated; this guards templates built in code
    return template.format_map(fields)


def status_url(base: str, reference: str, token: str) -> str:
    """The case's status page (GET /status/<reference>?t=<token>), or "" without a base:
    the link proves its holder was sent it, so a public reply never carries one."""
    if not base or not token:
        return ""
    return f"{base.rstrip('/')}/status/{quote(reference)}?{urlencode({'t': token})}"


def compose(
    template: AckTemplate,
    *,
    channel: str,
    reference: str,
    token: str,
    public: bool,
    name: str,
    subject: str,
    eta: Eta,
    now: datetime,
    timezone: str,
    other_channels: str = "",
    status_base_url: str = "",
    language: str = "en",
) -> AckContent:
    """The acknowledgement's subject and text for one case.

    A public reply never shows the token: anyone could read it, and the token is what lets a
    message from an unknown address into the case. Nor the sender's name or subject: the
    same template serves a channel's private messages and its public comments (Messenger,
    Instagram), so an operator's {name} must not put a person's name under a public post.
    A public acknowledgement says the case's reference and the expected time, nothing else.

    `language` is the case's: our default texts in it, the operator's as they wrote them.
    """
    _ = partial(i18n.gettext_in, language)
    there, your_message = _("there"), _("your message")
    subject_text, body_text, follow_up_text = template.texts(channel, language)
    fields = {
        "reference": reference,
        "token": "" if public else token,
        "tag": f"[{reference}]" if public else case_tag(reference, token),
        "name": there if public else header_text(name, 80) or there,
        "subject": your_message if public else header_text(subject, 160) or your_message,
        "eta": describe_eta(now, eta.at, timezone, language),
        "eta_at": eta.at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "queue_position": str(eta.ahead + 1),
        "channel": channel,
        "follow_up": "",
        "other_channels": "",
        "status_url": status_url(status_base_url, reference, token) if not public else "",
    }
    fields["follow_up"] = _fill(follow_up_text, fields)
    fields["other_channels"] = _fill(other_channels, fields)
    body = _fill(body_text, fields)
    # Blank lines left by empty optional parts are dropped, three newlines become two.
    while "\n\n\n" in body:
        body = body.replace("\n\n\n", "\n\n")
    return AckContent(header_text(_fill(subject_text, fields), 250), body.strip() + "\n")
