"""How cases are named in text: references, subject tags and our own Message-IDs.

Pure formatting and matching, shared by the normalizer (which threads by them) and the
agent inbox (which writes them into replies and searches for them), so both sides always
agree on the format.
"""

from __future__ import annotations

import re

_REFERENCE = re.compile(r"(?<![\w-])C-(\d{6,12})(?!\d)")


def format_reference(case_id: int) -> str:
    return f"C-{case_id:06d}"


def case_tag(reference: str, token: str) -> str:
    """The subject tag of our outbound mail: the reference with the token that proves it."""
    return f"[{reference} #{token}]"


def own_message_id(reference: str, token: str, unique: str, domain: str) -> str:
    """The Message-ID (without angle brackets) of our outbound mail for a case.

    It carries the case's token, so a customer's reply that keeps only In-Reply-To or
    References still threads back, and only into this case.
    """
    return f"parity.{reference}.{token}.{unique}@{domain}"


def bare_message_id(value: str) -> str:
    """A Message-ID as the outbox keeps it and a delivery report is matched by: without its
    angle brackets. Every side that writes or compares our ids goes through this one form,
    so a DSN names the same string the outbox row holds (the brackets are the relay's to
    write, on the wire only)."""
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text


def find_references(*texts: str) -> list[str]:
    """Case references cited in the texts, first mention first."""
    found: dict[str, None] = {}
    for text in texts:
        for match in _REFERENCE.finditer(text):
            found[format_reference(int(match.group(1)))] = None
    return list(found)
