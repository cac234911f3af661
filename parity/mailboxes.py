"""`parity mailbox authorize ACCOUNT` and `parity mailbox status`: OAuth2 grants of mailboxes.

Authorizing runs the device-code flow (prints a URL and a code to enter there) or the
authorization-code flow with PKCE (prints a URL; a one-shot listener on 127.0.0.1 takes
the redirect), then stores the grant encrypted in the store, where every instance finds it
(connectors/oauth.py, inbox/tokens.py). Exit codes: 0 authorized, 1 the provider refused or
nobody answered in time, 2 no such account, 75 the provider or the store cannot be reached,
78 PARITY_SECRET_KEY is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from connectors import oauth
from inbox import tokens
from parity.settings import Settings

EX_TEMPFAIL = 75
EX_CONFIG = 78


def authorize(
    settings: Settings,
    engine: Engine,
    name: str,
    *,
    flow: str | None = None,
    port: int | None = None,
    show: Callable[[str], None] = print,
    environ: dict[str, str] | None = None,
) -> int:
    account = settings.oauth.account(name)
    if account is None:
        known = ", ".join(a.name for a in settings.oauth.accounts) or "none configured"
        print(f"parity: no [[oauth.accounts]] entry named {name!r} ({known})", file=sys.stderr)
        return 2
    try:
        cipher = tokens.Cipher(environ)
    except tokens.KeyMissing as exc:
        print(
            f"parity: {exc}: set it to a long random value (`openssl rand -hex 32`) "
            "in the environment of every instance",
            file=sys.stderr,
        )
        return EX_CONFIG
    client = oauth.Client.of(account, environ)
    if account.client_secret_env and client.secret is None:
        print(f"parity: {account.client_secret_env} is not set", file=sys.stderr)
        return EX_CONFIG
    chosen = flow or account.default_flow
    try:
        if chosen == "device":
            granted = oauth.device_flow(client, show)
        else:
            granted = oauth.code_flow(client, show, port=port)
    except oauth.OAuthError as exc:
        print(f"parity: not authorized: {oauth.provider_reason(exc)}", file=sys.stderr)
        return 1
    except oauth.Unreachable as exc:
        print(f"parity: the provider cannot be reached: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    tokens.save_authorized(
        engine,
        cipher,
        account=account.name,
        provider=account.provider,
        refresh_token=granted.refresh_token,
        access_token=granted.access_token,
        expires_at=granted.expires_at,
        scopes=granted.scopes,
    )
    show(
        f"authorized {account.name} ({account.provider}); the grant is stored encrypted and "
        "renewed before it expires"
    )
    return 0


def status_rows(settings: Settings, engine: Engine) -> list[dict[str, Any]]:
    """Every configured account with its stored grant's state (never its tokens)."""
    stored = tokens.statuses(engine)
    rows = []
    for account in settings.oauth.accounts:
        grant = stored.get(account.name)
        rows.append(
            {
                "account": account.name,
                "provider": account.provider,
                "status": grant["status"] if grant else "not authorized",
                "reason": grant["reason"] if grant else None,
                "access_expires_at": grant["access_expires_at"] if grant else None,
                "refreshed_at": grant["refreshed_at"] if grant else None,
                "refreshes": grant["refreshes"] if grant else 0,
            }
        )
    return rows


def add_parser(sub: Any, authorize_cmd: Any, status_cmd: Any) -> None:
    mailbox = sub.add_parser(
        "mailbox", help="OAuth2 sign-in of mailboxes (Google, Microsoft, generic)"
    ).add_subparsers(dest="mailbox_command", required=True)
    auth = mailbox.add_parser(
        "authorize", help="sign a mailbox in (device code or browser) and store the grant"
    )
    auth.add_argument("account", help="an [[oauth.accounts]] name")
    auth.add_argument(
        "--flow",
        choices=oauth.FLOWS,
        help="device: a code to enter on another device; code: a browser on this machine "
        "(default: the provider's: code for Google, device for Microsoft)",
    )
    auth.add_argument(
        "--port", type=int, help="port of the local redirect listener (default: redirect_port)"
    )
    auth.set_defaults(func=authorize_cmd)
    status = mailbox.add_parser("status", help="each OAuth account's grant: ok or auth failed")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=status_cmd)
