"""Dispatch stored raw input to its channel's parser, found in a parser table.

The normalizer names no channel's parser but its own email pipeline's (`parse_mail`: the
SMTP and IMAP connectors both store raw RFC 5322 bytes, and normalizer/mail.py with dsn.py
and mailauth.py is the one pipeline for them). Every other parser lives in its connector's
package (connectors/<name>/parse.py); the composition root builds the table from the
connector registry (connectors/registry.py `parsers`) and hands it to the worker, so the
dependencies still point one way: parity -> connectors -> normalizer -> inbox.

A parser is a module-level function: the table travels to the parse children
(normalizer/pool.py) by pickling, which names a function by module and name, and the child
imports its module at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from inbox.mailhtml import view
from normalizer.language import detect
from normalizer.mail import Caps, parse_email
from normalizer.message import InboundMessage, ParseError
from normalizer.storable import storable


class Parser(Protocol):
    """Raw bytes of one channel to a message; pure, and raises ParseError for bad input."""

    def __call__(
        self, raw: bytes, *, envelope: Mapping[str, Any], received_at: datetime, caps: Caps
    ) -> InboundMessage: ...


# channel -> its parser (channels of one connector may share one).
Parsers = Mapping[str, Parser]


def check_size(raw: bytes, caps: Caps, what: str) -> None:
    """The size cap every channel's parser checks first (email's has its own, finer caps)."""
    if len(raw) > caps.max_bytes:
        raise ParseError(f"{what} is {len(raw)} bytes, over the cap of {caps.max_bytes}")


def parse_mail(
    raw: bytes, *, envelope: Mapping[str, Any], received_at: datetime, caps: Caps
) -> InboundMessage:
    """The email channel's parser, the one both email connectors declare."""
    return parse_email(raw, envelope=envelope, received_at=received_at, caps=caps)


def parse(
    channel: str,
    raw: bytes,
    *,
    envelope: Mapping[str, Any],
    received_at: datetime,
    caps: Caps,
    parsers: Parsers,
) -> InboundMessage:
    parser = parsers.get(channel)
    if parser is None:
        raise ParseError(f"no parser for channel {channel!r}")
    message = parser(raw, envelope=envelope, received_at=received_at, caps=caps)
    if message.html is not None:
        # Made here, in the parse worker under its budget, so no page ever parses raw HTML.
        message = replace(message, html_view=view(message.html))
    if message.language is None:
        # Here too, under the parse budget, on a bounded part of the text.
        message = replace(message, language=detect(message.text))
    # Every channel's message is fitted to the store's columns the same way.
    return storable(message)
