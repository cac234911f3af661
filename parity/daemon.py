"""`parity run`: every enabled connector and the normalizer worker in one event loop.

The normalizer runs in this process when `[normalizer] processes` is 1 (SQLite's default),
in that many worker processes beside it when more (parity/workers.py), and not at all with
`--no-normalizer` (an intake node; `parity worker` files elsewhere).

A connector that crashes is restarted with exponential backoff and jitter, capped; the
others keep running. What each connector reports is written to the store every few
seconds, so `parity connectors status` (another process) can read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import Engine, func, select, update

from connectors import oauth
from connectors.base import Connector, ConnectorHealth
from connectors.contract import Availability, Runtime
from connectors.mail.relay import relay_availability
from connectors.outbox import OutboxDrainer
from connectors.registry import CONNECTORS, EMAIL_RELAY, HTTP_LISTENER, REGISTRY
from connectors.registry import availability as connector_availability
from connectors.webhook import WebhookSender, url_problem
from inbox import (
    alerts,
    audit,
    csat,
    erasure,
    logcontext,
    notifications,
    report_days,
    suggestions,
    uploads,
)
from inbox.db import StorageUnavailable, insert_ignore, make_engine, read, write
from inbox.delivery import WayOut, WayState
from inbox.models import ConnectorState, Intake, utcnow
from inbox.secrets import from_env
from inbox.web import create_app, csat_page, manager
from inbox.web.routes import Route
from normalizer import memory
from normalizer.ack_limits import take_buckets
from normalizer.acks import Bucket
from normalizer.intake import IntakeWriter
from normalizer.message import CHANNELS
from normalizer.worker import Outcome, WorkerLoop
from parity import status, workers
from parity.settings import Settings
from parity.status import HEARTBEAT_S

log = logging.getLogger(__name__)

# Restart policy of a crashed connector: exponential backoff from the first delay, capped,
# with jitter; a connector that ran this long before crashing starts the backoff anew.
RESTART_FIRST_S = 1.0
RESTART_CAP_S = 60.0
RESTART_RESET_AFTER_S = 60.0


def availability(
    settings: Settings, name: str, environ: Mapping[str, str] | None = None
) -> Availability:
    """Whether connector `name` can run with these settings, and why not (its declaration's
    `availability`, connectors/registry.py)."""
    return connector_availability(
        settings.connectors, name, os.environ if environ is None else environ
    )


def outbox_availability(settings: Settings) -> Availability:
    """Whether email can be sent (acknowledgements, replies), and why not."""
    return relay_availability(settings.outbox)


def restart_delay(
    crashes_in_a_row: int, first: float = RESTART_FIRST_S, cap: float = RESTART_CAP_S
) -> float:
    """The wait before restart number `crashes_in_a_row` (1, 2, ...): doubling, capped.

    Jitter is applied by the caller, so that many instances that crashed together (the
    database went away) do not all come back in the same second.
    """
    return min(first * 2.0 ** max(0, crashes_in_a_row - 1), cap)


@dataclass
class Supervised:
    connector: Connector
    restarts: int = 0
    running: bool = False
    task: asyncio.Task[None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class WebListener:
    """The HTTP listener: health now; the agent inbox and webhooks mount here."""

    name = HTTP_LISTENER
    # Binds a port: the start-up banner waits for it (Daemon.announce).
    listens = True

    def __init__(self, host: str, port: int, app: web.Application) -> None:
        self.host = host
        self.port = port
        self.app = app
        self.health = ConnectorHealth()
        self.bound: str = ""

    async def run(self, stop: asyncio.Event) -> None:
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            host, port = sockets[0].getsockname()[:2]
            self.bound = f"{host}:{port}"
            self.health.details["listening"] = self.bound
        log.info("HTTP listener on http://%s", self.bound)
        self.health.success()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


class Daemon:
    def __init__(
        self,
        settings: Settings,
        only: Iterable[str] | None = None,
        *,
        restart_first_s: float = RESTART_FIRST_S,
        restart_cap_s: float = RESTART_CAP_S,
        heartbeat_s: float = HEARTBEAT_S,
        normalizer: bool = True,
    ) -> None:
        self.settings = settings
        self.only = set(only) if only else None
        unknown = (self.only or set()) - set(CONNECTORS)
        if unknown:
            raise ValueError(
                f"unknown connector {', '.join(sorted(unknown))}; the names are "
                + ", ".join(CONNECTORS)
            )
        self.restart_first_s = restart_first_s
        self.restart_cap_s = restart_cap_s
        self.heartbeat_s = heartbeat_s
        db = settings.database
        self.engine: Engine = make_engine(
            db.resolved_url(),
            busy_timeout_ms=db.busy_timeout_ms,
            keepalive_s=db.keepalive_s,
            sqlite_cache_mb=db.sqlite_cache_mb,
        )
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.stop = asyncio.Event()
        # Set when a connector starts or crashes, so status shows it now, not at the next beat.
        self.changed = asyncio.Event()
        self.worker = WorkerLoop(
            workers.normalizer_for(
                settings, self.engine, name=self.instance, on_case=self._case_opened
            ),
            intake_busy=self._intake_busy,
        )
        self.drainers: list[OutboxDrainer] = []
        # How many normalizer processes: 0 (intake only), 1 (the worker above, in this
        # process) or more (that many worker processes; the worker above stays idle).
        self.processes = workers.process_count(settings, self.engine) if normalizer else 0
        self.children: workers.WorkerProcesses | None = None
        if self.processes > 1:
            self.children = workers.WorkerProcesses(
                settings,
                self.processes,
                on_case=lambda: self._case_opened(None),
                heartbeat_s=heartbeat_s,
            )
        self.writer = IntakeWriter(self.engine, on_stored=self._stored)
        self.supervised: dict[str, Supervised] = {}
        self.disabled: dict[str, str] = {}
        self._built = False
        self.extra_routes: list[Route] = []
        # `parity run` prints what runs once its ports are bound; tests build daemons quietly.
        self.announce_start = False
        self.ways_out: list[WayOut] = []

    def _intake_busy(self) -> bool:
        # Asked from the worker's threads too (its refill), so no event loop is assumed.
        return self.writer.pending > 0 or time.monotonic() - self.writer.last_submit < 0.25

    def _stored(self, count: int = 0) -> None:
        """New input is stored: wake whichever normalizer this process runs."""
        if self.children is not None:
            self.children.notify(count)
        elif self.processes:
            self.worker.notify(count)

    def _case_opened(self, _outcome: Outcome | None) -> None:
        # A new case may have queued an acknowledgement: send it now, not at the next poll.
        for drainer in self.drainers:
            drainer.notify()

    def selected(self, name: str) -> bool:
        return self.only is None or name in self.only

    def build(self) -> None:
        if self._built:
            return
        self._built = True
        runtime = Runtime(
            engine=self.engine,
            instance=self.instance,
            writer=self.writer,
            on_stored=self._stored,
            outbox=self.settings.outbox,
            sla=self.settings.store().sla,
            timezone=self.settings.sla.business_hours.timezone,
            environ=os.environ,
            reopen_window_days=self.settings.store().threading.reopen_window_days,
            token_sources=oauth.sources(self.engine, self.settings.oauth, os.environ),
        )
        available: set[str] = set()
        for spec in REGISTRY:
            if not self.selected(spec.name):
                continue
            ok, why = availability(self.settings, spec.name)
            if not ok:
                self.disabled[spec.name] = why or "disabled"
                log.info("connector %s disabled: %s", spec.name, why)
                continue
            available.add(spec.name)
        senders: set[str] = set()
        # How each sender key fared, for the pages' delivery banner (inbox.delivery).
        sender_ways: dict[str, tuple[WayState, str]] = {}
        for spec in REGISTRY:
            section = spec.section(self.settings.connectors)
            if spec.name in available:
                built = spec.build(section, runtime)
                for task in built.tasks:
                    self.supervised[task.name] = Supervised(task)
                self.extra_routes += built.routes
            sender = spec.sender
            if sender is not None and sender.needs_intake and spec.name not in available:
                sender_ways.setdefault(
                    sender.key, ("none", self.disabled.get(spec.name, "not selected here"))
                )
            if (
                sender is None
                or sender.key in senders
                or not self.selected(spec.name)
                or (sender.needs_intake and spec.name not in available)
            ):
                continue
            senders.add(sender.key)
            ok, why = sender.availability(section, runtime)
            if not ok:
                log.info("%s not running: %s", sender.label, why)
                sender_ways[sender.key] = ("none", why or "not running")
                continue
            sender_ways[sender.key] = self._captured(sender.key) or ("sends", "")
            for drainer in sender.build(section, runtime):
                self.drainers.append(drainer)
                self.supervised[drainer.name] = Supervised(drainer)
        self.ways_out = self._ways_out(available, sender_ways)
        if self.only is None:
            self._alert_webhook()
        # One listener serves the agent inbox and every connector's routes.
        if any(CONNECTORS[name].serves_http for name in available):
            web_settings = self.settings.connectors.web
            listener = WebListener(web_settings.host, web_settings.port, self.web_app())
            self.supervised[listener.name] = Supervised(listener)

    def _captured(self, key: str) -> tuple[WayState, str] | None:
        # The relay in trial mode: it "sends" into a Maildir, which no customer reads.
        capture = self.settings.outbox.email.capture_dir
        if key == EMAIL_RELAY.key and capture:
            return "captured", capture
        return None

    def _ways_out(
        self, available: set[str], sender_ways: Mapping[str, tuple[WayState, str]]
    ) -> list[WayOut]:
        """How each channel of the selected connectors leaves: by its sender where the
        connector has one, else by the connector itself (which then has to run)."""
        rank = {"sends": 2, "captured": 1, "none": 0}
        ways: dict[str, WayOut] = {}
        for spec in REGISTRY:
            if not self.selected(spec.name):
                continue
            if spec.sender is not None:
                state, why = sender_ways.get(spec.sender.key, ("none", "not running"))
            elif spec.name in available:
                state, why = "sends", ""
            else:
                state, why = "none", self.disabled.get(spec.name, "disabled")
            for channel in spec.channels:
                old = ways.get(channel)
                takes_in = spec.name in available or (old is not None and old.takes_in)
                if old is None or rank[state] > rank[old.state]:
                    ways[channel] = WayOut(channel, state, why, takes_in)
                else:
                    ways[channel] = WayOut(channel, old.state, old.reason, takes_in)
        return list(ways.values())

    def summary(self, failed: Mapping[str, str] | None = None) -> str:
        """One line saying what this process runs, and what it does not and why. `failed`:
        listeners that could not bind their port, with the reason."""
        self.build()
        failed = failed or {}
        parts = [
            spec.describe(spec.section(self.settings.connectors))
            for spec in REGISTRY
            if spec.describe is not None
            and spec.name in self.supervised
            and spec.name not in failed
        ]
        if self.processes == 1:
            parts.append("the normalizer worker")
        elif self.processes > 1:
            parts.append(f"{self.processes} normalizer worker processes")
        else:
            parts.append("no normalizer (stored input waits for `parity worker`)")
        # Connectors switched off in settings are expected; any other reason is news.
        skipped = [f"{name}: {why}" for name, why in failed.items()] + [
            f"{name}: {why}"
            for name, why in self.disabled.items()
            if self.only or why != "disabled in settings"
        ]
        line = "Parity: " + "; ".join(parts)
        return line + (f" (not running: {'; '.join(skipped)})" if skipped else "")

    def web_hint(self) -> list[str]:
        """Where agents log in, and how to make the first user when there is none yet."""
        if WebListener.name not in self.supervised:
            return []
        web_settings = self.settings.connectors.web
        # A wildcard bind is not an address a browser can open; loopback always works here.
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}  # noqa: S104 (we only compare)
        host = wildcard.get(web_settings.host, web_settings.host)
        lines = [f"Agent inbox: http://{host}:{web_settings.port}/ (log in there)"]
        from inbox.models import User

        with self.engine.connect() as conn:
            users = conn.execute(select(func.count()).select_from(User)).scalar_one()
        if not users:
            lines.append(
                f"No users yet. Create the first one with: {command_hint()} users add NAME "
                "--role admin "
                "(the password comes from PARITY_PASSWORD or a prompt; the command needs this "
                "server's PARITY_AUDIT_KEY, which ./scripts/run keeps in var/audit-key)"
            )
        return lines

    def web_app(self) -> web.Application:
        async def health() -> tuple[dict[str, Any], int]:
            # Health says how the service is, never anything about a customer. It reads
            # connector_state, so every web instance reports every instance's connectors.
            data, code = await asyncio.to_thread(status.health, self.settings, self.engine)
            running = {n: s.running for n, s in self.supervised.items()}
            # "connectors" stays what it always was: this process's connectors, running or not.
            data["connectors"] = running
            # What this process runs is up now, even before its first heartbeat is written.
            states = data.get("connector_states", [])
            for entry in states:
                if running.get(entry["name"]) and entry["state"] == "down":
                    entry["state"] = "up"
            if states and code == 503 and all(e["state"] != "down" for e in states):
                data["status"], code = "ok", 200
            data["instance"] = self.instance
            if not all(running.values()) and code == 200:
                data["status"], code = "degraded", 503
            # The manager audit's parity figure (issue 12): ratios only, no customer data. A
            # breach is reported, not made a failure: the service itself is up.
            try:
                data["parity"] = await asyncio.to_thread(
                    manager.parity_health, self.engine, self.settings.audit
                )
            except Exception as exc:  # a failing report must not take health down with it
                data["parity"] = {"error": type(exc).__name__}
            return data, code

        # The agent inbox (JSON API, /healthz, /metrics); webhooks and pages join its table.
        app = create_app(
            self.engine,
            self.settings.inbox,
            message_id_domain=self.settings.connectors.smtp.hostname,
            health=health,
            routes=self.extra_routes,
            ways_out=self.ways_out,
        )
        manager.install(app, self.settings.audit)
        csat_page.install(
            app,
            self.engine,
            self.settings.csat,
            self._csat_secret(),
            csat_limiter(self.engine, self.settings.csat),
        )
        return app

    async def announce(self, timeout_s: float = 30.0) -> None:
        """Print the start-up banner once every listener has bound its port or failed to,
        so a taken port is never announced as served."""
        listeners = {
            name: entry
            for name, entry in self.supervised.items()
            if getattr(entry.connector, "listens", False)
        }

        def settled(entry: Supervised) -> bool:
            return bool(entry.connector.health.details.get("listening")) or entry.restarts > 0

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not all(settled(e) for e in listeners.values()) and loop.time() < deadline:
            if self.stop.is_set():
                return
            await asyncio.sleep(0.05)
        failed = {
            name: entry.connector.health.last_error or "not listening yet"
            for name, entry in listeners.items()
            if not entry.connector.health.details.get("listening")
        }
        print(self.summary(failed), flush=True)
        print(f"Settings: {self.settings.sources()}", flush=True)
        if WebListener.name not in failed:
            for line in await asyncio.to_thread(self.web_hint):
                print(line, flush=True)

    def _csat_secret(self) -> bytes | None:
        secret = from_env(self.settings.csat.secret_env)
        return secret.reveal().encode() if secret else None

    def _alert_webhook(self) -> None:
        """The alert webhook's drainer, when [alerts] names a URL and its secret is set."""
        section = self.settings.alerts
        if not section.webhook_url:
            return
        problem = url_problem(section.webhook_url)
        secret = from_env(section.webhook_secret_env)
        if problem or secret is None:
            why = problem or f"environment variable {section.webhook_secret_env} not set"
            log.warning("alert webhook not running: %s", why)
            return
        drainer = OutboxDrainer(
            self.engine, WebhookSender(secret), self.settings.outbox, worker=self.instance
        )
        self.drainers.append(drainer)
        self.supervised[drainer.name] = Supervised(drainer)

    async def _every(self, seconds: float, name: str, job: Any) -> None:
        """Run `job` in a thread every `seconds` until stopped; a failure is logged, never
        fatal (the surveys and alerts are retried on the next pass)."""
        while not self.stop.is_set():
            await _wait_any(seconds, self.stop)
            if self.stop.is_set():
                break
            try:
                await asyncio.to_thread(job)
            except Exception as exc:
                log.warning("%s failed: %s: %s", name, type(exc).__name__, exc)
            else:
                for drainer in self.drainers:
                    drainer.notify()

    def _periodic_tasks(self) -> list[asyncio.Task[None]]:
        """The satisfaction planner and the alert checker, when their settings turn them on."""
        tasks = []
        if self.settings.csat.enabled:
            secret = self._csat_secret()
            tasks.append(
                asyncio.create_task(
                    self._every(
                        self.settings.csat.interval_s,
                        "csat planner",
                        lambda: csat.plan_due(self.engine, self.settings.csat, secret),
                    ),
                    name="csat-planner",
                )
            )
        if self.settings.alerts.enabled:
            threshold = self.settings.audit.parity_ratio_threshold
            tasks.append(
                asyncio.create_task(
                    self._every(
                        self.settings.alerts.interval_s,
                        "alert check",
                        lambda: alerts.check(self.engine, self.settings.alerts, threshold),
                    ),
                    name="alerts",
                )
            )
        return tasks

    async def _supervise(self, name: str, entry: Supervised) -> None:
        # This task's own context: every line the connector logs (its tasks and threads
        # too) names it. Drainers bind their channel's sender name the same way.
        logcontext.annotate(connector=name)
        loop = asyncio.get_running_loop()
        crashes_in_a_row = 0
        while not self.stop.is_set():
            started = loop.time()
            entry.running = True
            entry.extra.pop("next_restart_in_s", None)
            self.changed.set()
            try:
                await entry.connector.run(self.stop)
                if self.stop.is_set():
                    return
                raise RuntimeError("connector returned without being asked to stop")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                entry.running = False
                entry.restarts += 1
                if loop.time() - started > RESTART_RESET_AFTER_S:
                    crashes_in_a_row = 0  # it ran well for a while: start the backoff anew
                crashes_in_a_row += 1
                wait = restart_delay(crashes_in_a_row, self.restart_first_s, self.restart_cap_s)
                wait *= random.uniform(0.8, 1.2)
                entry.extra["next_restart_in_s"] = round(wait, 2)
                entry.connector.health.error(f"crashed: {type(exc).__name__}: {exc}")
                log.error(
                    "connector %s crashed (restart %d, next try in %.2f s): %s: %s",
                    name,
                    entry.restarts,
                    wait,
                    type(exc).__name__,
                    exc,
                    exc_info=not isinstance(exc, OSError),
                )
            finally:
                entry.running = False
                self.changed.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=wait)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop.set)
        self.build()
        if self.only and not self.supervised:
            log.error(
                "nothing to run: %s",
                "; ".join(f"{n}: {why}" for n, why in sorted(self.disabled.items())),
            )
            self.engine.dispose()
            return 78  # EX_CONFIG: the settings name nothing this process can run
        self.writer.start()
        tasks = []
        if self.processes == 1:
            tasks.append(asyncio.create_task(self.worker.run(self.stop), name="normalizer"))
        elif self.children is not None:
            self.children.start()
        for name, entry in self.supervised.items():
            entry.task = asyncio.create_task(self._supervise(name, entry), name=name)
            tasks.append(entry.task)
        tasks.append(asyncio.create_task(self._heartbeat(), name="heartbeat"))
        if self.announce_start:
            tasks.append(asyncio.create_task(self.announce(), name="announce"))
        if self.settings.audit.seal_interval_s > 0:
            tasks.append(asyncio.create_task(self._seal_audit(), name="audit-sealer"))
        if self.settings.audit.rollup_interval_s > 0 and report_days.uses_rollups(
            self.engine.dialect.name
        ):
            tasks.append(
                asyncio.create_task(
                    self._every(
                        self.settings.audit.rollup_interval_s,
                        "report rollup fold",
                        lambda: report_days.fold(self.engine),
                    ),
                    name="report-rollups",
                )
            )
        if self.only is None:
            tasks += self._periodic_tasks()
        if self.settings.inbox.notify_sweep_seconds > 0:
            tasks.append(asyncio.create_task(self._notify(), name="notifications"))
        policy = self.settings.retention
        if policy.interval_s > 0 and (
            policy.resolved_case_days > 0
            or any(policy.channels.values())
            or policy.unsent_upload_hours > 0
        ):
            tasks.append(asyncio.create_task(self._retention(), name="retention"))
        tasks.append(asyncio.create_task(self._reindex(), name="reindex"))
        await self.stop.wait()
        log.info("stopping")
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("task ended with %r", result)
        if self.children is not None:
            # Drained: each worker files what it has started and hands back the rest.
            await asyncio.to_thread(self.children.stop)
        await asyncio.to_thread(self.writer.stop)
        try:
            await asyncio.to_thread(self._write_states, final=True)
        except Exception as exc:
            log.warning("could not record the final connector status: %s", exc)
        self.engine.dispose()
        log.info("stopped")
        return 0

    async def _seal_audit(self) -> None:
        """Seal the audit chains' heads every `[audit] seal_interval_s` (docs: audit.md).

        Every instance may run it: seals take their own lock, skip chains being written,
        and write nothing when no chain moved.
        """
        engine = self.engine

        def seal() -> None:
            with write(engine) as conn:
                audit.seal(conn)

        while not self.stop.is_set():
            await _wait_any(self.settings.audit.seal_interval_s, self.stop)
            if self.stop.is_set():
                break
            try:
                await asyncio.to_thread(seal)
            except Exception as exc:  # never let the sealer take the daemon down
                log.warning("could not seal the audit log: %s", exc)

    async def _notify(self) -> None:
        """Every `[inbox] notify_sweep_seconds`: notify assignees of cases about to breach
        and queue the email digests that are due (docs: agents/notifications.md).

        Every instance may run it: a notification is unique per case, kind and turn, and a
        digest locks its agent's row and records when it went, so nothing is sent twice.
        """
        engine, inbox = self.engine, self.settings.inbox

        def sweep() -> None:
            notifications.send_digests(
                engine,
                after=timedelta(minutes=inbox.digest_after_minutes),
                period=timedelta(minutes=inbox.digest_period_minutes),
                breach_within=inbox.breach_within(),
            )

        while not self.stop.is_set():
            await _wait_any(inbox.notify_sweep_seconds, self.stop)
            if self.stop.is_set():
                break
            try:
                await asyncio.to_thread(sweep)
            except Exception as exc:  # never let the sweep take the daemon down
                log.warning("could not sweep notifications: %s", exc)

    async def _retention(self) -> None:
        """Apply `[retention]` every `interval_s` (docs/operations/erasure.md).

        Every instance may run it: a case is erased in a write transaction that marks it
        (`erased_at`), so a second instance finds nothing left to do, and erasing twice
        changes nothing more.
        """
        policy = self.settings.retention

        def run() -> tuple[int, uploads.Swept]:
            swept = uploads.Swept(0, 0)
            if policy.unsent_upload_hours > 0:
                swept = uploads.sweep(self.engine, keep=timedelta(hours=policy.unsent_upload_hours))
            erased = erasure.run_retention(
                self.engine, policy.resolved_case_days, policy.channels, CHANNELS
            )
            return erased, swept

        while not self.stop.is_set():
            try:
                erased, swept = await asyncio.to_thread(run)
                if erased:
                    log.info("retention: erased the content of %d resolved cases", erased)
                if swept.uploads:
                    log.info(
                        "retention: removed %d unsent reply uploads (%d blobs)",
                        swept.uploads,
                        swept.blobs,
                    )
            except Exception as exc:  # never let retention take the daemon down
                log.warning("could not apply the retention policy: %s", exc)
            await _wait_any(policy.interval_s, self.stop)

    async def _reindex(self) -> None:
        await reindex_signatures(self.engine, self.stop)

    async def _heartbeat(self) -> None:
        """Write each connector's state every `heartbeat_s`, and within a second of news.

        News is a start, a crash, a first success or a new error. At most one write a
        second, so a busy SMTP server does not compete with its own intake for the store.
        """
        loop = asyncio.get_running_loop()
        written: object = None
        last_write = -float("inf")
        while not self.stop.is_set():
            snapshot = self._snapshot()
            if snapshot != written or loop.time() - last_write >= self.heartbeat_s:
                self.changed.clear()
                try:
                    await asyncio.to_thread(self._write_states)
                    written, last_write = snapshot, loop.time()
                except StorageUnavailable as exc:
                    log.warning("could not record connector status: %s", exc)
                except Exception:
                    log.exception("could not record connector status")
            await _wait_any(min(1.0, self.heartbeat_s), self.stop, self.changed)

    def _snapshot(self) -> object:
        return [
            (
                name,
                e.running,
                e.restarts,
                e.connector.health.last_success_at is not None,
                e.connector.health.last_error,
            )
            for name, e in self.supervised.items()
        ]

    def _write_states(self, final: bool = False) -> None:
        if self.processes == 1:
            workers.record_heartbeat(self.engine, self.instance, self.worker, running=not final)
        now = utcnow()
        # Counted before the write transaction, in a read one: under sustained load the
        # backlog reaches tens of thousands of rows, and counting them inside BEGIN
        # IMMEDIATE held SQLite's one write lock (about 0.2 s at 90,000 pending) while
        # every SMTP sender waited on intake behind it.
        counted = [n for n in self.supervised if n in CONNECTORS and CONNECTORS[n].reports_backlog]
        backlog: dict[str, int] = {}
        if counted:
            with read(self.engine) as conn:
                backlog = dict(
                    conn.execute(
                        select(Intake.connector, func.count())
                        .where(Intake.connector.in_(counted), Intake.state == "pending")
                        .group_by(Intake.connector)
                    ).all()
                )
        with write(self.engine) as conn:
            for name, entry in self.supervised.items():
                health = entry.connector.health
                details = {**health.details, **entry.extra}
                if name in counted:
                    details["backlog"] = backlog.get(name, 0)
                values = {
                    "running": entry.running and not final,
                    "heartbeat_at": now,
                    "last_success_at": health.last_success_at,
                    "last_error": health.last_error,
                    "last_error_at": health.last_error_at,
                    "restarts": entry.restarts,
                    "details": details,
                }
                conn.execute(
                    insert_ignore(conn, ConnectorState, ["connector", "instance"]),
                    [{"connector": name, "instance": self.instance, **values}],
                )
                conn.execute(
                    update(ConnectorState)
                    .where(
                        ConnectorState.connector == name, ConnectorState.instance == self.instance
                    )
                    .values(**values)
                )


def csat_limiter(engine: Engine, settings: csat.CsatSettings) -> csat_page.Limiter:
    """The rating page's per-address token bucket, in the store every instance shares (the
    acknowledgements' and the contact form's buckets)."""

    def take(address: str, now: datetime) -> str | None:
        bucket = Bucket(
            f"csat:address:{address}"[:400],
            settings.page_per_address_burst,
            settings.page_per_address_per_hour,
            "address",
        )
        with write(engine) as conn:
            return take_buckets(conn, [bucket], now)

    return take


async def reindex_signatures(
    engine: Engine, stop: asyncio.Event, *, size: int = 200, retry_s: float = 30.0
) -> int:
    """Rebuild merge-suggestion signatures of the old scheme in the background (issue 24,
    docs/operations/suggestions.md); the number of rows taken.

    Batch by batch, each its own short write transaction, so intake never waits long behind
    it; meanwhile old-scheme cases are only compared with each other, so suggestions keep
    working. Every instance may run it: a row is rebuilt only while it is still of the old
    scheme. A store without such rows costs one count at start.
    """

    def left() -> int:
        with read(engine) as conn:
            return suggestions.legacy_signatures(conn)

    total = 0
    while not stop.is_set():
        try:
            if total == 0 and not await asyncio.to_thread(left):
                return 0
            if total == 0:
                log.info("suggestions: re-indexing signatures of the old MinHash scheme")
            done = await asyncio.to_thread(suggestions.reindex_batch, engine, size)
        except Exception as exc:  # never let the re-index take the daemon down
            log.warning("could not re-index merge-suggestion signatures: %s", exc)
            await _wait_any(retry_s, stop)
            continue
        if not done:
            log.info("suggestions: re-indexed %d signatures of the old scheme", total)
            return total
        total += done
        await asyncio.sleep(0)  # let the loop breathe between batches
    return total


async def _wait_any(seconds: float, *events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def run(settings: Settings, only: Iterable[str] | None = None, *, normalizer: bool = True) -> int:
    try:
        # Before anything starts: every part of the daemon appends to the audit chain.
        audit.permit(settings.audit.allow_unkeyed)
    except audit.AuditKeyMissing as exc:
        print(f"parity: {exc}", file=sys.stderr, flush=True)
        return 78  # EX_CONFIG
    # Before any thread starts: fewer malloc arenas hold less freed memory (normalizer/memory.py).
    memory.limit_arenas()
    daemon = Daemon(settings, only, normalizer=normalizer)
    daemon.announce_start = True  # the banner, once the ports are bound (Daemon.announce)
    return asyncio.run(daemon.run())


def command_hint() -> str:
    """How to run `parity` from here, for hints: the installed script beside this
    interpreter (`.venv/bin/parity` in a checkout), the bare name when that is what PATH
    finds, else the module."""
    script = Path(sys.executable).parent / "parity"
    if not script.exists():
        return f"{sys.executable} -m parity"
    found = shutil.which("parity")
    if found and Path(found).resolve() == script.resolve():
        return "parity"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)
