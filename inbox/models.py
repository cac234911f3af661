"""The store's tables, as SQLAlchemy 2 models. Alembic migrations in inbox/migrations follow them.

Raw input is kept apart from what was made of it: `Intake` rows hold exactly what a connector
received (content-addressed in `Blob`), so a parser fix can be replayed over the original
bytes, and `Message` rows hold the channel-neutral shape the normalizer made.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy import DateTime as _DateTime
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite has no 64-bit autoincrement alias other than INTEGER, PostgreSQL wants BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as naive UTC and always handed back timezone-aware.

    SQLite keeps no zone, so without this a round trip would turn aware times naive and
    comparisons between stored and fresh times would raise.
    """

    impl = _DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class Blob(Base):
    """Raw inputs and attachments, content-addressed so copies share one row."""

    __tablename__ = "blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Intake(Base):
    """One delivery of raw input by a connector, stored before the source is acknowledged.

    (channel, source_key) is unique: a redelivery of the same input (webhook retry, IMAP
    re-poll, cursor overlap) is recognised here, before anything is parsed.
    """

    __tablename__ = "intake"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    connector: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(16))
    source_key: Mapped[str] = mapped_column(String(512))
    raw_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    envelope: Mapped[dict[str, Any]] = mapped_column(default=dict)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # pending -> done | dead; `claimed_*` is a lease so a crashed worker's rows come back.
    state: Mapped[str] = mapped_column(String(16), default="pending")
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    processed_at: Mapped[datetime | None]
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    # Imported history is stored and cased like anything else but never acknowledged.
    acknowledge: Mapped[bool] = mapped_column(Boolean, default=True)

    __table_args__ = (
        UniqueConstraint("channel", "source_key", name="uq_intake_source"),
        Index("ix_intake_pending", "state", "id"),
    )


class Contact(Base):
    """A person, as far as agents have established; identities point at a contact."""

    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the person asked never to get a satisfaction survey again ("STOP" to a survey,
    # or the rating page's opt-out): a fact of the person, on every channel (migration 0014).
    csat_opt_out_at: Mapped[datetime | None]

    # When `parity contacts erase` removed this person's data (migration 0020).
    erased_at: Mapped[datetime | None]
    identities: Mapped[list[Identity]] = relationship(back_populates="contact")


class Identity(Base):
    """A handle on one kind of channel: an email address, an E.164 number, a user id."""

    __tablename__ = "identities"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # email | phone | twitter | reddit: sms and voice share the phone identity.
    kind: Mapped[str] = mapped_column(String(16))
    handle: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(256), default="")
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    # Facts such as follower count or karma: stored for agents, never used for ordering.
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    contact: Mapped[Contact] = relationship(back_populates="identities")

    __table_args__ = (UniqueConstraint("kind", "handle", name="uq_identity_handle"),)


class Case(Base):
    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # C- plus the id, zero-padded to at least six digits; set right after the insert.
    reference: Mapped[str | None] = mapped_column(String(32), unique=True)
    # Proves a message belongs to this case when it comes from an address we don't know.
    token: Mapped[str] = mapped_column(String(32))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    # new | open | pending_customer | resolved
    status: Mapped[str] = mapped_column(String(24), default="new")
    # The channel of the first inbound message: the case counts under it in reports.
    channel: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(512), default="")
    due_at: Mapped[datetime]
    due_rule: Mapped[str | None] = mapped_column(String(128))
    first_inbound_at: Mapped[datetime]
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    last_activity_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # "Claims to be about C-...": set when a stranger cites another case's reference.
    claims_reference: Mapped[str | None] = mapped_column(String(32))
    # "Unverified: claims to be from ...": an unauthenticated mail's From, when the mail
    # opened this case instead of joining that address's contact.
    unverified_from: Mapped[str | None] = mapped_column(String(320))
    # The earlier case this one continues, when a message came after the reopen window.
    linked_case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    followups: Mapped[int] = mapped_column(default=0)
    # How often a message reopened the case after it was resolved (the reopen rate).
    reopens: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # Facts the report reads from the case row alone, so that on PostgreSQL it is one scan of
    # cases (docs/managers/report.md): the first inbound message's visibility (public or
    # private), turn 0's due time (due_at moves on with follow-ups), the time the first
    # acknowledgement promised, and who answered first.
    side: Mapped[str | None] = mapped_column(String(8))
    first_due_at: Mapped[datetime | None]
    ack_eta_at: Mapped[datetime | None]
    first_responder_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    ack_state: Mapped[str | None] = mapped_column(String(24))
    ack_reason: Mapped[str | None] = mapped_column(String(256))
    # Set when a caller asked to be called back (Twilio call menu, "press 1").
    callback_requested_at: Mapped[datetime | None]
    # The agent working the case holds a lease: claimed_by until lease_until, renewed while
    # they work; an expired lease frees the case for claim-next again.
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    lease_until: Mapped[datetime | None]
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    # Snooze (migration 0015): set while snoozed. The case is out of the queue until
    # snoozed_until passes (NULL: no time) or a customer message with an id above
    # snooze_after_message_id arrives, whichever comes first. See inbox/snooze.py.
    snoozed_until: Mapped[datetime | None]
    snoozed_by: Mapped[int | None] = mapped_column(BigInteger)
    snooze_after_message_id: Mapped[int | None] = mapped_column(BigInteger)

    # The language the case is answered in (inbox/i18n.py LANGUAGES): chosen on the form,
    # detected from the opening message, or the contact's known one; "en" by default.
    language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    # When its content was erased (erasure of its contact, or retention; migration 0020).
    erased_at: Mapped[datetime | None]

    # The team the case belongs to (migration 0018): set by routing rules when it opens, or
    # by an agent; claim-next offers a team's cases to its members first (inbox/teams.py).
    team_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("teams.id"), index=True)

    __table_args__ = (
        # The queue: open cases by due time, channel never part of the key.
        Index("ix_cases_queue", "status", "due_at", "id"),
        Index("ix_cases_contact_activity", "contact_id", "last_activity_at"),
        # The manager report's period, read from the cases for the days its rollups do not
        # cover (inbox/report_days.py).
        Index("ix_cases_first_inbound", "first_inbound_at"),
        # The queue's pages and claim-next walk these in queue order; partial, so resolved
        # cases (most of a long-lived store) are not in them.
        Index(
            "ix_cases_open_queue",
            "due_at",
            "first_inbound_at",
            "id",
            sqlite_where=text("status IN ('new', 'open', 'pending_customer')"),
            postgresql_where=text("status IN ('new', 'open', 'pending_customer')"),
        ),
        Index(
            "ix_cases_claimable",
            "due_at",
            "first_inbound_at",
            "id",
            sqlite_where=text("status IN ('new', 'open')"),
            postgresql_where=text("status IN ('new', 'open')"),
        ),
        # Claim-next's team tiers (docs/agents/teams.md): my teams' cases and cases of no
        # team, each in queue order, without walking the other tiers' rows first.
        Index(
            "ix_cases_team_claimable",
            "team_id",
            "due_at",
            "first_inbound_at",
            "id",
            sqlite_where=text("status IN ('new', 'open')"),
            postgresql_where=text("status IN ('new', 'open')"),
        ),
        # "The case I hold": few rows have a holder, so the index stays small.
        Index(
            "ix_cases_claimed_by",
            "claimed_by",
            sqlite_where=text("claimed_by IS NOT NULL"),
            postgresql_where=text("claimed_by IS NOT NULL"),
        ),
        # Recent answer throughput, for the expected response time in acknowledgements.
        Index("ix_cases_first_response", "first_response_at"),
    )


class CaseTurn(Base):
    """One wait for us: from the inbound message that put the ball in our court to the reply
    that answered it. Turn 0 is the first response, later turns are next responses; each has
    its own due time under the one SLA policy, and the case's due_at is the open turn's."""

    __tablename__ = "case_turns"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    seq: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    due_at: Mapped[datetime]
    due_rule: Mapped[str | None] = mapped_column(String(128))
    responded_at: Mapped[datetime | None]
    responder_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Set when the turn ended without a reply: the case was resolved and then reopened.
    closed_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("case_id", "seq", name="uq_case_turns_case_seq"),)


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(8))  # inbound | outbound
    visibility: Mapped[str] = mapped_column(String(8))  # public | private
    # The dedup key: the same key is the same message, whichever way it came in.
    dedup_key: Mapped[str] = mapped_column(String(600), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(512), index=True)
    from_handle: Mapped[str] = mapped_column(String(320), default="")
    from_name: Mapped[str] = mapped_column(String(256), default="")
    # The language the parser chose or detected for an inbound message; NULL: too short or
    # too mixed to tell.
    language: Mapped[str | None] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str | None] = mapped_column(Text)
    # The HTML part depth-capped and sanitized when the message was filed, under the parse
    # budget: the case page shows this and never parses raw HTML per request.
    html_view: Mapped[str | None] = mapped_column(Text)
    # Inbound email's sender authentication: spf, dkim, dmarc, arc, from_domain, verdict
    # (pass | fail | none | temperror), and where it came from. None for other channels.
    auth: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    sent_at: Mapped[datetime | None]
    received_at: Mapped[datetime]
    raw_sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"))
    # Thread signals kept for later threading: In-Reply-To, References, a conversation key.
    thread: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Why no acknowledgement may be sent for this message (auto-reply, bounce...), if any.
    automated: Mapped[str | None] = mapped_column(String(128))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_messages_case_received", "case_id", "received_at"),)


class AckBucket(Base):
    """A token bucket limiting acknowledgements (per recipient, per domain, or global).

    Stored, not kept in memory, so every instance draws on the same buckets.
    """

    __tablename__ = "ack_buckets"
    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime]


class MessageRef(Base):
    """Every RFC 5322 Message-ID and platform id a case's messages carry, for threading."""

    __tablename__ = "message_refs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ref: Mapped[str] = mapped_column(String(600), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))


class Receipt(Base):
    """One delivery of a message: the SMTP and the IMAP copy of one mail are two receipts."""

    __tablename__ = "receipts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    intake_id: Mapped[int] = mapped_column(ForeignKey("intake.id"))
    connector: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(512), default="")
    received_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("message_id", "intake_id", "address", name="uq_receipt_delivery"),
    )


class Attachment(Base):
    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    filename: Mapped[str] = mapped_column(String(512), default="")
    content_type: Mapped[str] = mapped_column(String(256), default="application/octet-stream")
    size: Mapped[int] = mapped_column(BigInteger)


class Outbox(Base):
    """An outbound message the connector of its channel delivers, retries and records."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # ack | reply
    channel: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(512))
    subject: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    # Message-ID for email: a resend after a crash reuses it so receivers drop the copy.
    message_id_header: Mapped[str | None] = mapped_column(String(600))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # queued | sending | sent | delivered | failed | undelivered | unknown
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    # A lease: a row still "sending" after this was left by a process that died mid-send.
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    created_by: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        Index("ix_outbox_due", "state", "next_attempt_at"),
        # "Was this sender acknowledged recently?" is asked for every new case.
        Index("ix_outbox_recipient", "channel", "recipient", "created_at"),
    )


class OutboxAttempt(Base):
    __tablename__ = "outbox_attempts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str] = mapped_column(String(16))  # sent | retry | failed | unknown
    error: Mapped[str | None] = mapped_column(Text)


class Checkpoint(Base):
    """A connector's cursor, written in the same transaction as the input it covers."""

    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    connector: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(512))
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("connector", "key", name="uq_checkpoint"),)


class DeadLetter(Base):
    """Input that could not be turned into a message, kept whole with its error."""

    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    intake_id: Mapped[int | None] = mapped_column(ForeignKey("intake.id"), index=True)
    connector: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(16))
    raw_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    replayed_at: Mapped[datetime | None]
    replays: Mapped[int] = mapped_column(default=0)
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)


class ConnectorState(Base):
    """What a running connector last reported, so `parity connectors status` can read it."""

    __tablename__ = "connector_state"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    connector: Mapped[str] = mapped_column(String(32))
    instance: Mapped[str] = mapped_column(String(128))
    running: Mapped[bool] = mapped_column(Boolean, default=False)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    restarts: Mapped[int] = mapped_column(default=0)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (UniqueConstraint("connector", "instance", name="uq_connector_instance"),)


class AuditLog(Base):
    """Append-only record of every agent, admin and system decision on a case.

    Each row's hmac covers its own fields and the previous row's hmac in its chain, so an
    edited or deleted row breaks the chain from that row on. Since migration 0009 a row
    belongs to the chain of its case (`chain` = case id, 0 for rows about no case) at
    position `seq`; rows written before it have neither and form one chain in id order.
    See docs/architecture/audit.md.
    """

    __tablename__ = "audit_log"
    __table_args__ = (UniqueConstraint("chain", "seq", name="uq_audit_log_chain_seq"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prev_hmac: Mapped[str] = mapped_column(String(64))
    hmac: Mapped[str] = mapped_column(String(64))
    chain: Mapped[int | None] = mapped_column(BigInteger)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    # How the HMAC covers before/after (migration 0020): 1 the JSON as written, 2 a keyed
    # digest of every value, so erasure can swap a value for its digest (inbox/audit.py).
    form: Mapped[int] = mapped_column(SmallInteger, default=1, server_default=text("1"))
    # Form 3 only (migration 0027): the HMAC over the row as it is after an erasure; the row's
    # own `hmac` stays as written, so the chain's links and the seals still hold.
    attest: Mapped[str | None] = mapped_column(String(64))


class AuditChain(Base):
    """The head of one audit chain: its newest row. Its row lock is the chain's lock.

    A writer locks only the head of the chain it appends to, so writers on different cases
    never wait for each other. `sealed_seq` is how far the newest seal covers this chain.
    """

    __tablename__ = "audit_chains"
    __table_args__ = (
        # The sealer's question, "which chains moved since the last seal?", without a scan.
        Index(
            "ix_audit_chains_unsealed",
            "chain",
            postgresql_where=text("seq > sealed_seq"),
            sqlite_where=text("seq > sealed_seq"),
        ),
    )
    chain: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hmac: Mapped[str] = mapped_column(String(64))
    row_id: Mapped[int] = mapped_column(BigInteger)
    sealed_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class AuditSeal(Base):
    """A checkpoint of every chain's head, chained to the seal before it by an HMAC.

    The first seal's prev_hmac is the newest row of the rows written before migration 0009
    (GENESIS if there were none), so that older single chain is sealed in as well.
    """

    __tablename__ = "audit_seals"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    heads: Mapped[int] = mapped_column(BigInteger)
    prev_hmac: Mapped[str] = mapped_column(String(64))
    hmac: Mapped[str] = mapped_column(String(64))


class AuditSealHead(Base):
    """One chain's head as a seal saw it: that row must exist with that HMAC for ever."""

    __tablename__ = "audit_seal_heads"
    seal_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("audit_seals.id"), primary_key=True, autoincrement=False
    )
    chain: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    row_id: Mapped[int] = mapped_column(BigInteger)
    hmac: Mapped[str] = mapped_column(String(64))


# --- the agent inbox: accounts, sessions, notes, presence ---------------------------------


class User(Base):
    """An agent, manager or admin of the inbox. Only an Argon2id hash of the password is kept."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # agent | manager | admin
    password_hash: Mapped[str] = mapped_column(String(256))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    # After resolving or replying: "next" (open the next case) or "stay"; NULL follows
    # the global [web] after_done setting (migration 0015).
    after_done: Mapped[str | None] = mapped_column(String(8))
    # Where this agent's notification digest goes (migration 0019); None: no digest.
    mail_address: Mapped[str | None] = mapped_column(String(320))
    # Which notifications, browser notifications, the digest; {} means the defaults
    # (inbox/notifications.py: Prefs).
    notify_prefs: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
    # The last digest sent: at most one per [inbox] digest_period_minutes.
    digest_sent_at: Mapped[datetime | None]


class ApiToken(Base):
    """A bearer token for the JSON API; only its SHA-256 is stored (it is random, not chosen)."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class WebSession(Base):
    """A browser session: the cookie holds a random secret, the store its SHA-256.

    Kept in the store rather than in a signed cookie so a logout or a disabled account ends
    the session at once, in every web process.
    """

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the secret
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # Sent back by the page or client on every state-changing request (CSRF).
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(256), default="")


class LoginAttempt(Base):
    """Failed logins, counted per account and per address to rate-limit guessing."""

    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    name: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_login_attempts_name", "name", "at"),
        Index("ix_login_attempts_ip", "ip", "at"),
    )


class CaseNote(Base):
    """An internal note on a case: seen by agents, never sent to anyone."""

    __tablename__ = "case_notes"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CaseViewer(Base):
    """Who has a case open right now: a heartbeat row that counts until `seen_at` goes stale."""

    __tablename__ = "case_viewers"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    since: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("case_id", "user_id", name="uq_case_viewer"),)


# --- one person, one case: merges and near-duplicate signatures ----------------------------


class CaseMerge(Base):
    """One merge of a case into another, with what it moved, so it can be undone exactly.

    The absorbed case keeps its row (status "merged"); its messages, refs, outbox rows and
    notes point at the surviving case until the merge is undone. Audit rows never move: they
    stay on the case they were written for, which is how the log keeps both histories.
    """

    __tablename__ = "case_merges"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source_case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    into_case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    merged_at: Mapped[datetime] = mapped_column(default=utcnow)
    merged_by: Mapped[str] = mapped_column(String(128))
    # The ids each table had on the absorbed case at merge time (message ids, ref ids...).
    moved: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Both cases' fields before the merge, restored by an undo.
    source_state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    into_state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    undone_at: Mapped[datetime | None]
    undone_by: Mapped[str | None] = mapped_column(String(128))
    # What the undo sent back that had arrived after the merge, and why.
    undo_details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class CaseSignature(Base):
    """The MinHash signature of a case's inbound text (the union of its messages' shingles)."""

    __tablename__ = "case_signatures"
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), primary_key=True)
    hashvalues: Mapped[bytes] = mapped_column(LargeBinary)
    shingles: Mapped[int] = mapped_column(Integer, default=0)
    # Which MinHash made it (inbox/minhash.py): 2 is one-permutation hashing. The server
    # default is 1, datasketch's, which every row from before migration 0021 is; a row
    # written without saying is then never compared with the new ones, only re-indexed.
    scheme: Mapped[int] = mapped_column(SmallInteger, default=2, server_default=text("1"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CaseBand(Base):
    """LSH buckets of a case's signature: cases sharing any (band, bucket) are candidates.

    Kept in the store rather than in memory so every process (web, CLI, worker) asks the same
    index, and a lookup is one indexed probe per band whatever the number of cases.
    """

    __tablename__ = "case_bands"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    band: Mapped[int] = mapped_column(Integer)
    bucket: Mapped[int] = mapped_column(BigInteger)

    # case_id in the index: a probe is answered from the index alone (migration 0007).
    __table_args__ = (Index("ix_case_bands_probe", "band", "bucket", "case_id"),)


class OAuthToken(Base):
    """One OAuth2 grant (`parity mailbox authorize`): its tokens, encrypted, and its health.

    Kept in the store, not in a file, so a restart and every instance sharing the store use
    the same grant: providers that rotate refresh tokens (Microsoft) invalidate the old one
    on use, so two copies would soon disagree. `refresh_owner`/`refresh_until` are a lease:
    one instance refreshes at a time, the others read what it stored (inbox/tokens.py).
    """

    __tablename__ = "oauth_tokens"
    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    # Fernet tokens (AES-128-CBC + HMAC-SHA256) under PARITY_SECRET_KEY: never plain text.
    refresh_token_enc: Mapped[str] = mapped_column(Text)
    access_token_enc: Mapped[str | None] = mapped_column(Text)
    access_expires_at: Mapped[datetime | None]
    scopes: Mapped[str] = mapped_column(Text, default="")
    # ok | auth failed (the provider refused the refresh token: someone must authorize again)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    reason: Mapped[str | None] = mapped_column(Text)
    failed_at: Mapped[datetime | None]
    authorized_at: Mapped[datetime] = mapped_column(default=utcnow)
    refreshed_at: Mapped[datetime | None]
    refreshes: Mapped[int] = mapped_column(Integer, default=0)
    refresh_owner: Mapped[str | None] = mapped_column(String(128))
    refresh_until: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- the agent's day: tags and custom fields (migration 0015) --------------------------------


class CaseTag(Base):
    """A short label on a case, set by an agent or by a content rule (`set_by` says which)."""

    __tablename__ = "case_tags"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("cases.id"))
    tag: Mapped[str] = mapped_column(String(64))
    set_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("case_id", "tag", name="uq_case_tag"),
        # "Cases tagged X": the queue's and the search's tag filter.
        Index("ix_case_tags_tag", "tag", "case_id"),
    )


class CaseField(Base):
    """A custom field of a case: one value per name, set by an agent or a content rule."""

    __tablename__ = "case_fields"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("cases.id"))
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(512))
    set_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("case_id", "name", name="uq_case_field"),
        Index("ix_case_fields_name_value", "name", "value"),
    )


class ReplyUpload(Base):
    """A file an agent uploaded for a reply. Its bytes are a blob; once the reply is queued
    it becomes that outbound message's Attachment, and the upload row says which."""

    __tablename__ = "reply_uploads"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Only its uploader may attach it: an id guessed from another agent's session is refused.
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    filename: Mapped[str] = mapped_column(String(128))
    content_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The outbound message it went out with; None while it waits in a draft.
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))


class ReplyDraft(Base):
    """An agent's unsent reply on a case, kept server-side so a reload or another browser
    finds it: the text, the chosen target, copies and uploads, as the form had them."""

    __tablename__ = "reply_drafts"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), primary_key=True)
    draft: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CannedReply(Base):
    """A reply text agents insert and edit before sending: shared (made by a manager) or
    personal (owner_id set: only its owner sees it). `variants` holds per-channel texts."""

    __tablename__ = "canned_replies"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(128))
    body: Mapped[str] = mapped_column(Text)
    variants: Mapped[dict[str, Any]] = mapped_column(default=dict)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CsatSurvey(Base):
    """The one satisfaction survey of a resolved case: asked, or why not, and the answer.

    One row per case (unique), written when the survey is decided, so a case is never asked
    twice and a survey not asked says why. The case's channel, side and agent are copied at
    that moment: the results keep the facts the survey was asked under (migration 0014).
    """

    __tablename__ = "csat_surveys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), unique=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id"))
    # The case's channel (the report's), and the channel the question went out on.
    case_channel: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    # public | private: the case's side, as the report counts it.
    side: Mapped[str] = mapped_column(String(16))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # link | reply | none (not asked).
    mode: Mapped[str] = mapped_column(String(8))
    # asked | skipped | answered
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(256))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    language: Mapped[str] = mapped_column(String(16), default="en")
    asked_at: Mapped[datetime]
    rating: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime | None]

    __table_args__ = (
        # "Is there an open survey for this identity?" is asked for every short inbound text.
        Index("ix_csat_surveys_identity", "identity_id", "state", "asked_at"),
        Index("ix_csat_surveys_asked", "asked_at"),
    )


class AlertEvent(Base):
    """An alert raised once for its condition and period (`key` is unique), with what it saw."""

    __tablename__ = "alert_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # condition:subject:period, e.g. "unanswered:sms:2026-12-07T12".
    key: Mapped[str] = mapped_column(String(256), unique=True)
    condition: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Notification(Base):
    """Something an agent should know about a case: assigned to them, a customer answered
    on their case, their case about to breach. One row per (agent, case, kind, turn), so a
    second message or a second sweep in the same turn adds nothing (migration 0019)."""

    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    kind: Mapped[str] = mapped_column(String(16))  # assigned | answered | breach
    turn: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None]
    # When an email digest carried it: a digest never repeats a notification.
    digested_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("user_id", "case_id", "kind", "turn", name="uq_notification_turn"),
        Index("ix_notifications_user", "user_id", "id"),
        # The unread count an open page asks for every second reads only the unread ones
        # (migration 0028); notifications are kept, so an agent's all grow without end.
        Index(
            "ix_notifications_unread",
            "user_id",
            sqlite_where=text("read_at IS NULL"),
            postgresql_where=text("read_at IS NULL"),
        ),
    )


class Team(Base):
    """A group of agents cases are routed to (issue 22). `auto_assign` says whether a case
    routed to it is assigned to a member at once: "off" (the default), "round_robin" or
    "load_balanced" (the member with the fewest open cases)."""

    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    auto_assign: Mapped[str] = mapped_column(String(16), default="off", server_default="off")
    # Round-robin's cursor: the member who got the last case (the next one goes to the
    # member after them by user id), so the turn survives restarts and several workers.
    last_assignee_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TeamMember(Base):
    __tablename__ = "team_members"
    team_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("teams.id"), primary_key=True)
    # "My teams" is read on every claim-next: the user's rows by this index.
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id"), primary_key=True, index=True
    )
    added_at: Mapped[datetime] = mapped_column(default=utcnow)
