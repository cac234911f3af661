"""X's wait for media processing against the outbox's sending lease: the settings refuse a
media_processing_timeout_s that, with what an attempt still does after it, could outlast
`[outbox] lease_seconds`, and the Twitter drainer claims rows under that configured lease.
The expected margins are worked out by hand: 90 s (see LEASE_MARGIN_S's reasons)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import create_engine

from connectors.config import OutboxSettings
from connectors.twitter.settings import TwitterSettings, lease_problem
from parity.settings import Settings, SettingsError, parse
from tests.channels.twitter.fake_x import FakeX
from tests.channels.twitter.support import connector, settings_for


@pytest.mark.parametrize(
    ("enabled", "timeout", "lease", "expected"),
    [
        # The defaults: 120 + 90 = 210 <= 600.
        (True, 120, 600, None),
        # The largest timeout against the default lease: 300 + 90 = 390 <= 600.
        (True, 300, 600, None),
        # Exactly the margin: fits.
        (True, 120, 210, None),
        # One second short: refused, with both ways out.
        (True, 120, 209, "connectors.twitter.media_processing_timeout_s (120) must be at "
         "least 90 s below outbox.lease_seconds (209), or a reply still uploading its files "
         "to X or waiting for X's processing outlives its sending lease: raise "
         "outbox.lease_seconds to 210 or more or lower the timeout to 119 or less"),
        # The operator of the brief: a one-minute lease; no timeout fits under it.
        (True, 120, 60, "connectors.twitter.media_processing_timeout_s (120) must be at "
         "least 90 s below outbox.lease_seconds (60), or a reply still uploading its files "
         "to X or waiting for X's processing outlives its sending lease: raise "
         "outbox.lease_seconds to 210 or more"),
        (True, 1, 91, None),
        (True, 2, 91, "connectors.twitter.media_processing_timeout_s (2) must be at least "
         "90 s below outbox.lease_seconds (91), or a reply still uploading its files to X or "
         "waiting for X's processing outlives its sending lease: raise "
         "outbox.lease_seconds to 92 or more or lower the timeout to 1 or less"),
        # The connector off: it sends nothing, so nothing to check.
        (False, 300, 60, None),
    ],
)  # fmt: skip
def test_the_wait_for_x_fits_in_the_sending_lease(
    enabled: bool, timeout: int, lease: int, expected: str | None
) -> None:
    section = TwitterSettings(enabled=enabled, media_processing_timeout_s=timeout)
    assert lease_problem(section, lease) == expected


def test_settings_that_do_not_fit_refuse_to_load() -> None:
    data = {
        "connectors": {"twitter": {"enabled": True, "user_id": "1"}},
        "outbox": {"lease_seconds": 60},
    }
    with pytest.raises(SettingsError) as refused:
        parse(data, "settings.toml")
    message = str(refused.value)
    assert message.startswith("settings.toml: connectors.twitter.media_processing_timeout_s")
    assert re.search(r"outbox\.lease_seconds \(60\)", message)
    # With a lease that fits, the same section loads; and the defaults always do.
    data["outbox"] = {"lease_seconds": 210}
    assert parse(data).outbox.lease_seconds == 210
    assert Settings().outbox.lease_seconds == 600


def test_the_twitter_drainer_claims_under_the_configured_lease(fake: FakeX) -> None:
    # Building the connector touches no table: an empty in-memory store will do.
    engine = create_engine("sqlite://")
    twitter = connector(
        engine, settings_for(fake), outbox=OutboxSettings(lease_seconds=400, max_attempts=3)
    )
    try:
        assert twitter.delivery.settings.lease_seconds == 400
        assert twitter.delivery.settings.max_attempts == 3
        assert twitter.delivery.settings.batch_size == 10  # X's own batch, as before
    finally:
        twitter.api.close()
