"""Every sentence the form and the status page show a person, in one place.

One table of English strings keyed by a short name; each string is a gettext message id
(marked with N_ for `pybabel extract`), translated when it is shown, in the language of the
page being served (`inbox.i18n.current`, set by the handler).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from inbox.i18n import N_, current, gettext_in

TEXT: Mapping[str, str] = MappingProxyType(
    {
        "form_title": N_("Contact support"),
        "form_intro": N_(
            "You do not need an account. Tell us what happened and how we can reach you; "
            "a person will answer."
        ),
        "name": N_("Your name"),
        "email_label": N_("Email address"),
        "email_hint": N_("Where we can write to you, if you have one."),
        "phone_label": N_("Phone number"),
        "phone_hint": N_("With the country code, for example +44 20 7946 0958."),
        "reach_hint": N_("Give an email address, a phone number, or both."),
        "what": N_("What happened?"),
        "files": N_("Attachments (optional)"),
        "files_hint": N_(
            "Up to {count} files of up to {size}: pictures (PNG, JPEG, GIF, WebP) or PDF."
        ),
        "trap": N_("Leave this field empty"),
        "send": N_("Send"),
        "working": N_("Preparing your message… {percent}%"),
        "ready": N_("Ready to send."),
        "nojs": N_(
            "This page works without JavaScript. Without it your message needs no "
            "computation, but fewer messages per hour are accepted from one place."
        ),
        "errors_title": N_("Please correct the following:"),
        "err_name": N_("Please tell us your name (at most {max} characters)."),
        "err_reach": N_("Please give an email address or a phone number, so we can answer you."),
        "err_email": N_("This does not look like an email address."),
        "err_phone": N_("Please give the number with its country code, starting with +."),
        "err_text": N_("Please tell us what happened (at most {max} characters)."),
        "err_files_many": N_("At most {count} attachments, please."),
        "err_file_big": N_("{name} is larger than {size}."),
        "err_too_large": N_("This message is too large: each attachment may be at most {size}."),
        "err_file_type": N_("{name} is not a picture or a PDF."),
        "err_work": N_("Your browser's proof of work did not check out: please send again."),
        # The form token's refusals (abuse.TokenError keys).
        "token_missing": N_("The form's security token is missing: please reload the page."),
        "token_foreign": N_("The form's security token is not ours: please reload the page."),
        "token_expired": N_(
            "The form was open too long and its security token expired: please send it again."
        ),
        "too_fast": N_(
            "The form was sent faster than a person can fill it in: please wait a moment and "
            "send it again."
        ),
        "err_busy": N_(
            "We are receiving very many messages from your network right now. Please try "
            "again in a few minutes."
        ),
        "received_title": N_("Message received"),
        "received_wait": N_(
            "We have your message. Your case reference will appear on this page in a "
            "moment; it refreshes by itself."
        ),
        "done_title": N_("Your case {reference}"),
        "done_body": N_("We have your message. Your case reference is {reference}."),
        "done_eta": N_("A person will answer {eta}."),
        "done_status": N_("See where your case stands, and add to it, on its status page:"),
        "done_keep": N_("Keep this link: it is the only key to your case's page."),
        "unverified_note": N_(
            "We are sending a confirmation to {where} (a link by email, a code by text "
            "message). Until you confirm it, we use it for nothing but this case."
        ),
        "status_title": N_("Case {reference}"),
        "state": N_("Status"),
        "state_new": N_("Received"),
        "state_open": N_("Waiting for us"),
        "state_pending_customer": N_("Waiting for you"),
        "state_resolved": N_("Resolved"),
        "next_answer": N_("Our next answer is expected {eta}."),
        "late": N_("We are late: our answer was due {eta}. We are sorry for the wait."),
        "last_in": N_("Your last message"),
        "last_out": N_("Our last message"),
        "never": N_("none yet"),
        "conversation": N_("Conversation"),
        "you": N_("You"),
        "us": N_("Support"),
        "add": N_("Add a message"),
        "your_message": N_("Your message"),
        "add_send": N_("Add to the case"),
        "reopen": N_("Reopen this case"),
        "reopen_hint": N_("This case is resolved. Writing here reopens it until {until}."),
        "closed_hint": N_(
            "This case is resolved and can no longer be reopened: please write to us anew."
        ),
        "added": N_("Your message was added to the case."),
        "not_found_title": N_("Not found"),
        "not_found": N_("There is no case at this address. Check the link you were sent."),
        "confirm_title": N_("Confirm your contact details"),
        "confirm_ask": N_("Confirm that {where} is yours, so we can answer you there."),
        "confirm_button": N_("Confirm"),
        "confirm_code": N_("Confirmation code"),
        "confirm_code_hint": N_("The code we sent by text message."),
        "confirmed": N_("Thank you: {where} is confirmed."),
        "confirm_bad": N_("This confirmation is wrong or has expired."),
        # The confirmation Parity sends to the address or number given on the form, in the
        # case's language (connectors/webform/confirm.py).
        "confirm_sms": N_(
            "Your confirmation code for case {reference} is {code}. Type it at {link}"
        ),
        "confirm_mail_subject": N_("Confirm your address for case {reference}"),
        "confirm_mail_body": N_(
            "Someone, we hope you, wrote to us through our contact form and gave this address "
            "(case {reference}).\n\nIf it was you, confirm it here:\n{link}\n\nIf it was not "
            "you, ignore this message: nothing more will be sent."
        ),
        "language": N_("Language"),
        "slow_down": N_("Too many requests from your address: please wait a few minutes."),
    }
)


def t_in(lang: str, key: str, **values: object) -> str:
    """The sentence `key` in `lang` (a message sent, not a page served), filled in."""
    return gettext_in(lang, TEXT[key]).format(**values)


def t(key: str, **values: object) -> str:
    """The sentence `key` in the page's language, with its `{placeholders}` filled."""
    text = gettext_in(current.get(), TEXT[key])
    return text.format(**values) if values else text
