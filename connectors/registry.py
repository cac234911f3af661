"""The connector registry: every connector's declaration (connectors/contract.py), in one list.

The daemon, `parity doctor`, `parity connectors status` and the CLI iterate over this list
and never name a connector. A new connector is one more `ConnectorSpec` here (and its
module); tests/test_connector_registry.py checks it against the channel registry and that
it declares every part of the contract.

A spec's functions import the connector's module, and so its library, only when they
build: settings validate and status reads everywhere, even where a library is missing.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from connectors.config import CONNECTOR_NAMES, WebSettings
from connectors.contract import (
    AVAILABLE,
    Availability,
    Built,
    ConnectorSpec,
    Endpoint,
    Runtime,
    Sender,
    url_endpoint,
)
from connectors.imap.settings import ImapSettings
from connectors.mail.relay import relay_availability
from connectors.meta.parse import parse as meta_parse
from connectors.meta.settings import MetaSettings
from connectors.outbox import OutboxDrainer
from connectors.reddit.parse import parse as reddit_parse
from connectors.reddit.settings import RedditSettings
from connectors.smtp.settings import SmtpSettings
from connectors.telegram.parse import parse as telegram_parse
from connectors.telegram.settings import TelegramSettings
from connectors.twilio.parse import parse as twilio_parse
from connectors.twilio.settings import TwilioSettings
from connectors.twitter.parse import parse as twitter_parse
from connectors.twitter.settings import TwitterSettings
from connectors.twitter.settings import lease_problem as twitter_lease_problem
from connectors.webform.parse import parse as webform_parse
from connectors.webform.settings import WebformSettings
from inbox.channels import channels_of
from inbox.config import Strict
from inbox.secrets import from_env
from inbox.tokens import key_problem
from normalizer.ack_plan import AckRoute
from normalizer.parse import Parser, parse_mail

log = logging.getLogger(__name__)


# --- email: the SMTP server and IMAP polling share one way out, the relay -------------------


def _email_sender_availability(_section: object, runtime: Runtime) -> Availability:
    return relay_availability(runtime.outbox)


def _email_drainers(_section: object, runtime: Runtime) -> list[OutboxDrainer]:
    from connectors.mail.relay import SmtpRelaySender

    return [
        OutboxDrainer(
            runtime.engine,
            SmtpRelaySender(
                runtime.outbox.email,
                token_source=runtime.token_sources.get(runtime.outbox.email.oauth_account),
            ),
            runtime.outbox,
            worker=runtime.instance,
        )
    ]


# Email leaves through the relay whichever email connector took the mail in.
EMAIL_RELAY: Sender[SmtpSettings] = Sender(
    key="email-relay",
    label="email outbox",
    needs_intake=False,
    availability=_email_sender_availability,
    build=_email_drainers,
)
EMAIL_RELAY_FOR_IMAP: Sender[ImapSettings] = Sender(
    key=EMAIL_RELAY.key,
    label=EMAIL_RELAY.label,
    needs_intake=False,
    availability=_email_sender_availability,
    build=_email_drainers,
)


def _smtp_build(section: SmtpSettings, runtime: Runtime) -> Built:
    from connectors.smtp.server import SmtpConnector

    return Built(tasks=[SmtpConnector(section, runtime.writer)])


def _smtp_describe(section: SmtpSettings) -> str:
    return f"SMTP on {section.host}:{section.port} for {', '.join(section.support_domains)}"


def imap_availability(section: ImapSettings, environ: Mapping[str, str]) -> Availability:
    """IMAP runs when imapclient is installed, accounts exist and each one's secret is set."""
    if importlib.util.find_spec("imapclient") is None:
        return False, "imapclient is not installed"
    if not section.accounts:
        return False, "no accounts: add [[connectors.imap.accounts]] to the settings"
    missing = [
        f"{a.password_env} (account {a.name})"
        for a in section.accounts
        if a.auth != "oauth2" and from_env(a.password_env, dict(environ)) is None
    ]
    if missing:
        return False, "environment variable not set: " + ", ".join(missing)
    if any(a.auth == "oauth2" for a in section.accounts):
        # The grants are stored encrypted: without the key none can be read.
        problem = key_problem(environ)
        if problem is not None:
            return False, f'{problem} (needed by the auth = "oauth2" accounts)'
    return AVAILABLE


def _imap_build(section: ImapSettings, runtime: Runtime) -> Built:
    # Imported here: without imapclient only this connector is disabled.
    from connectors.imap.intake import ImapConnector

    return Built(
        tasks=[
            ImapConnector(
                section,
                runtime.engine,
                on_stored=runtime.on_stored,
                token_sources=runtime.token_sources,
            )
        ]
    )


# --- Twilio: SMS and voice webhooks on the listener, media fetching, SMS out ----------------


def twilio_availability(section: TwilioSettings, environ: Mapping[str, str]) -> Availability:
    """Names only, never values: the library, the public URL, the two credentials."""
    needed: list[str] = []
    if importlib.util.find_spec("twilio") is None:
        needed.append("the twilio library (pip install twilio)")
    if not section.public_url:
        needed.append("setting connectors.twilio.public_url (Twilio signs requests to it)")
    unset = [v for v in dict.fromkeys(_twilio_secrets(section)) if not environ.get(v)]
    if unset:
        needed.append("environment variable " + ", ".join(unset))
    return (False, "missing " + "; ".join(needed)) if needed else AVAILABLE


def _twilio_secrets(section: TwilioSettings) -> tuple[str, ...]:
    return (section.account_sid_env, section.auth_token_env)


def _twilio_build(section: TwilioSettings, runtime: Runtime) -> Built:
    """Twilio's webhooks join the HTTP listener; a fetcher downloads what MMS carry."""
    # Imported here: without the twilio library only this connector is disabled.
    from connectors.twilio.intake import MediaFetcher, TwilioWebhooks

    env = dict(runtime.environ)
    token = from_env(section.auth_token_env, env)
    sid = from_env(section.account_sid_env, env)
    assert token is not None and sid is not None  # availability() checked them
    fetcher = MediaFetcher(runtime.engine, sid.reveal(), token)
    # One health record: a status callback the webhook could not apply shows under `twilio`.
    routes = TwilioWebhooks(
        section,
        runtime.engine,
        token,
        runtime.writer.submit,
        sla=runtime.sla,
        health=fetcher.health,
    ).routes()
    return Built(tasks=[fetcher], routes=routes)


def _twilio_sender_availability(section: TwilioSettings, _runtime: Runtime) -> Availability:
    if not section.from_number:
        return False, "no connectors.twilio.from_number"
    return AVAILABLE


def _twilio_drainers(section: TwilioSettings, runtime: Runtime) -> list[OutboxDrainer]:
    """SMS (and call acknowledgements) leave through the outbox, one drainer per channel."""
    from connectors.twilio.outbox import TwilioDrainer, TwilioSmsSender
    from connectors.twilio.outbox import make_client as make_twilio_client

    env = dict(runtime.environ)
    token = from_env(section.auth_token_env, env)
    sid = from_env(section.account_sid_env, env)
    assert token is not None and sid is not None  # availability() checked them
    client = make_twilio_client(section, sid.reveal(), token)
    return [
        TwilioDrainer(
            runtime.engine,
            TwilioSmsSender(channel, section, client, runtime.engine, auth_token=token),
            runtime.outbox,
            worker=runtime.instance,
        )
        for channel in channels_of("twilio")
    ]


# --- Twitter/X and Reddit: pollers that acknowledge and deliver on their own (for now) -------


def _twitter_availability(section: TwitterSettings, environ: Mapping[str, str]) -> Availability:
    from connectors.twitter.auth import unavailable_reason

    why = unavailable_reason(section, environ)
    return why is None, why


def _twitter_secrets(section: TwitterSettings) -> tuple[str, ...]:
    return (
        section.bearer_token_env,
        section.consumer_key_env,
        section.consumer_secret_env,
        section.access_token_env,
        section.access_token_secret_env,
    )


def _twitter_build(section: TwitterSettings, runtime: Runtime) -> Built:
    # Imported here: tweepy loads only when the connector runs.
    from connectors.twitter.auth import credentials
    from connectors.twitter.intake import TwitterConnector

    creds = credentials(section, runtime.environ)
    assert creds is not None  # availability() checked them
    return Built(
        tasks=[
            TwitterConnector(
                section,
                runtime.engine,
                creds,
                instance=runtime.instance,
                on_stored=runtime.on_stored,
                timezone=runtime.timezone,
                lock_retry_s=section.standby_retry_seconds,
                outbox=runtime.outbox,
            )
        ]
    )


def _reddit_availability(section: RedditSettings, environ: Mapping[str, str]) -> Availability:
    from connectors.reddit.intake import availability

    return availability(section, environ)


def _reddit_secrets(section: RedditSettings) -> tuple[str, ...]:
    from connectors.reddit.intake import credential_envs

    return tuple(credential_envs(section).values())


def _reddit_build(section: RedditSettings, runtime: Runtime) -> Built:
    from connectors.reddit.intake import RedditConnector

    return Built(
        tasks=[
            RedditConnector(
                section,
                runtime.engine,
                runtime.environ,
                instance=runtime.instance,
                timezone=runtime.timezone,
            )
        ]
    )


# --- Meta: WhatsApp, Messenger and Instagram through one signed webhook --------------------


def _meta_secrets(section: MetaSettings) -> tuple[str, ...]:
    return (
        section.verify_token_env,
        section.app_secret_env,
        section.whatsapp_token_env,
        section.page_token_env,
    )


def meta_channels(section: MetaSettings) -> tuple[str, ...]:
    """The Meta channels these settings serve: WhatsApp with a phone number id, Messenger
    and Instagram with a page (Instagram also with its account id)."""

    def serves(channel: str) -> bool:
        if channel == "whatsapp":
            return bool(section.whatsapp_phone_number_id)
        if channel == "instagram":
            return bool(section.page_id and section.instagram_account_id)
        return bool(section.page_id)

    return tuple(c for c in channels_of("meta") if serves(c))


def meta_availability(section: MetaSettings, environ: Mapping[str, str]) -> Availability:
    """Names only, never values: the webhook's two secrets, and each served channel's token."""
    needed: list[str] = []
    served = meta_channels(section)
    if not served:
        needed.append("setting connectors.meta.whatsapp_phone_number_id or connectors.meta.page_id")
    envs = [section.verify_token_env, section.app_secret_env]
    if "whatsapp" in served:
        envs.append(section.whatsapp_token_env)
    if any(c != "whatsapp" for c in served):  # Messenger and Instagram share the page's
        envs.append(section.page_token_env)
    unset = [v for v in dict.fromkeys(envs) if not environ.get(v)]
    if unset:
        needed.append("environment variable " + ", ".join(unset))
    return (False, "missing " + "; ".join(needed)) if needed else AVAILABLE


def _meta_graphs(section: MetaSettings, environ: Mapping[str, str]) -> dict[str, Any]:
    from connectors.meta.graph import Graph

    env = dict(environ)
    graphs: dict[str, Any] = {}
    page = from_env(section.page_token_env, env)
    page_graph = Graph(section, page) if page is not None else None
    for channel in meta_channels(section):
        if channel == "whatsapp":
            token = from_env(section.whatsapp_token_env, env)
            assert token is not None  # availability() checked it
            graphs[channel] = Graph(section, token)
        elif page_graph is not None:
            graphs[channel] = page_graph
    return graphs


def _meta_build(section: MetaSettings, runtime: Runtime) -> Built:
    """The webhook joins the HTTP listener; a task fetches media and checks the tokens."""
    from connectors.meta.intake import MetaWebhooks
    from connectors.meta.media import MetaMedia

    env = dict(runtime.environ)
    verify = from_env(section.verify_token_env, env)
    secret = from_env(section.app_secret_env, env)
    assert verify is not None and secret is not None  # availability() checked them
    media = MetaMedia(
        runtime.engine,
        section,
        _meta_graphs(section, runtime.environ),
        poll_seconds=section.poll_seconds,
    )
    hooks = MetaWebhooks(
        runtime.engine,
        verify,
        secret,
        runtime.writer.submit,
        health=media.health,
        stats=media.stats,
    )
    return Built(tasks=[media], routes=hooks.routes())


def meta_token_problems(section: MetaSettings, environ: Mapping[str, str]) -> list[str]:
    """`parity doctor`: each served channel's token asked at graph_base_url (the phone
    number id for WhatsApp's, /me for the page's); the variable's name, never its value."""
    from connectors.meta.media import token_check

    problems = []
    checked: set[int] = set()
    for channel, graph in _meta_graphs(section, environ).items():
        if id(graph) in checked:
            continue  # Messenger and Instagram share the page token
        checked.add(id(graph))
        whatsapp = channel == "whatsapp"
        ok, why = token_check(graph, section.whatsapp_phone_number_id if whatsapp else "me")
        if not ok:
            name = section.whatsapp_token_env if whatsapp else section.page_token_env
            problems.append(f"{channel}: Meta refused the token in ${name}: {why}")
    return problems


def _meta_sender_availability(section: MetaSettings, _runtime: Runtime) -> Availability:
    if not meta_channels(section):
        return False, "no connectors.meta.whatsapp_phone_number_id or page_id"
    return AVAILABLE


def _meta_drainers(section: MetaSettings, runtime: Runtime) -> list[OutboxDrainer]:
    """One drainer per served channel, each with its channel's token."""
    from connectors.media_url import media_key
    from connectors.meta.intake import MEDIA_CONTEXT
    from connectors.meta.outbox import MetaSender

    # The app secret signs the URLs Meta fetches an Instagram reply's files from.
    secret = from_env(section.app_secret_env, dict(runtime.environ))
    key = media_key(secret, MEDIA_CONTEXT) if secret is not None else None
    return [
        OutboxDrainer(
            runtime.engine,
            MetaSender(channel, section, graph, runtime.engine, media_key=key),
            runtime.outbox,
            worker=runtime.instance,
        )
        for channel, graph in _meta_graphs(section, runtime.environ).items()
    ]


# --- Telegram: a bot, by long polling or by webhook; replies through the outbox ------------


def _telegram_secrets(section: TelegramSettings) -> tuple[str, ...]:
    return (section.token_env, section.webhook_secret_env)


def telegram_availability(section: TelegramSettings, environ: Mapping[str, str]) -> Availability:
    """Names only, never values: the token, and in webhook mode the webhook's secret (which
    Telegram accepts as 1-256 of A-Z, a-z, 0-9, _ and -)."""
    envs = [section.token_env]
    if section.mode == "webhook":
        envs.append(section.webhook_secret_env)
    unset = [v for v in envs if not environ.get(v)]
    if unset:
        return False, "missing environment variable " + ", ".join(unset)
    if section.mode == "webhook":
        secret = environ[section.webhook_secret_env]
        allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
        if len(secret) > 256 or not set(secret) <= allowed:
            return False, (
                f"environment variable {section.webhook_secret_env} must be 1-256 characters "
                "of A-Z, a-z, 0-9, _ and - (Telegram's rule for a webhook secret)"
            )
    return AVAILABLE


def _telegram_build(section: TelegramSettings, runtime: Runtime) -> Built:
    """Polling: one poller under the lock. Webhook: the route, and a task for the media."""
    from connectors.telegram.intake import TelegramPoller, TelegramWebhook

    env = dict(runtime.environ)
    token = from_env(section.token_env, env)
    assert token is not None  # availability() checked it
    if section.mode == "polling":
        return Built(
            tasks=[TelegramPoller(section, runtime.engine, token, on_stored=runtime.on_stored)]
        )
    secret = from_env(section.webhook_secret_env, env)
    assert secret is not None  # availability() checked it
    hook = TelegramWebhook(section, runtime.engine, token, secret, runtime.writer.submit)
    return Built(tasks=[hook], routes=hook.routes())


def telegram_token_problems(section: TelegramSettings, environ: Mapping[str, str]) -> list[str]:
    """`parity doctor`: getMe at api_base_url; the variable's name, never its value."""
    from connectors.telegram.api import BotApiError, call_sync

    token = from_env(section.token_env, dict(environ))
    if token is None:
        return [f"environment variable {section.token_env} is not set"]
    try:
        me = call_sync(section, token, "getMe")
    except BotApiError as exc:
        return [f"Telegram refused the token in ${section.token_env}: {exc}"]
    if not isinstance(me, dict) or me.get("is_bot") is not True:
        return [f"getMe with ${section.token_env} did not answer a bot"]
    return []


def _telegram_drainers(section: TelegramSettings, runtime: Runtime) -> list[OutboxDrainer]:
    from connectors.telegram.outbox import TelegramSender

    token = from_env(section.token_env, dict(runtime.environ))
    assert token is not None  # availability() checked it
    return [
        OutboxDrainer(
            runtime.engine,
            TelegramSender(section, token, runtime.engine),
            runtime.outbox,
            worker=runtime.instance,
        )
    ]


# --- the web form: the public contact form and the case status page on the listener --------


def webform_availability(section: WebformSettings, environ: Mapping[str, str]) -> Availability:
    """Names only, never values: the public URL (status links) and the server secret."""
    needed: list[str] = []
    if not section.public_url:
        needed.append("setting connectors.webform.public_url (the status links name it)")
    if not environ.get(section.secret_env):
        needed.append(f"environment variable {section.secret_env}")
    return (False, "missing " + "; ".join(needed)) if needed else AVAILABLE


def _webform_build(section: WebformSettings, runtime: Runtime) -> Built:
    """The form's and status page's routes join the listener; a task queues confirmations."""
    from connectors.webform.confirm import ConfirmationQueue
    from connectors.webform.web import WebForm

    secret = from_env(section.secret_env, dict(runtime.environ))
    assert secret is not None  # availability() checked it
    form = WebForm(
        section,
        runtime.engine,
        secret,
        runtime.writer.submit,
        sla=runtime.sla,
        reopen_window_days=runtime.reopen_window_days,
    )
    queue = ConfirmationQueue(form.confirmations)
    form.health = queue.health
    return Built(tasks=[queue], routes=form.routes())


def _webform_ack_routes(settings: WebformSettings) -> Mapping[str, AckRoute]:
    from connectors.webform.outbox import ack_routes

    return ack_routes(settings)


def _webform_sender_availability(_section: WebformSettings, _runtime: Runtime) -> Availability:
    return AVAILABLE


def _webform_drainers(_section: WebformSettings, runtime: Runtime) -> list[OutboxDrainer]:
    """A reply on `web` is delivered by showing it on the case's status page."""
    from connectors.webform.outbox import StatusPageSender

    return [
        OutboxDrainer(runtime.engine, StatusPageSender(), runtime.outbox, worker=runtime.instance)
    ]


# --- the web inbox: the agents' pages and API on the HTTP listener -------------------------


def _web_build(_section: WebSettings, _runtime: Runtime) -> Built:
    # The listener itself is the composition root's: it mounts the agent inbox, /healthz
    # (which reads every instance's status) and every connector's routes.
    return Built()


def _web_describe(section: WebSettings) -> str:
    return f"web on http://{section.host}:{section.port}/"


# --- the settings: one [connectors.<name>] section per connector, its model in its package --


class ConnectorsSettings(Strict):
    smtp: SmtpSettings = SmtpSettings()
    imap: ImapSettings = ImapSettings()
    twilio: TwilioSettings = TwilioSettings()
    twitter: TwitterSettings = TwitterSettings()
    reddit: RedditSettings = RedditSettings()
    meta: MetaSettings = MetaSettings()
    telegram: TelegramSettings = TelegramSettings()
    webform: WebformSettings = WebformSettings()
    web: WebSettings = WebSettings()


def _twitter_ack_routes(settings: TwitterSettings) -> Mapping[str, AckRoute]:
    from connectors.twitter.outbox import ack_routes

    return ack_routes(settings)


def _reddit_ack_routes(settings: RedditSettings) -> Mapping[str, AckRoute]:
    from connectors.reddit.outbox import ack_routes

    return ack_routes(settings)


# --- the registry ---------------------------------------------------------------------------

REGISTRY: tuple[ConnectorSpec[Any], ...] = (
    ConnectorSpec(
        "smtp",
        SmtpSettings,
        _smtp_build,
        sender=EMAIL_RELAY,
        parsers={"email": parse_mail},
        reports_backlog=True,
        describe=_smtp_describe,
    ),
    ConnectorSpec(
        "imap",
        ImapSettings,
        _imap_build,
        availability=imap_availability,
        secrets=lambda s: tuple(a.password_env for a in s.accounts),
        endpoints=lambda s: [
            Endpoint(f"IMAP account {a.name}", a.host, a.port) for a in s.accounts
        ],
        sender=EMAIL_RELAY_FOR_IMAP,
        parsers={"email": parse_mail},
    ),
    ConnectorSpec(
        "twilio",
        TwilioSettings,
        _twilio_build,
        availability=twilio_availability,
        secrets=_twilio_secrets,
        endpoints=lambda s: [url_endpoint("Twilio API", s.api_base_url)],
        sender=Sender(
            key="twilio",
            label="Twilio outbox",
            needs_intake=True,
            availability=_twilio_sender_availability,
            build=_twilio_drainers,
        ),
        parsers=dict.fromkeys(channels_of("twilio"), twilio_parse),
        serves_http=True,
    ),
    ConnectorSpec(
        "twitter",
        TwitterSettings,
        _twitter_build,
        availability=_twitter_availability,
        secrets=_twitter_secrets,
        endpoints=lambda s: [url_endpoint("X API", s.api_base_url)],
        parsers={"twitter": twitter_parse},
        ack_routes=_twitter_ack_routes,
        lease_problem=twitter_lease_problem,
    ),
    ConnectorSpec(
        "reddit",
        RedditSettings,
        _reddit_build,
        availability=_reddit_availability,
        secrets=_reddit_secrets,
        endpoints=lambda s: [url_endpoint("Reddit API", s.oauth_url)],
        parsers={"reddit": reddit_parse},
        ack_routes=_reddit_ack_routes,
    ),
    ConnectorSpec(
        "meta",
        MetaSettings,
        _meta_build,
        availability=meta_availability,
        secrets=_meta_secrets,
        endpoints=lambda s: [url_endpoint("Graph API", s.graph_base_url)],
        online_checks=meta_token_problems,
        sender=Sender(
            key="meta",
            label="Meta outbox",
            needs_intake=True,
            availability=_meta_sender_availability,
            build=_meta_drainers,
        ),
        parsers=dict.fromkeys(channels_of("meta"), meta_parse),
        serves_http=True,
    ),
    ConnectorSpec(
        "telegram",
        TelegramSettings,
        _telegram_build,
        availability=telegram_availability,
        secrets=_telegram_secrets,
        endpoints=lambda s: [url_endpoint("Bot API", s.api_base_url)],
        online_checks=telegram_token_problems,
        sender=Sender(
            key="telegram",
            label="Telegram outbox",
            needs_intake=True,
            availability=lambda _s, _r: AVAILABLE,
            build=_telegram_drainers,
        ),
        parsers={"telegram": telegram_parse},
        # Its webhook joins the listener (in webhook mode; polling adds no route).
        serves_http=True,
    ),
    ConnectorSpec(
        "webform",
        WebformSettings,
        _webform_build,
        availability=webform_availability,
        secrets=lambda s: (s.secret_env,),
        sender=Sender(
            key="webform",
            label="status page outbox",
            needs_intake=True,
            availability=_webform_sender_availability,
            build=_webform_drainers,
        ),
        parsers={"web": webform_parse},
        ack_routes=_webform_ack_routes,
        serves_http=True,
        describe=lambda s: f"contact form at {s.public_url.rstrip('/')}/contact",
    ),
    ConnectorSpec("web", WebSettings, _web_build, serves_http=True, describe=_web_describe),
)

CONNECTORS: Mapping[str, ConnectorSpec[Any]] = MappingProxyType({c.name: c for c in REGISTRY})
# The order every list shows them in: CONNECTOR_NAMES (connectors/config.py, the channel
# registry's order, then the web inbox).
assert tuple(CONNECTORS) == CONNECTOR_NAMES
# Every connector has its settings section, under its own name and with its own model.
assert {n: f.annotation for n, f in ConnectorsSettings.model_fields.items()} == {
    c.name: c.settings_model for c in REGISTRY
}
# What `parity run --only` and `parity connectors check` accept.
NAMES: tuple[str, ...] = tuple(CONNECTORS)
# The HTTP listener reports under the web inbox's name: the connector that serves HTTP and
# brings no channel in (the listener also mounts the other connectors' routes).
HTTP_LISTENER: str = next(c.name for c in REGISTRY if c.serves_http and not c.channels)
# The channel that leaves through the SMTP relay: `parity outbox status` reports the relay's
# availability under its name. Every connector the relay sends for brings in this one channel.
(RELAY_CHANNEL,) = dict.fromkeys(
    channel
    for spec in REGISTRY
    if spec.sender is not None and spec.sender.key == EMAIL_RELAY.key
    for channel in spec.channels
)


def availability(connectors: Strict, name: str, environ: Mapping[str, str]) -> Availability:
    """Whether connector `name` can run with these `[connectors]` settings, and why not."""
    return CONNECTORS[name].check(connectors, environ)


def parser_table() -> dict[str, Parser]:
    """channel -> parser over every connector: the table the composition root hands to the
    normalizer (parity/daemon.py, parity/cli.py, the benches and the tests all take it here).

    Two connectors may bring in one channel (SMTP and IMAP both bring email), but then with
    one parser: the store keeps the channel, not the connector, and a replay must not
    depend on which connector took the input in.
    """
    table: dict[str, Parser] = {}
    for spec in REGISTRY:
        for channel, parser in spec.parsers.items():
            if table.setdefault(channel, parser) is not parser:
                raise ValueError(f"two parsers for channel {channel!r}")
    return table


def ack_route_table(connectors: Strict) -> dict[str, AckRoute]:
    """channel -> how its new case is acknowledged, over every connector, from the
    `[connectors]` settings: handed to the worker by the composition root exactly as
    `parser_table` is, so the normalizer names no channel. A channel absent from it is
    acknowledged from `[acknowledgements]` (email, SMS, voice, Meta's).
    """
    table: dict[str, AckRoute] = {}
    for spec in REGISTRY:
        for channel, route in spec.ack_routes(spec.section(connectors)).items():
            if channel in table:
                raise ValueError(f"two ack routes for channel {channel!r}")
            table[channel] = route
    return table
