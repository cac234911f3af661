"""The `web` channel's way out: a reply is delivered by being on the case's status page.

The agent's reply is already a message of the case (inbox/casework.py stores it with the
outbox row); the status page shows every reply addressed to the identity that opened the
case (connectors/webform/status.py). Sending therefore writes nothing anywhere else: it
marks the row sent, and the page shows it from then on. Nothing goes to an address a form
typed unless it was confirmed and the agent replies there on its own channel.
"""

from __future__ import annotations

from connectors.outbox import Failure
from inbox.outbox import Claimed


class StatusPageSender:
    channel = "web"
    # Sending again shows the same message once: the page reads the case, not the outbox.
    resend_safe = True

    def assign_id(self, row_id: int, reference: str | None, token: str | None) -> str | None:
        return None

    def send(self, row: Claimed) -> str | None:
        if row.case_id is None:
            raise ValueError("a status-page reply needs its case")
        return f"status-page:{row.id}"

    def classify(self, exc: BaseException) -> tuple[bool, str] | Failure:
        return False, f"{type(exc).__name__}: {exc}"
