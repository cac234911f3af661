"""`parity doctor` asks the Bot API (getMe at api_base_url) whether the token works, and
names the variable of a refused one, never its value."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.channels.telegram.support import TOKEN, fake_bot_api
from tests.support.helpers import doctor


@pytest.mark.parametrize("token", [TOKEN, "7755001122:AArevoked-token-for-doctor"])
def test_doctor_checks_the_token_with_get_me(
    token: str,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARITY_AUDIT_KEY", "a-long-random-audit-key-for-tests")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", token)
    with fake_bot_api() as fake:
        section = f'[connectors.telegram]\nenabled = true\napi_base_url = "{fake.base_url}"\n'
        code = doctor(tmp_path, db_url, section)
        asked = [name for name, _ in fake.calls]
    out = capsys.readouterr().out
    if token == TOKEN:
        assert code == 0, out
        assert "Telegram refused" not in out
        assert asked == ["getMe"]
    else:
        assert code == 1
        assert (
            "[connector telegram] Telegram refused the token in $TELEGRAM_BOT_TOKEN: "
            "Bot API 401: Unauthorized" in out
        )
    assert token not in out and token.partition(":")[2] not in out
