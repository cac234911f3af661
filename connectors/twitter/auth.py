"""Twitter/X credentials from the environment, and whether the connector can run at all.

Kept free of tweepy so the daemon and `parity connectors status` can say why the connector
is disabled on an installation without the library.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass

from connectors.twitter.settings import TwitterSettings
from inbox.secrets import Secret, from_env


@dataclass(frozen=True)
class TwitterCredentials:
    # OAuth 1.0a user context of the support account: DMs and posting need it.
    consumer_key: Secret
    consumer_secret: Secret
    access_token: Secret
    access_token_secret: Secret
    # App-only bearer token, optional: when present, mentions are read with it, which draws
    # on the app's rate limit instead of the user's.
    bearer_token: Secret | None = None


def _user_context_envs(settings: TwitterSettings) -> tuple[str, ...]:
    return (
        settings.consumer_key_env,
        settings.consumer_secret_env,
        settings.access_token_env,
        settings.access_token_secret_env,
    )


def credentials(
    settings: TwitterSettings, environ: Mapping[str, str] | None = None
) -> TwitterCredentials | None:
    env = dict(os.environ if environ is None else environ)
    values = [from_env(name, env) for name in _user_context_envs(settings)]
    if any(v is None for v in values):
        return None
    key, secret, token, token_secret = (v for v in values if v is not None)
    return TwitterCredentials(
        key, secret, token, token_secret, from_env(settings.bearer_token_env, env)
    )


def unavailable_reason(
    settings: TwitterSettings, environ: Mapping[str, str] | None = None
) -> str | None:
    """Why the connector cannot run with these settings and this environment, or None."""
    if importlib.util.find_spec("tweepy") is None:
        return "the tweepy library is not installed"
    if not settings.user_id:
        return "connectors.twitter.user_id is empty: set the support account's numeric user id"
    if not settings.user_id.isdigit():
        return f"connectors.twitter.user_id {settings.user_id!r} is not a numeric X user id"
    env = os.environ if environ is None else environ
    missing = [name for name in _user_context_envs(settings) if not env.get(name)]
    if missing:
        return (
            "credentials missing: environment variable"
            + ("s " if len(missing) > 1 else " ")
            + ", ".join(missing)
            + " (OAuth 1.0a user context of the support account, needed for DMs and replies)"
        )
    return None
