"""Dispatch stored raw input to its channel's parser."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from inbox.channels import channels_of
from inbox.mailhtml import view
from normalizer.mail import Caps, parse_email
from normalizer.message import InboundMessage, ParseError
from normalizer.reddit import parse_reddit
from normalizer.storable import storable
from normalizer.twilio import parse_twilio
from normalizer.twitter import parse_twitter


def parse(
    channel: str,
    raw: bytes,
    *,
    envelope: Mapping[str, Any],
    received_at: datetime,
    caps: Caps,
) -> InboundMessage:
    if channel == "email":
        message = parse_email(raw, envelope=envelope, received_at=received_at, caps=caps)
    elif channel == "reddit":
        if len(raw) > caps.max_bytes:
            raise ParseError(f"Reddit item is {len(raw)} bytes, over the cap of {caps.max_bytes}")
        message = parse_reddit(raw, envelope=envelope, received_at=received_at)
    elif channel == "twitter":
        message = parse_twitter(raw, received_at=received_at)
    elif channel in channels_of("twilio"):
        if len(raw) > caps.max_bytes:
            raise ParseError(f"Twilio post is {len(raw)} bytes, over the cap of {caps.max_bytes}")
        message = parse_twilio(raw, envelope=envelope, received_at=received_at)
    else:
        raise ParseError(f"no parser for channel {channel!r}")
    if message.html is not None:
        # Made here, in the parse worker under its budget, so no page ever parses raw HTML.
        message = replace(message, html_view=view(message.html))
    # Every channel's message is fitted to the store's columns the same way.
    return storable(message)
