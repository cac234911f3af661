"""The `web` channel's way out: what it sends is delivered by being on its pages.

A new case's acknowledgement is what its answer page shows (the reference and the promised
time, read back from the acknowledgement's audit row). An agent's reply is already a
message of the case (inbox/casework.py stores it with the outbox row); the status page shows
every reply addressed to the identity that opened the case (connectors/webform/status.py).
Sending therefore writes nothing anywhere else: it marks the row sent. Nothing goes to an
address a form typed unless it was confirmed and the agent replies there on its own channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.outbox import Failure
from connectors.webform.settings import WebformSettings
from inbox.outbox import Claimed
from normalizer.ack_plan import AckCase, AckOut, AckRoute

CHANNEL = "web"


def ack_route(case: AckCase, _state: Mapping[str, Any]) -> AckOut | str:
    """A new `web` case's acknowledgement: what its answer page says, delivered by being on
    the page. Queued like every channel's, so the case's promise (`eta_at`) is audited and
    the manager's report counts the form like any channel; nothing is sent anywhere."""
    if not case.acknowledge:
        return "imported history is not acknowledged"
    if not case.handle:
        return "no submission to answer"
    return AckOut(
        recipient=case.handle,
        body=f"We have your message: case {case.reference}. A person will answer {case.eta_words}.",
        payload={"shown_on": "answer page"},
    )


def ack_routes(_settings: WebformSettings) -> dict[str, AckRoute]:
    """The connector's entry of the ack-route table (connectors/registry.py)."""
    return {CHANNEL: AckRoute(ack_route)}


class StatusPageSender:
    channel = CHANNEL
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
