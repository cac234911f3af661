"""Pure functions behind the pages' trust marks: where a login may send the browser, and how
a mail's sender authentication reads on the case page."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULT_NEXT = "/queue"
MAX_NEXT = 2048
# Printable ASCII but the backslash: browsers treat "\" as "/" in http(s) URLs and drop tabs
# and newlines, so "/\evil.example/" and "/<TAB>/evil.example/" both mean //evil.example.
# Spaces, controls and non-ASCII (full-width solidus, ideographic space) are refused too.
_PLAIN = re.compile(r"[!-\[\]-~]+")
_UNQUOTE_ROUNDS = 3


def _hostile(target: str) -> bool:
    path = target.split("?", 1)[0].split("#", 1)[0]
    # Dot segments: "/..//evil.example" resolves to the path "//evil.example", which a later
    # hop may take for a host. No link of ours has them.
    dots = any(segment in (".", "..") for segment in path.split("/"))
    return (
        target.startswith("//")
        or "\\" in target
        or dots
        or any(ord(c) < 0x20 or c == "\x7f" for c in target)
    )


def safe_next(target: str | None, default: str = DEFAULT_NEXT) -> str:
    """`target` if it is a path on our own origin, else `default`.

    Only a path-absolute reference qualifies: "/" then not another "/" or "\\", no scheme, no
    host, nothing but printable ASCII. The percent-decoded forms must pass as well, so a
    value decoded once more by some later hop ("/%2F%2Fevil.example") cannot become a host.
    """
    if not target or len(target) > MAX_NEXT or not _PLAIN.fullmatch(target):
        return default
    if not target.startswith("/") or _hostile(target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    decoded = target
    for _ in range(_UNQUOTE_ROUNDS):
        decoded, before = unquote(decoded), decoded
        if _hostile(decoded):
            return default
        if decoded == before:
            break
    else:
        return default  # still changing: encoded more deeply than any link of ours
    return target


# --- sender authentication -------------------------------------------------------------------

_RESULT = re.compile(r"[a-z]{1,16}")
_DOMAIN = re.compile(r"[A-Za-z0-9.-]{1,253}")
_VERDICTS = ("pass", "fail", "none", "temperror")
_PREFIX = {
    "pass": "Sender",
    "fail": "Sender not authenticated",
    "none": "Sender not authenticated",
    "temperror": "Sender could not be checked",
}


def _result(auth: Mapping[str, Any], key: str) -> str:
    value = auth.get(key)
    if value is None:
        return "none"
    text = str(value).lower()
    return text if _RESULT.fullmatch(text) else "unknown"


def auth_line(auth: Any) -> dict[str, str] | None:
    """One compact line about a message's sender authentication, and its state (pass, fail,
    none, temperror) for styling; None when the message was not checked.

    DMARC leads, since it is the check about the From domain the agent sees; when it did not
    pass, DKIM and SPF follow, so the agent sees what did or did not hold.
    """
    if not isinstance(auth, Mapping):
        return None
    verdict = _result(auth, "verdict")
    state = verdict if verdict in _VERDICTS else "none"
    dmarc = _result(auth, "dmarc")
    parts = [f"DMARC {dmarc}"]
    if dmarc != "pass":
        parts += [f"DKIM {_result(auth, 'dkim')}", f"SPF {_result(auth, 'spf')}"]
    arc = _result(auth, "arc")
    if arc != "none":
        parts.append(f"ARC {arc}")
    text = f"{_PREFIX[state]}: {', '.join(parts)}"
    domain = auth.get("from_domain")
    if isinstance(domain, str) and _DOMAIN.fullmatch(domain):
        text += f" ({domain.lower()})"
    return {"text": text, "state": state}
