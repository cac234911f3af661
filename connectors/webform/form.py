"""What a person typed into the form, checked. Pure functions over plain values.

Every inbound byte is hostile: each field is bounded before it is looked at, and an error
names its field so the page can tie it to the input (aria-describedby).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from connectors.webform.abuse import sniff
from connectors.webform.text import t

MAX_NAME = 200
MAX_EMAIL = 254
MAX_FILENAME = 200
_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"\\]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
_PHONE_JUNK = re.compile(r"[\s().-]")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass(frozen=True)
class Upload:
    filename: str
    declared_type: str
    data: bytes


@dataclass(frozen=True)
class Limits:
    """What a message may hold: the form's and the status page's alike (the settings'
    max_text_chars, max_attachments, max_attachment_bytes, attachment_types)."""

    max_text: int
    max_files: int
    max_file_bytes: int
    types: list[str]


@dataclass(frozen=True)
class Checked:
    """The form's fields as stored, or the errors by field name."""

    name: str = ""
    email: str = ""
    phone: str = ""
    text: str = ""
    files: tuple[tuple[str, str, bytes], ...] = ()  # (filename, sniffed type, data)
    errors: dict[str, str] = field(default_factory=dict)


def clean_line(value: str, limit: int) -> str:
    """One line of text: controls and surrounding space gone, at most `limit` characters."""
    kept = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in value[: limit * 4])
    return " ".join(kept.split())[: limit + 1]


def clean_text(value: str, limit: int) -> str:
    """Free text: line breaks and tabs kept, other controls gone."""
    kept = "".join(
        c for c in value[: limit * 4] if c in "\n\t" or unicodedata.category(c)[0] != "C"
    )
    return kept.replace("\r\n", "\n").strip()[: limit + 1]


def email_of(value: str) -> str | None:
    """The address, lower-cased, when it has an address's shape (no display names)."""
    value = value.strip()
    if len(value) > MAX_EMAIL or _EMAIL.fullmatch(value) is None:
        return None
    return value.lower()


def phone_of(value: str) -> str | None:
    """The number in E.164 when it is one (+ country code and digits; spaces, dots, dashes
    and brackets as people write them are dropped)."""
    digits = _PHONE_JUNK.sub("", value.strip())
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    return digits if _E164.fullmatch(digits) else None


def human_size(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MB" if size >= 1024 * 1024 else f"{size // 1024} KB"


def check_form(
    *, name: str, email: str, phone: str, text: str, uploads: list[Upload], limits: Limits
) -> Checked:
    errors: dict[str, str] = {}
    name = clean_line(name, MAX_NAME)
    if not name or len(name) > MAX_NAME:
        errors["name"] = t("err_name", max=MAX_NAME)
    found_email = found_phone = ""
    if email.strip():
        parsed = email_of(email)
        if parsed is None:
            errors["email"] = t("err_email")
        else:
            found_email = parsed
    if phone.strip():
        number = phone_of(phone[:64])
        if number is None:
            errors["phone"] = t("err_phone")
        else:
            found_phone = number
    if not email.strip() and not phone.strip():
        errors["email"] = t("err_reach")
    rest = check_followup(text=text, uploads=uploads, limits=limits)
    errors.update(rest.errors)
    body, files = rest.text, list(rest.files)
    if errors:
        return Checked(
            name=name, email=email[:MAX_EMAIL], phone=phone[:64], text=body, errors=errors
        )
    return Checked(name=name, email=found_email, phone=found_phone, text=body, files=tuple(files))


def check_followup(*, text: str, uploads: list[Upload], limits: Limits) -> Checked:
    """The text and files of a message: the form's, or one added on the status page."""
    max_text, max_files = limits.max_text, limits.max_files
    max_file_bytes, types = limits.max_file_bytes, limits.types
    errors: dict[str, str] = {}
    body = clean_text(text, max_text)
    if not body or len(body) > max_text:
        errors["text"] = t("err_text", max=max_text)
    files: list[tuple[str, str, bytes]] = []
    real = [u for u in uploads if u.filename or u.data]
    if len(real) > max_files:
        errors["files"] = t("err_files_many", count=max_files)
    else:
        for upload in real:
            filename = clean_line(upload.filename, MAX_FILENAME).replace("/", "_") or "file"
            kind = sniff(upload.data)
            if len(upload.data) > max_file_bytes:
                errors["files"] = t("err_file_big", name=filename, size=human_size(max_file_bytes))
            elif kind is None or kind not in types:
                errors["files"] = t("err_file_type", name=filename)
            else:
                files.append((filename, kind, upload.data))
    return Checked(text=body, files=tuple(files), errors=errors)
