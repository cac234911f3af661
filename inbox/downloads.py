"""Headers for serving customer-supplied files (attachments, raw sources) safely.

Whatever a sender claims a file is, the browser must never run it in our origin: anything
but a few raster image types is served as application/octet-stream, always with
`Content-Disposition: attachment`, `nosniff` and a sandboxing CSP. Pure functions.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from inbox.display import strip_bidi

# Types a browser only ever renders as pixels. SVG is not here: it is a document that can
# carry script.
INLINE_IMAGES: dict[str, tuple[str, ...]] = {
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "image/gif": (".gif",),
    "image/webp": (".webp",),
}
_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|;]+')
MAX_FILENAME = 120


def safe_filename(name: str, fallback: str = "download") -> str:
    """A file name with no path, no control characters, no quotes and no leading dots.

    Bidirectional controls go too: a saved "invoice<U+202E>gpj.exe" must not look like a
    picture in the agent's download list.
    """
    base = re.split(r"[\\/]", strip_bidi(name))[-1]
    base = _UNSAFE.sub("_", base).strip().lstrip(".").strip()
    if len(base) > MAX_FILENAME:
        stem, dot, ext = base.rpartition(".")
        base = (
            (stem[: MAX_FILENAME - len(ext) - 1] + dot + ext)
            if dot and len(ext) < 10
            else (base[:MAX_FILENAME])
        )
    return base or fallback


def ascii_filename(name: str) -> str:
    """The plain-ASCII form for the `filename=` parameter old clients read."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    folded = re.sub(r"[^A-Za-z0-9._ =+,()@-]+", "_", folded).strip()
    return folded or "download"


# The leading bytes of each inline raster type (its file signature).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_image(data: bytes) -> str | None:
    """The raster type the bytes themselves are, from their signature; None for anything
    else. A preview goes by this, never by what the sender declared: an "image/png" that is
    really HTML or SVG is not shown inline."""
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def served_type(declared: str) -> str:
    """The Content-Type we serve: a known raster image type, or opaque bytes."""
    kind = declared.split(";", 1)[0].strip().lower()
    return kind if kind in INLINE_IMAGES else "application/octet-stream"


def download_headers(declared_type: str, filename: str, *, inline: bool = False) -> dict[str, str]:
    """Response headers for a customer-supplied file.

    `inline` is honoured only for raster images (for previews); everything else is a
    download. An image whose name ends in something else (say "invoice.html") gets the
    image's extension, so the saved file does not open as a document.
    """
    content_type = served_type(declared_type)
    name = safe_filename(filename)
    if content_type in INLINE_IMAGES and not name.lower().endswith(INLINE_IMAGES[content_type]):
        name += INLINE_IMAGES[content_type][0]
    disposition = "inline" if inline and content_type in INLINE_IMAGES else "attachment"
    return {
        "Content-Type": content_type,
        "Content-Disposition": (
            f'{disposition}; filename="{ascii_filename(name)}"; '
            f"filename*=UTF-8''{quote(name, safe='')}"
        ),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-store",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
