"""`parity doctor` asks Meta whether the tokens still work (the fake Graph API), and names
the variable of a refused one, never its value."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.channels.meta.support import (
    APP_SECRET,
    PAGE_ID,
    PAGE_TOKEN,
    PHONE_NUMBER_ID,
    VERIFY_TOKEN,
    WA_TOKEN,
    fake_graph,
)
from tests.support.helpers import doctor


def section(base_url: str) -> str:
    return (
        "[connectors.meta]\nenabled = true\n"
        f'graph_base_url = "{base_url}"\n'
        f'whatsapp_phone_number_id = "{PHONE_NUMBER_ID}"\npage_id = "{PAGE_ID}"\n'
    )


@pytest.mark.parametrize("page_token", [PAGE_TOKEN, "EAArevoked-page-token-77"])
def test_doctor_checks_the_tokens_at_the_graph_api(
    page_token: str,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARITY_AUDIT_KEY", "a-long-random-audit-key-for-tests")
    for name, value in {
        "META_VERIFY_TOKEN": VERIFY_TOKEN,
        "META_APP_SECRET": APP_SECRET,
        "META_WHATSAPP_TOKEN": WA_TOKEN,
        "META_PAGE_TOKEN": page_token,
    }.items():
        monkeypatch.setenv(name, value)
    with fake_graph() as fake:
        code = doctor(tmp_path, db_url, section(fake.base_url))
    out = capsys.readouterr().out
    if page_token == PAGE_TOKEN:
        assert code == 0, out
        assert "Meta refused" not in out
    else:
        assert code == 1
        assert "[connector meta] messenger: Meta refused the token in $META_PAGE_TOKEN" in out
        assert "code 190" in out
        # WhatsApp's token is good: nothing said about it.
        assert "whatsapp: Meta refused" not in out
    assert page_token not in out and WA_TOKEN not in out
