"""Every sentence the form and the status page show a person, in one place.

Kept as one table of English strings keyed by a short name so that the languages part of
issue 21 can turn each into a gettext message id without touching the templates' logic.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

TEXT: Mapping[str, str] = MappingProxyType(
    {
        "form_title": "Contact support",
        "form_intro": (
            "You do not need an account. Tell us what happened and how we can reach you; "
            "a person will answer."
        ),
        "name": "Your name",
        "email_label": "Email address",
        "email_hint": "Where we can write to you, if you have one.",
        "phone_label": "Phone number",
        "phone_hint": "With the country code, for example +44 20 7946 0958.",
        "reach_hint": "Give an email address, a phone number, or both.",
        "what": "What happened?",
        "files": "Attachments (optional)",
        "files_hint": (
            "Up to {count} files of up to {size}: pictures (PNG, JPEG, GIF, WebP) or PDF."
        ),
        "trap": "Leave this field empty",
        "send": "Send",
        "working": "Preparing your message… {percent}%",
        "ready": "Ready to send.",
        "nojs": (
            "This page works without JavaScript. Without it your message needs no "
            "computation, but fewer messages per hour are accepted from one place."
        ),
        "errors_title": "Please correct the following:",
        "err_name": "Please tell us your name (at most {max} characters).",
        "err_reach": "Please give an email address or a phone number, so we can answer you.",
        "err_email": "This does not look like an email address.",
        "err_phone": "Please give the number with its country code, starting with +.",
        "err_text": "Please tell us what happened (at most {max} characters).",
        "err_files_many": "At most {count} attachments, please.",
        "err_file_big": "{name} is larger than {size}.",
        "err_too_large": "This message is too large: each attachment may be at most {size}.",
        "err_file_type": "{name} is not a picture or a PDF.",
        "err_work": "Your browser's proof of work did not check out: please send again.",
        "err_busy": (
            "We are receiving very many messages from your network right now. Please try "
            "again in a few minutes."
        ),
        "received_title": "Message received",
        "received_wait": (
            "We have your message. Your case reference will appear on this page in a "
            "moment; it refreshes by itself."
        ),
        "done_title": "Your case {reference}",
        "done_body": "We have your message. Your case reference is {reference}.",
        "done_eta": "A person will answer {eta}.",
        "done_status": "See where your case stands, and add to it, on its status page:",
        "done_keep": "Keep this link: it is the only key to your case's page.",
        "unverified_note": (
            "We are sending a confirmation to {where} (a link by email, a code by text "
            "message). Until you confirm it, we use it for nothing but this case."
        ),
        "status_title": "Case {reference}",
        "state": "Status",
        "state_new": "Received",
        "state_open": "Waiting for us",
        "state_pending_customer": "Waiting for you",
        "state_resolved": "Resolved",
        "next_answer": "Our next answer is expected {eta}.",
        "late": "We are late: our answer was due {eta}. We are sorry for the wait.",
        "last_in": "Your last message",
        "last_out": "Our last message",
        "never": "none yet",
        "conversation": "Conversation",
        "you": "You",
        "us": "Support",
        "add": "Add a message",
        "your_message": "Your message",
        "add_send": "Add to the case",
        "reopen": "Reopen this case",
        "reopen_hint": "This case is resolved. Writing here reopens it until {until}.",
        "closed_hint": (
            "This case is resolved and can no longer be reopened: please write to us anew."
        ),
        "added": "Your message was added to the case.",
        "not_found_title": "Not found",
        "not_found": "There is no case at this address. Check the link you were sent.",
        "confirm_title": "Confirm your contact details",
        "confirm_ask": "Confirm that {where} is yours, so we can answer you there.",
        "confirm_button": "Confirm",
        "confirm_code": "Confirmation code",
        "confirm_code_hint": "The code we sent by text message.",
        "confirmed": "Thank you: {where} is confirmed.",
        "confirm_bad": "This confirmation is wrong or has expired.",
        "slow_down": "Too many requests from your address: please wait a few minutes.",
    }
)


def t(key: str, **values: object) -> str:
    """The sentence `key`, with its `{placeholders}` filled."""
    return TEXT[key].format(**values) if values else TEXT[key]
