"""Which advisory locks a message's threading takes: pure functions of the parsed message.

Threading reads before it writes: is this message stored already (dedup key), whose is
this handle (identity), which case do these headers, references and tokens name, which
cases of this person are open. Two messages that could read the same answer and both act
on it must run one after the other; messages that share none of these can run at once.
So a message locks a key per thing it looks up (docs/architecture/threading.md):

- ("identity", kind, handle): the sender's identity, created by the first of two messages;
- ("dedup", key): the message itself, stored once however many copies arrive at once;
- ("ref", id): each Message-ID or platform conversation it names or carries, so a reply
  and the message it replies to are filed in order;
- ("case", reference): each case reference or token tag it cites;

and, once the identities are read, ("contact", id) for the sender's contact, because two
handles of one person (linked by an agent) look up the same open cases.
"""

from __future__ import annotations

from collections.abc import Iterable

from inbox.db import THREADING_KEYS_MAX, lock_key
from normalizer.message import InboundMessage
from normalizer.threads import find_references, find_tokens


def identity_of(message: InboundMessage) -> tuple[str, str] | None:
    """(kind, handle) of the sender's identity, or None for nobody in particular."""
    sender = message.sender
    if sender.anonymous or not sender.handle:
        return None
    return sender.kind, sender.handle


def message_keys(message: InboundMessage) -> frozenset[int]:
    """The first-phase lock keys of one message (everything but its contact)."""
    parts: list[tuple[str, ...]] = [("dedup", message.dedup_key)]
    identity = identity_of(message)
    if identity is not None:
        parts.append(("identity", *identity))
    thread = message.thread
    refs = {*message.own_refs, *thread.in_reply_to, *thread.references, *thread.conversation}
    parts.extend(("ref", ref) for ref in refs)
    header_ids = [*thread.in_reply_to, *thread.references]
    cited = {ref for ref, _token in find_tokens((message.subject, message.text), header_ids)}
    cited.update(find_references(message.subject, message.text))
    parts.extend(("case", reference) for reference in cited)
    return frozenset(lock_key(*p) for p in parts)


def contact_key(contact_id: int) -> int:
    return lock_key("contact", str(contact_id))


def keys_at_most(first: frozenset[int], messages: Iterable[InboundMessage]) -> int:
    """A bound on the keys a transaction filing `messages` locks over both phases.

    The first phase locks `first`; the second at most one contact per distinct sender
    identity (an identity has one contact). Known before any lock is taken, so the
    transaction's mode (inbox/db.py ThreadingLocks) is chosen once.
    """
    senders = {i for i in map(identity_of, messages) if i is not None}
    return len(first) + len(senders)


def lock_groups(
    keyed: Iterable[tuple[int, frozenset[int], tuple[str, str] | None]],
    *,
    limit: int = THREADING_KEYS_MAX,
) -> list[list[int]]:
    """Consecutive groups of items whose keys together stay within `limit`.

    Each item is (item, its first-phase keys, its sender's identity or None); a sender's
    identity counts once per group for the contact key its second phase may add. Each
    group is one transaction. An item over `limit` by itself is a group alone (it then
    takes the exclusive threading lock); order is kept, so a batch is still filed in
    intake order.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    union: set[int] = set()
    senders: set[tuple[str, str]] = set()
    for item, keys, sender in keyed:
        more = {sender} if sender is not None else set()
        if current and len(union | keys) + len(senders | more) > limit:
            groups.append(current)
            current, union, senders = [], set(), set()
        current.append(item)
        union |= keys
        senders |= more
    if current:
        groups.append(current)
    return groups
