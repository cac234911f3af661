"""What the Reddit poller (intake.py) and sender (outbox.py)
both need to read Reddit's refusals: a leaf module, so the two never import each other.
"""

from __future__ import annotations

from connectors.poller import retry_after


class AuthFailed(Exception):
    """Reddit refused our credentials: polling stops until a restart with working ones."""


def auth_failure(exc: BaseException) -> str | None:
    """A clear reason when `exc` means our credentials are refused; None otherwise."""
    from prawcore import exceptions as core

    if isinstance(exc, core.OAuthException):
        hint = " (check the username and password)" if exc.error == "invalid_grant" else ""
        return f"authentication failed: {exc.error}{hint}"
    if isinstance(exc, core.InvalidToken | core.InsufficientScope):
        return f"authentication failed: {type(exc).__name__}"
    if isinstance(exc, core.ResponseException) and not isinstance(exc, core.TooManyRequests):
        response = exc.response
        if response.status_code == 401 and "access_token" in (response.url or ""):
            return "authentication failed: the client id or secret was refused (HTTP 401)"
    return None


# How long to wait out a 429 (Retry-After, else the window reset, else backoff): the poller
# base's rule, under the name the outbox and the tests know.
retry_wait = retry_after
