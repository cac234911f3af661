"""A voicemail is one message however many callbacks describe it.

A telephony channel delivers one voicemail in several callbacks (the recording, later its
transcript), each parsed to a message with the same key and `meta["voicemail"]`. The worker
folds a later one into the stored message with `merge_voicemail` (it is a duplicate by its
key). Pure, and channel-neutral: the channel's parser (connectors/twilio/parse.py) builds
the text with `voicemail_text` too, so both agree on what agents read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def voicemail_text(vm: Mapping[str, Any]) -> str:
    """The message text agents read (and search finds) for what is known of a voicemail."""
    lines = ["Voicemail"]
    if vm.get("duration_s") is not None:
        lines[0] += f" ({vm['duration_s']} s)"
    if vm.get("transcript"):
        lines.append(f"Transcript: {vm['transcript']}")
    elif vm.get("transcription_status") and vm["transcription_status"] != "completed":
        lines.append(f"Transcript: not available ({vm['transcription_status']})")
    else:
        lines.append("Transcript: pending")
    if vm.get("recording_url"):
        lines.append(f"Recording: {vm['recording_url']}")
    return "\n".join(lines)


def merge_voicemail(
    stored: Mapping[str, Any], incoming: Mapping[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """The stored voicemail message's new text and meta with another callback folded in,
    or None when it adds nothing (a retried callback). Known values are kept: a later
    callback fills in, never blanks out."""
    old = dict(stored.get("voicemail") or {})
    new = {k: v for k, v in (incoming.get("voicemail") or {}).items() if v not in (None, "")}
    merged = {**old, **{k: v for k, v in new.items() if k not in old or not old[k]}}
    if merged == old:
        return None
    return voicemail_text(merged), {**stored, "voicemail": merged}
