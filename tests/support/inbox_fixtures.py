"""Fixtures for the agent inbox: a live app on an ephemeral port (loaded by `pytest_plugins`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import Engine

from inbox.web import create_app
from inbox.web.config import InboxSettings
from tests.support.inbox_helpers import DOMAIN, Api

MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(engine: Engine) -> AsyncIterator[MakeApi]:
    made: list[Api] = []

    async def build(settings: InboxSettings | None = None) -> Api:
        app = create_app(engine, settings or InboxSettings(), message_id_domain=DOMAIN)
        server = TestServer(app)
        await server.start_server()
        api = Api(engine, server)
        made.append(api)
        return api

    yield build
    for api in made:
        for client in api.clients:
            await client.close()
        await api.server.close()


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()
