"""The [connectors.twitter] section: mentions and DMs of the support account."""

from __future__ import annotations

import string

from pydantic import Field, field_validator

from inbox.channels import CHANNEL_FACTS
from inbox.config import Strict
from inbox.i18n import N_


class TwitterSettings(Strict):
    enabled: bool = False
    api_base_url: str = "https://api.twitter.com"
    user_id: str = ""
    mentions_poll_seconds: int = Field(default=60, ge=1)
    dm_poll_seconds: int = Field(default=60, ge=1)
    bearer_token_env: str = "TWITTER_BEARER_TOKEN"
    consumer_key_env: str = "TWITTER_CONSUMER_KEY"
    consumer_secret_env: str = "TWITTER_CONSUMER_SECRET"
    access_token_env: str = "TWITTER_ACCESS_TOKEN"
    access_token_secret_env: str = "TWITTER_ACCESS_TOKEN_SECRET"
    public_replies: bool = True
    # --- issue 9: the Twitter/X connector ---
    # DM events have no since_id: each poll re-reads this far behind the newest event seen,
    # so an event the API lists late is still found; intake drops the repeats.
    dm_overlap_seconds: int = Field(default=300, ge=0)
    # After a 402 "credits depleted" the connector pauses this long before trying again.
    credits_retry_seconds: int = Field(default=3600, ge=1)
    # A standby instance retries the poller lock this often: the takeover time after the
    # active instance dies (plus database.keepalive_s * 2 when its whole host vanished).
    standby_retry_seconds: int = Field(default=15, ge=1)
    # The longest a reply's files sent by DM take, together, to upload and for X to process
    # them (GIFs and videos) before the rest of the reply is given up and retried later. At
    # most 300, half the outbox's default sending lease; with the connector enabled, the
    # settings refuse a value that is not at least LEASE_MARGIN_S below `[outbox]
    # lease_seconds`, so no other instance takes a reply still being sent.
    media_processing_timeout_s: int = Field(default=120, ge=1, le=300)
    # Acknowledgement texts. Placeholders: {reference}, {eta}; the DM text may also use {tag},
    # the reference with the case's secret token, and {status_url}, the case's status page
    # with that token. A public reply never carries anything else. The defaults are said in
    # the case's language (inbox/i18n.py); a text the operator wrote is sent as written.
    public_ack_template: str = N_(
        "Thanks, we have this as case {reference} and expect to reply {eta}. "
        "Please send us a Direct Message to continue in private; "
        "never post account details here."
    )
    dm_ack_template: str = N_(
        "Thanks for your message. We have opened case {reference} and expect to reply "
        "{eta}. Reply here to add anything. If you email us instead, keep {tag} in the "
        "subject so it reaches the same case."
    )

    @field_validator("public_ack_template")
    @classmethod
    def _public_template(cls, value: str) -> str:
        return _template(
            value, allowed={"reference", "eta"}, limit=CHANNEL_FACTS["twitter"].max_public_text
        )

    @field_validator("dm_ack_template")
    @classmethod
    def _dm_template(cls, value: str) -> str:
        return _template(
            value,
            allowed={"reference", "eta", "tag", "status_url"},
            limit=CHANNEL_FACTS["twitter"].max_text,
        )


def _template(value: str, *, allowed: set[str], limit: int) -> str:
    """A template may use only `allowed` placeholders, so nothing personal can be put in."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc}") from exc
    unknown = fields - allowed
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{sorted(unknown)[0]}}}; allowed: "
            + ", ".join(f"{{{a}}}" for a in sorted(allowed))
        )
    if "reference" not in fields:
        raise ValueError("the template must contain {reference}")
    # Filled in, a reference is ~12 characters and an ETA at most ~70 ("by Wednesday 30
    # September, 13:00 (" and the longest time zone name, normalizer/acks.py describe_eta).
    if len(value) > limit - 90:
        raise ValueError(f"too long: filled in, it must fit in {limit} characters")
    return value


# What one attempt may still take after media_processing_timeout_s has run out: the last
# wait passes the deadline by up to a second (connectors/twitter/api.py's floor), then one
# request begun before it (a STATUS, an upload's chunk or its FINALIZE; no other starts
# after it) and the DM itself, each bounded by the X client's timeouts (10 s to connect, 30 s
# to read): 81 s, and 90 with room for the attempt's database writes.
LEASE_MARGIN_S = 90


def lease_problem(section: TwitterSettings, lease_seconds: int) -> str | None:
    """Why the X connector's wait for media processing does not fit in the outbox's sending
    lease, or None: past the lease a row still being sent counts as a dead process's."""
    if not section.enabled:
        return None
    timeout = section.media_processing_timeout_s
    if timeout + LEASE_MARGIN_S <= lease_seconds:
        return None
    fixes = [f"raise outbox.lease_seconds to {timeout + LEASE_MARGIN_S} or more"]
    if lease_seconds - LEASE_MARGIN_S >= 1:
        fixes.append(f"lower the timeout to {lease_seconds - LEASE_MARGIN_S} or less")
    return (
        f"connectors.twitter.media_processing_timeout_s ({timeout}) must be at least "
        f"{LEASE_MARGIN_S} s below outbox.lease_seconds ({lease_seconds}), or a reply still "
        f"uploading its files to X or waiting for X's processing outlives its sending lease: "
        f"{' or '.join(fixes)}"
    )
