"""The `parity` command line.

Command names, flags and JSON shapes are an interface other tools use: add, never rename.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import socket
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from connectors.mail.relay import SmtpRelaySender
from connectors.outbox import OutboxDrainer
from connectors.registry import NAMES as CONNECTOR_NAMES
from connectors.registry import RELAY_CHANNEL
from inbox import audit, migrate, outbox, queries
from inbox.channels import IDENTITY_KIND_NAMES
from inbox.db import StorageUnavailable, make_engine, read, write
from inbox.delivery import captured_text
from inbox.models import ConnectorState, Intake, utcnow
from inbox.secrets import mask
from normalizer import backfill, deadletters
from normalizer.intake import RawInput, store
from normalizer.message import CHANNELS
from normalizer.worker import Normalizer
from parity import daemon, doctor, logs, mailboxes, workers
from parity.settings import Settings, SettingsError, load
from parity.status import STALE_AFTER, worker_status
from parity.status import connector_status as connector_status  # re-exported: tests and tools


def _engine(settings: Settings) -> Engine:
    db = settings.database
    return make_engine(
        db.resolved_url(),
        busy_timeout_ms=db.busy_timeout_ms,
        keepalive_s=db.keepalive_s,
        sqlite_cache_mb=db.sqlite_cache_mb,
    )


def _print_json(data: Any) -> None:
    try:
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `parity ... --json | head` is fine
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    Console().print(table)


# --- commands ------------------------------------------------------------------------------


def cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    engine = _engine(settings)
    migrate.upgrade(engine)
    print(f"database at revision {migrate.current(engine)}", flush=True)
    return 0


def cmd_db_current(settings: Settings, args: argparse.Namespace) -> int:
    engine = _engine(settings)
    current, head = migrate.current(engine), migrate.head()
    print(f"current {current}, head {head}")
    return 0 if current == head else 1


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    engine = _engine(settings)
    if migrate.current(engine) != migrate.head():
        migrate.upgrade(engine)  # a fresh embedded install should simply start
    engine.dispose()
    # Prints what it runs, and what not and why.
    return daemon.run(settings, args.only, normalizer=not args.no_normalizer)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    if args.processes is not None and not 1 <= args.processes <= 256:
        raise ValueError("--processes is between 1 and 256")
    engine = _engine(settings)
    if migrate.current(engine) != migrate.head():
        print("parity: the schema is not current; run `parity db upgrade`", file=sys.stderr)
        return 78  # EX_CONFIG: a worker node never migrates; the intake node or an admin does
    engine.dispose()
    return workers.run(settings, args.processes)


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    raw = Path(args.file).read_bytes()
    engine = _engine(settings)
    item = RawInput(
        connector=args.connector,
        channel=args.channel,
        source_key=f"{args.connector}:" + hashlib.sha256(raw).hexdigest(),
        payload=raw,
        envelope={"file": Path(args.file).name},
        acknowledge=not args.no_ack,
    )
    stored = store(engine, [item])[0]
    result: dict[str, Any] = {"intake_id": stored.intake_id, "duplicate": stored.duplicate}
    if not args.no_normalize:
        normalizer = _normalizer(settings, engine)
        for outcome in normalizer.drain():
            if outcome.intake_id == stored.intake_id:
                result["state"] = outcome.state
                result["error"] = outcome.error
        with read(engine) as conn:
            row = conn.execute(
                select(Intake.state, Intake.message_id).where(Intake.id == stored.intake_id)
            ).one()
        result["state"] = row.state
        if row.message_id is not None:
            case = queries.case_of_message(engine, row.message_id)
            result["case"] = case
    _print_json(result)
    return 0 if result.get("state") != "dead" else 2


def cmd_normalize(settings: Settings, args: argparse.Namespace) -> int:
    engine = _engine(settings)
    outcomes = _normalizer(settings, engine).drain()
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.state] = counts.get(outcome.state, 0) + 1
    _print_json(counts)
    return 0


def cmd_cases_list(settings: Settings, args: argparse.Namespace) -> int:
    statuses = (
        ("new", "open", "pending_customer", "resolved")
        if args.all
        else (tuple(args.status) if args.status else queries.OPEN_STATUSES)
    )
    cases = queries.list_cases(
        _engine(settings), statuses=statuses, channel=args.channel, limit=args.limit
    )
    if args.json:
        _print_json(cases)
        return 0
    _table(
        "Queue (channel-blind, by due time)",
        ["reference", "status", "due", "channels", "contact", "messages", "subject"],
        [
            (
                c["reference"],
                c["status"],
                c["due_at"],
                ",".join(c["channels"]),
                c["contact"]["name"],
                c["message_count"],
                c["subject"][:60],
            )
            for c in cases
        ],
    )
    return 0


def cmd_case_show(settings: Settings, args: argparse.Namespace) -> int:
    case = queries.case_detail(_engine(settings), args.reference.upper())
    if case is None:
        print(f"no case {args.reference}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(case)
        return 0
    print(
        f"{case['reference']}  {case['status']}  due {case['due_at']}  "
        f"channels {', '.join(case['channels'])}"
    )
    print(
        f"contact: {case['contact']['name']} "
        + ", ".join(f"{i['channel']}:{i['handle']}" for i in case["contact"]["identities"])
    )
    for m in case["messages"]:
        print(f"\n--- {m['received_at']} {m['direction']} {m['channel']} from {m['from']}")
        if m["subject"]:
            print(f"Subject: {m['subject']}")
        print(m["text"])
    return 0


def cmd_deadletters_list(settings: Settings, args: argparse.Namespace) -> int:
    letters = queries.list_dead_letters(_engine(settings), include_resolved=args.all)
    if args.json:
        _print_json(letters)
        return 0
    _table(
        "Dead letters",
        ["id", "connector", "channel", "created", "size", "error"],
        [
            (d["id"], d["connector"], d["channel"], d["created_at"], d["raw_size"], d["error"][:80])
            for d in letters
        ],
    )
    return 0


def cmd_connectors_status(settings: Settings, args: argparse.Namespace) -> int:
    status = connector_status(settings, _engine(settings))
    if args.json:
        _print_json(status)
        return 0
    _table(
        "Connectors",
        ["name", "enabled", "running", "last success", "backlog", "last error"],
        [
            (
                s["name"],
                "yes" if s["enabled"] else f"no: {s['disabled_reason']}",
                "yes" if s["running"] else "no",
                s["last_success_at"],
                s["backlog"],
                s["last_error"],
            )
            for s in status
        ],
    )
    processes = worker_status(_engine(settings))
    if processes:
        _table(
            "Normalizer worker processes",
            ["instance", "running", "filed", "last success", "last error"],
            [
                (
                    w["instance"],
                    "yes" if w["running"] else "no",
                    w["processed"],
                    w["last_success_at"],
                    w["last_error"],
                )
                for w in processes
            ],
        )
    return 0


def cmd_connectors_check(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 when every named connector runs (on this host unless --anywhere); for healthchecks."""
    host = socket.gethostname()
    status = {s["name"]: s for s in connector_status(settings, _engine(settings))}
    failing = []
    for name in args.names:
        live = [
            i
            for i in status[name]["instances"]
            if i["running"] and (args.anywhere or i["instance"].rsplit(":", 1)[0] == host)
        ]
        if not live:
            why = status[name]["disabled_reason"] or status[name]["last_error"] or "not running"
            failing.append(f"{name}: {why}")
    for line in failing:
        print(line, file=sys.stderr)
    return 1 if failing else 0


def cmd_settings_show(settings: Settings, args: argparse.Namespace) -> int:
    # Secrets never live in settings, so the whole model can be shown; the URL is masked.
    data = settings.model_dump(mode="json")
    data["database"]["url"] = mask(data["database"]["url"])
    # On standard error, so the JSON stays the whole of standard output.
    print(f"parity: settings read from {settings.sources()}", file=sys.stderr)
    _print_json(data)
    return 0


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    if args.audit_command is None:
        return cmd_audit_report(settings, args)
    return int(args.audit_func(settings, args))


def cmd_audit_report(settings: Settings, args: argparse.Namespace) -> int:
    """The per-channel service report. A breach of the parity threshold is flagged in the
    output and on stderr; it makes the exit status 3 only with --fail-on-breach, so tools
    that read the report are not told the command failed."""
    from inbox import report, report_days

    now = utcnow()
    try:
        since = report.parse_since(args.since, now)
        until = report.parse_since(args.until, now) if args.until else now
    except ValueError as exc:
        print(f"parity audit: {exc}", file=sys.stderr)
        return 2
    with _engine(settings).connect() as conn:
        data = report_days.compute(
            conn,
            now=now,
            since=since,
            until=until,
            threshold=settings.audit.parity_ratio_threshold,
            parity_on=settings.audit.parity_on,
        )
    from inbox import csat

    report.add_csat(data, csat.csat_by(_engine(settings), "channel", since, until))
    if args.json:
        _print_json(data)
    elif args.csv:
        sys.stdout.write(report.to_csv(data))
    else:
        sys.stdout.write(report.to_text(data))
        sys.stdout.write(csat.speed_and_csat_text(data["csat"]))
    if data["parity_breach"]:
        print(
            f"PARITY BREACH: ratio {data['parity_ratio']} > threshold "
            f"{data['parity_ratio_threshold']} ({data['parity_worst_channel']} vs "
            f"{data['parity_best_channel']})",
            file=sys.stderr,
        )
        return 3 if args.fail_on_breach else 0
    return 0


def cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    checkpoint = json.loads(Path(args.checkpoint).read_text()) if args.checkpoint else None
    with _engine(settings).connect() as conn:
        result = audit.verify(conn, checkpoint)
    report = {
        "ok": result.ok,
        "rows": result.rows,
        "newest_id": result.newest_id,
        "first_bad_id": result.first_bad_id,
        "problem": result.problem,
        "key_configured": audit.key_configured(),
    }
    if args.json:
        _print_json(report)
    elif result.ok:
        print(f"audit log intact: {result.rows} rows, newest {result.newest_id}")
    else:
        print(f"audit log NOT intact: {result.problem}")
    return 0 if result.ok else 1


def cmd_audit_fold(settings: Settings, args: argparse.Namespace) -> int:
    """Recompute the report's daily rollups of the days that changed (what `parity run` does
    every `[audit] rollup_interval_s`), for stores without the daemon or from cron."""
    from inbox import report_days

    engine = _engine(settings)
    if not report_days.uses_rollups(engine.dialect.name):
        print(
            "parity audit fold: nothing to fold: the report keeps rollups on PostgreSQL only",
            file=sys.stderr,
        )
        folded = report_days.Folded()
    else:
        folded = report_days.fold(engine)
    days = [d.isoformat() for d in folded.days]
    if args.json:
        print(json.dumps({"days": days, "busy": folded.busy}))
    elif folded.busy:
        print("another fold is running; this one left the days to it")
    else:
        print(f"folded {len(days)} day(s)" + (f": {days[0]} to {days[-1]}" if days else ""))
    return 0


def cmd_audit_checkpoint(settings: Settings, args: argparse.Namespace) -> int:
    # With the key it seals first, so the checkpoint covers every chain committed by now.
    # Without it, it only reads: the newest seal, which `parity run` makes at intervals.
    seal_now = audit.key_configured() or settings.audit.allow_unkeyed
    if seal_now:
        audit.permit(settings.audit.allow_unkeyed)
    with write(_engine(settings)) as conn:
        data = audit.checkpoint(conn, seal_now=seal_now)
    if not seal_now:
        print(
            f"parity audit: {audit.KEY_ENV} is not set: no new seal made; this is the "
            "newest seal `parity run` made",
            file=sys.stderr,
        )
    text = json.dumps(data, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


# --- backups -------------------------------------------------------------------------------


def _plain_url(settings: Settings) -> str:
    # The backup tools need the URL itself (its password goes to them by environment only).
    url = settings.database.resolved_url()
    return url if isinstance(url, str) else url.reveal()


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    from parity import backup

    # With the key it seals first, so the backup's checkpoint covers every chain committed
    # by now (as `audit checkpoint` does); without it, the newest seal `parity run` made.
    seal = audit.key_configured() or settings.audit.allow_unkeyed
    if seal:
        audit.permit(settings.audit.allow_unkeyed)
    url = _plain_url(settings)
    try:
        manifest = backup.backup(_engine(settings), url, Path(args.file), seal=seal)
    except backup.BackupError as exc:
        return _fail(str(exc), EXIT_FAILED)
    result = {
        "file": str(args.file),
        "store": manifest["store"],
        "schema_revision": manifest["schema_revision"],
        "taken_at": manifest["taken_at"],
        "audit_checkpoint": manifest["audit_checkpoint"],
        "bytes": Path(args.file).stat().st_size,
    }
    if args.json:
        _print_json(result)
    else:
        print(
            f"backed up the {result['store']} store at schema {result['schema_revision']} to "
            f"{args.file} ({result['bytes']:,} bytes; audit checkpoint seal "
            f"{manifest['audit_checkpoint']['id']})"
        )
    return 0


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    from parity import backup

    url = _plain_url(settings)
    try:
        restored = backup.restore(_engine(settings), url, Path(args.file))
    except backup.BackupError as exc:
        return _fail(str(exc), EXIT_FAILED)
    check = restored.verification
    wanted = restored.manifest["schema_revision"]
    result = {
        "ok": check.ok and restored.revision == wanted,
        "schema_revision": restored.revision,
        "backup_schema_revision": wanted,
        "audit_ok": check.ok,
        "audit_rows": check.rows,
        "audit_problem": check.problem,
        "taken_at": restored.manifest["taken_at"],
    }
    if args.json:
        _print_json(result)
    elif result["ok"]:
        print(
            f"restored the backup of {result['taken_at']} at schema {restored.revision}; audit "
            f"log intact against its checkpoint ({check.rows} rows)"
        )
    else:
        print(
            f"restored, but NOT intact: schema {restored.revision} (backup {wanted}); "
            f"audit: {check.problem or 'ok'}"
        )
    if result["ok"] and migrate.current(_engine(settings)) != migrate.head():
        print("the backup is from an older schema: run `parity db upgrade` next")
    return 0 if result["ok"] else EXIT_FAILED


# --- users (the agent inbox's accounts) ----------------------------------------------------


def _migrated_engine(settings: Settings) -> Engine:
    engine = _engine(settings)
    if migrate.current(engine) != migrate.head():
        migrate.upgrade(engine)  # adding the first user usually comes before the first run
    return engine


def _new_password() -> str:
    from_env = os.environ.get("PARITY_PASSWORD")
    if from_env:
        return from_env
    import getpass

    if not sys.stdin.isatty():
        # getpass would read a line from a pipe (or end in EOFError on none): in a container
        # or a script the password comes from the environment, said in one line.
        raise UsageError(
            "no terminal to ask for the password on: set PARITY_PASSWORD in the environment "
            "of this command (for example: docker compose run --rm -e PARITY_PASSWORD web "
            "parity users add NAME --role admin)"
        )
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def cmd_users_add(settings: Settings, args: argparse.Namespace) -> int:
    from inbox import accounts

    engine = _migrated_engine(settings)
    try:
        user = accounts.add_user(engine, args.name, args.role, _new_password(), actor="cli")
    except accounts.AccountError as exc:
        print(f"parity: {exc}", file=sys.stderr)
        return 1
    print(f"added {user['name']} ({user['role']})")
    return 0


def cmd_users_token(settings: Settings, args: argparse.Namespace) -> int:
    from inbox import accounts

    engine = _migrated_engine(settings)
    try:
        token = accounts.create_token(
            engine, args.name.strip().lower(), label=args.label, actor="cli"
        )
    except (accounts.UnknownAccount, accounts.AccountError) as exc:
        print(f"parity: {exc}", file=sys.stderr)
        return 1
    # Shown once; only its hash is stored. Use it as `Authorization: Bearer <token>`.
    print(token)
    return 0


def cmd_users_list(settings: Settings, args: argparse.Namespace) -> int:
    from inbox import accounts

    users = accounts.list_users(_migrated_engine(settings))
    if args.json:
        _print_json(users)
        return 0
    _table(
        "Users",
        ["name", "role", "disabled", "last login"],
        [(u["name"], u["role"], u["disabled"], u["last_login_at"]) for u in users],
    )
    return 0


def cmd_mailbox_authorize(settings: Settings, args: argparse.Namespace) -> int:
    return mailboxes.authorize(
        settings, _migrated_engine(settings), args.account, flow=args.flow, port=args.port
    )


def cmd_mailbox_status(settings: Settings, args: argparse.Namespace) -> int:
    rows = mailboxes.status_rows(settings, _migrated_engine(settings))
    if args.json:
        _print_json(rows)
    else:
        _table(
            "OAuth accounts",
            ["account", "provider", "status", "reason", "token valid until", "refreshes"],
            [
                (r["account"], r["provider"], r["status"], r["reason"], r["access_expires_at"],
                 r["refreshes"])
                for r in rows
            ],
        )  # fmt: skip
    # 1 when a mailbox cannot sign in: usable from cron or a healthcheck.
    return 1 if any(r["status"] != "ok" for r in rows) else 0


def _add_users_parser(sub: Any) -> None:
    users = sub.add_parser("users", help="agent inbox accounts").add_subparsers(
        dest="users_command", required=True
    )
    add = users.add_parser("add", help="add a user (password from PARITY_PASSWORD or a prompt)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("agent", "manager", "admin"))
    add.set_defaults(func=cmd_users_add)
    token = users.add_parser("token", help="print a new bearer token for the JSON API")
    token.add_argument("name")
    token.add_argument("--label", default="cli", help="a note to tell tokens apart")
    token.set_defaults(func=cmd_users_token)
    listing = users.add_parser("list", help="users and their roles")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_users_list)


# --- satisfaction and alerts (issue 23) -------------------------------------------------------


def cmd_csat_report(settings: Settings, args: argparse.Namespace) -> int:
    """Survey results per channel, side and agent, with the response rate."""
    from inbox import csat, report

    now = utcnow()
    try:
        since = report.parse_since(args.since, now)
        until = report.parse_since(args.until, now) if args.until else now
    except ValueError as exc:
        print(f"parity csat: {exc}", file=sys.stderr)
        return 2
    data = csat.report(_migrated_engine(settings), since, until)
    if args.json:
        _print_json(data)
    else:
        sys.stdout.write(csat.text_table(data))
    return 0


def cmd_csat_plan(settings: Settings, args: argparse.Namespace) -> int:
    """Decide the surveys due now (what `parity run` does every [csat] interval_s)."""
    from inbox import csat
    from inbox.secrets import from_env

    if not settings.csat.enabled:
        print("parity csat: surveys are off ([csat] enabled = false)", file=sys.stderr)
        return 1
    secret = from_env(settings.csat.secret_env)
    done = csat.plan_due(
        _migrated_engine(settings), settings.csat, secret.reveal().encode() if secret else None
    )
    _print_json(done)
    return 0


def cmd_alerts_check(settings: Settings, args: argparse.Namespace) -> int:
    """Evaluate the alert conditions now; raise each new one (email, webhook) once per period."""
    from inbox import alerts

    results = alerts.check(
        _migrated_engine(settings), settings.alerts, settings.audit.parity_ratio_threshold
    )
    if args.json:
        _print_json(results)
    else:
        sys.stdout.write(alerts.describe(results))
    return 0


def cmd_notifications_sweep(settings: Settings, args: argparse.Namespace) -> int:
    """What `parity run` does every `[inbox] notify_sweep_seconds`, once: notify assignees
    of cases about to breach, and queue the email digests that are due."""
    from datetime import timedelta

    from inbox import notifications

    engine, inbox = _migrated_engine(settings), settings.inbox
    now = utcnow()
    with write(engine) as conn:
        breaches = notifications.sweep_breaches(conn, now, inbox.breach_within())
    digests = notifications.send_digests(
        engine,
        after=timedelta(minutes=inbox.digest_after_minutes),
        period=timedelta(minutes=inbox.digest_period_minutes),
        now=now,
    )
    print(f"{breaches} breach notifications added, {digests} digests queued")
    return 0


def _add_csat_parsers(sub: Any) -> None:
    survey = sub.add_parser("csat", help="satisfaction surveys").add_subparsers(
        dest="csat_command", required=True
    )
    results = survey.add_parser("report", help="results per channel, side and agent")
    results.add_argument("--since", default="30d", help="30d, 12h, 2w or an ISO date")
    results.add_argument("--until", help="the period's end (default: now)")
    results.add_argument("--json", action="store_true")
    results.set_defaults(func=cmd_csat_report)
    plan = survey.add_parser("plan", help="ask the surveys due now, then exit")
    plan.set_defaults(func=cmd_csat_plan)
    alert = sub.add_parser("alerts", help="alerts to managers").add_subparsers(
        dest="alerts_command", required=True
    )
    check = alert.add_parser("check", help="evaluate the alert conditions now")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_alerts_check)
    notify = sub.add_parser("notifications", help="agents' notifications").add_subparsers(
        dest="notifications_command", required=True
    )
    notify.add_parser(
        "sweep", help="notify of cases about to breach and queue due digests now, then exit"
    ).set_defaults(func=cmd_notifications_sweep)


# --- teams (issue 22) ------------------------------------------------------------------------

AUTO_ASSIGN_CHOICES = ("off", "round_robin", "load_balanced")


def _teams_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A teams store call; its refusal printed as one line (exit 1), not a traceback."""
    from inbox import casework

    try:
        return fn(*args, **kwargs)
    except (casework.Invalid, casework.NotFound, casework.Conflict) as exc:
        raise UsageError(str(exc)) from exc


def _print_team(team: dict[str, Any]) -> None:
    members = ", ".join(team["members"]) or "no members"
    print(f"{team['name']} (auto-assign {team['auto_assign']}): {members}")


def cmd_teams_add(settings: Settings, args: argparse.Namespace) -> int:
    from inbox import teams

    engine = _migrated_engine(settings)
    _print_team(_teams_call(teams.create_team, engine, "cli", args.name, args.auto_assign))
    return 0


def cmd_teams_member(settings: Settings, args: argparse.Namespace) -> int:
    from inbox import teams

    engine = _migrated_engine(settings)
    change = {"remove": [args.user]} if args.remove else {"add": [args.user]}
    _print_team(_teams_call(teams.set_members, engine, "cli", args.team, **change))
    return 0


def cmd_teams_set(settings: Settings, args: argparse.Namespace) -> int:
    from inbox import teams

    engine = _migrated_engine(settings)
    _print_team(_teams_call(teams.set_auto_assign, engine, "cli", args.team, args.auto_assign))
    return 0


def cmd_teams_list(settings: Settings, args: argparse.Namespace) -> int:
    from inbox import teams

    rows = teams.list_teams(_migrated_engine(settings))
    if args.json:
        _print_json(rows)
        return 0
    _table(
        "Teams",
        ["name", "auto-assign", "members"],
        [(t["name"], t["auto_assign"], ", ".join(t["members"])) for t in rows],
    )
    return 0


def _add_teams_parser(sub: Any) -> None:
    teams = sub.add_parser("teams", help="teams of agents and their members").add_subparsers(
        dest="teams_command", required=True
    )
    add = teams.add_parser("add", help="add a team")
    add.add_argument("name")
    add.add_argument("--auto-assign", default="off", choices=AUTO_ASSIGN_CHOICES)
    add.set_defaults(func=cmd_teams_add)
    member = teams.add_parser("member", help="add a user to a team (--remove: take them out)")
    member.add_argument("team")
    member.add_argument("user")
    member.add_argument("--remove", action="store_true")
    member.set_defaults(func=cmd_teams_member)
    change = teams.add_parser("set", help="change a team's auto-assignment")
    change.add_argument("team")
    change.add_argument("--auto-assign", required=True, choices=AUTO_ASSIGN_CHOICES)
    change.set_defaults(func=cmd_teams_set)
    listing = teams.add_parser("list", help="teams, their members and auto-assignment")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_teams_list)


# --- one person, one case: merges, identity links (issue 11) ---------------------------------


def _cli_principal() -> Any:
    from inbox.accounts import Principal

    # Whoever runs the CLI administers the host; the audit log names them "user:cli".
    return Principal(id=0, name="cli", role="admin", via="cli")


def _store_action(settings: Settings, action: Any) -> int:
    from inbox.casework import Conflict, Invalid, NotFound

    try:
        _print_json(action(_migrated_engine(settings)))
    except (NotFound, Conflict, Invalid) as exc:
        print(f"parity: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_cases_merge(settings: Settings, args: argparse.Namespace) -> int:
    from inbox import merges

    return _store_action(
        settings,
        lambda e: merges.merge(e, _cli_principal(), args.source, args.into, force=args.force),
    )


def cmd_cases_unmerge(settings: Settings, args: argparse.Namespace) -> int:
    from inbox import merges

    return _store_action(
        settings, lambda e: merges.undo(e, _cli_principal(), args.merge_id, force=args.force)
    )


def cmd_cases_suggestions(settings: Settings, args: argparse.Namespace) -> int:
    from inbox import suggestions

    return _store_action(settings, lambda e: suggestions.for_reference(e, args.reference))


def cmd_contacts_link(settings: Settings, args: argparse.Namespace) -> int:
    from inbox import identities

    return _store_action(
        settings,
        lambda e: identities.link(
            e,
            _cli_principal(),
            args.channel,
            args.handle,
            contact_id=args.to_contact,
            case_reference=args.to_case,
        ),
    )


def cmd_contacts_unlink(settings: Settings, args: argparse.Namespace) -> int:
    from inbox import identities

    return _store_action(
        settings, lambda e: identities.unlink(e, _cli_principal(), args.channel, args.handle)
    )


def cmd_contacts_erase(settings: Settings, args: argparse.Namespace) -> int:
    """Erase a contact (GDPR art. 17): docs/operations/erasure.md. Exit 0 erased, 1 not
    found, 2 without --yes."""
    from inbox import erasure

    engine = _engine(settings)
    with read(engine) as conn:
        try:
            contact_id = erasure.find_contact(conn, args.contact)
        except erasure.NotFound as exc:
            return _fail(str(exc), EXIT_FAILED)
    if not args.yes:
        return _fail(
            f"this erases contact {contact_id} and all their messages for good: "
            "run again with --yes",
            EXIT_USAGE,
        )
    result = erasure.erase_contact(engine, contact_id, actor="cli")
    if args.json:
        _print_json(result.counts())
        return EXIT_OK
    counts = result.counts()
    print(
        f"erased contact {contact_id}: {counts['cases']} cases, {counts['messages']} messages, "
        f"{counts['attachments']} attachments, {counts['identities']} identities, "
        f"{counts['outbox']} outbox rows, {counts['dead_letters']} dead letters, "
        f"{counts['blobs_removed']} blobs removed ({counts['blobs_kept_shared']} kept: "
        f"shared), {counts['audit_values']} audit values"
    )
    if result.audit_rows_before_0020:
        print(
            f"note: {result.audit_rows_before_0020} audit rows name this contact but no longer "
            "match their HMAC, so they were kept as they are: run `parity audit verify`"
        )
    return EXIT_OK


def cmd_retention_run(settings: Settings, args: argparse.Namespace) -> int:
    """Apply [retention] now: erase the content of cases resolved too long ago, and remove
    reply uploads never sent (unsent_upload_hours)."""
    from inbox import erasure, uploads

    policy = settings.retention
    engine = _engine(settings)
    swept = uploads.Swept(0, 0)
    if policy.unsent_upload_hours > 0:
        swept = uploads.sweep(engine, keep=timedelta(hours=policy.unsent_upload_hours))
    count = erasure.run_retention(engine, policy.resolved_case_days, policy.channels, CHANNELS)
    if args.json:
        _print_json({"cases_erased": count, "unsent_uploads_removed": swept.uploads})
    else:
        print(f"retention: erased the content of {count} resolved cases")
        print(f"retention: removed {swept.uploads} unsent reply uploads ({swept.blobs} blobs)")
    return EXIT_OK


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def cmd_suggestions_reindex(settings: Settings, args: argparse.Namespace) -> int:
    """Rebuild merge-suggestion signatures of the old MinHash scheme from the stored messages
    (docs/operations/suggestions.md). Exit 0 done (also when nothing was left), 75 the
    database is unavailable (run it again: it resumes)."""
    from inbox import suggestions

    engine = _migrated_engine(settings)
    with read(engine) as conn:
        before = suggestions.legacy_signatures(conn)
    total = suggestions.reindex(engine, size=args.batch)
    if args.json:
        _print_json({"old_scheme_before": before, "reindexed": total})
    else:
        print(f"suggestions: re-indexed {total} signatures of the old scheme ({before} found)")
    return EXIT_OK


def _add_merge_commands(cases: Any, sub: Any) -> None:
    merge = cases.add_parser("merge", help="merge case SOURCE into case INTO (undoable)")
    merge.add_argument("source")
    merge.add_argument("into")
    merge.add_argument("--force", action="store_true", help="even if an agent holds a case")
    merge.set_defaults(func=cmd_cases_merge)
    unmerge = cases.add_parser("unmerge", help="undo a merge by its id")
    unmerge.add_argument("merge_id", type=int)
    unmerge.add_argument("--force", action="store_true", help="even if an agent holds the case")
    unmerge.set_defaults(func=cmd_cases_unmerge)
    similar = cases.add_parser("suggestions", help="near-duplicate open cases of other people")
    similar.add_argument("reference")
    similar.set_defaults(func=cmd_cases_suggestions)
    contacts = sub.add_parser("contacts", help="contacts and their identities").add_subparsers(
        dest="contacts_command", required=True
    )
    kinds = IDENTITY_KIND_NAMES
    link = contacts.add_parser("link", help="link an identity to another contact")
    link.add_argument("channel", choices=kinds)
    link.add_argument("handle")
    target = link.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-contact", type=int, help="the contact id")
    target.add_argument("--to-case", help="a case reference: its contact")
    link.set_defaults(func=cmd_contacts_link)
    unlink = contacts.add_parser("unlink", help="give an identity a contact of its own again")
    unlink.add_argument("channel", choices=kinds)
    unlink.add_argument("handle")
    unlink.set_defaults(func=cmd_contacts_unlink)
    erase = contacts.add_parser(
        "erase", help="erase a contact and everything of theirs (GDPR); needs --yes"
    )
    erase.add_argument("contact", help="the contact id, or one of their identity handles")
    erase.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    erase.add_argument("--json", action="store_true", help="print the counts as JSON")
    erase.set_defaults(func=cmd_contacts_erase)
    similar_sub = sub.add_parser("suggestions", help="the merge suggestions' index").add_subparsers(
        dest="suggestions_command", required=True
    )
    reindex = similar_sub.add_parser(
        "reindex", help="rebuild signatures of the old MinHash scheme (resumable)"
    )
    reindex.add_argument("--batch", type=_positive_int, default=200, help="cases per transaction")
    reindex.add_argument("--json", action="store_true", help="print the counts as JSON")
    reindex.set_defaults(func=cmd_suggestions_reindex)
    retention = sub.add_parser(
        "retention", help="erase the content of cases past [retention]"
    ).add_subparsers(dest="retention_command", required=True)
    retention_run = retention.add_parser("run", help="apply the retention policy now")
    retention_run.add_argument("--json", action="store_true", help="print the count as JSON")
    retention_run.set_defaults(func=cmd_retention_run)


# --- the outbox, dead letters and imports ----------------------------------------------------


def _normalizer(settings: Settings, engine: Engine) -> Normalizer:
    return workers.normalizer_for(settings, engine)


def cmd_outbox_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = outbox.list_rows(
        _engine(settings),
        states=args.state,
        channel=args.channel,
        case_reference=args.case.upper() if args.case else None,
        limit=args.limit,
    )
    if args.json:
        _print_json(rows)
        return 0
    _table(
        "Outbox (newest first)",
        ["id", "channel", "kind", "recipient", "case", "state", "attempts", "last error"],
        [
            (
                r["id"],
                r["channel"],
                r["kind"],
                r["recipient"],
                r["case"],
                r["state"],
                r["attempts"],
                (r["last_error"] or "")[:80],
            )
            for r in rows
        ],
    )
    return 0


def cmd_outbox_show(settings: Settings, args: argparse.Namespace) -> int:
    row = outbox.detail(_engine(settings), args.id)
    if row is None:
        print(f"no outbox row {args.id}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(row)
        return 0
    print(
        f"#{row['id']} {row['kind']} on {row['channel']} to {row['recipient']} "
        f"(case {row['case']}): {row['state']} after {row['attempts']} attempt(s)"
    )
    if row["message_id"]:
        print(f"Message-ID: <{row['message_id']}>")
    if row["subject"]:
        print(f"Subject: {row['subject']}")
    print(f"\n{row['body']}")
    for attempt in row["attempt_log"]:
        print(f"{attempt['at']}  {attempt['outcome']:8} {attempt['error'] or ''}")
    return 0


def cmd_outbox_retry(settings: Settings, args: argparse.Namespace) -> int:
    if outbox.requeue(_engine(settings), args.id):
        print(f"outbox row {args.id} queued again")
        return 0
    print(f"outbox row {args.id} is not failed or unknown; nothing to retry", file=sys.stderr)
    return 1


def cmd_outbox_status(settings: Settings, args: argparse.Namespace) -> int:
    engine = _engine(settings)
    can_send, why = daemon.outbox_availability(settings)
    now = utcnow()
    with engine.connect() as conn:
        senders = [
            {
                "name": r.connector,
                "instance": r.instance,
                "running": bool(r.running and now - r.heartbeat_at < STALE_AFTER),
                "last_success_at": queries.iso(r.last_success_at),
                "last_error": r.last_error,
            }
            for r in conn.execute(
                select(ConnectorState)
                .where(ConnectorState.connector.like("outbox-%"))
                .order_by(ConnectorState.connector, ConnectorState.instance)
            )
        ]
    # Trial mode: the relay "sends" into a Maildir nobody reads; said as the banner says it
    # (inbox.delivery), never as sendable.
    captured_to = settings.outbox.email.capture_dir or None
    if can_send and captured_to:
        can_send, why = False, captured_text(RELAY_CHANNEL, captured_to)
    channels = outbox.counts(engine)
    status = {
        # An output format, kept as it is: the relay's availability (outbox_availability)
        # under the name of the channel it sends, first.
        RELAY_CHANNEL: {"can_send": can_send, "reason": why, "captured_to": captured_to},
        "channels": channels,
        "senders": senders,
    }
    if args.json:
        _print_json(status)
        return 0
    if captured_to and why:
        print(f"{RELAY_CHANNEL}: captured, not sent: {why}")
    else:
        print(f"{RELAY_CHANNEL}: {'can send' if can_send else 'cannot send: ' + str(why)}")
    _table(
        "Outbox by channel",
        ["channel", *outbox.STATES, "oldest queued"],
        [
            (channel, *entry["states"].values(), entry["oldest_queued_at"])
            for channel, entry in channels.items()
        ],
    )
    for sender in senders:
        print(
            f"{sender['name']} on {sender['instance']}: "
            f"{'running' if sender['running'] else 'not running'}, last success "
            f"{sender['last_success_at']}, last error {sender['last_error']}"
        )
    return 0


def cmd_outbox_send(settings: Settings, args: argparse.Namespace) -> int:
    ok, why = daemon.outbox_availability(settings)
    if not ok:
        print(f"parity: email cannot be sent: {why}", file=sys.stderr)
        return 1
    drainer = OutboxDrainer(
        _engine(settings),
        SmtpRelaySender(settings.outbox.email),
        settings.outbox,
        worker=f"cli:{os.getpid()}",
    )
    report = drainer.drain_once(max_rows=args.limit)
    _print_json(
        {
            "recovered": report.recovered,
            "sent": report.sent,
            "retried": report.retried,
            "failed": report.failed,
        }
    )
    return 0


def cmd_deadletters_show(settings: Settings, args: argparse.Namespace) -> int:
    letter = queries.dead_letter_detail(_engine(settings), args.id)
    if letter is None:
        print(f"no dead letter {args.id}", file=sys.stderr)
        return 1
    raw: bytes = letter.pop("raw")
    if args.raw:
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()
        return 0
    if args.json:
        letter["raw_text"] = raw.decode("utf-8", "replace")
        letter["raw_base64"] = base64.b64encode(raw).decode("ascii")
        _print_json(letter)
        return 0
    print(
        f"dead letter {letter['id']} from {letter['connector']} ({letter['channel']}), "
        f"{letter['created_at']}, {letter['raw_size']} bytes, replayed {letter['replays']} "
        f"time(s){', resolved as ' + str(letter['case']) if letter['resolved'] else ''}"
    )
    print(f"error: {letter['error']}\n")
    print(raw.decode("utf-8", "replace"))
    return 0


def cmd_deadletters_replay(settings: Settings, args: argparse.Namespace) -> int:
    if (args.id is None) == (not args.all):
        print("parity: give a dead letter ID or --all", file=sys.stderr)
        return 2
    engine = _engine(settings)
    normalizer = _normalizer(settings, engine)
    results = (
        deadletters.replay_all(engine, normalizer)
        if args.all
        else [deadletters.replay(engine, normalizer, args.id)]
    )
    shaped = [
        {"id": r.dead_letter_id, "outcome": r.outcome, "case": r.case, "error": r.error}
        for r in results
    ]
    if args.json:
        _print_json(shaped)
    else:
        for r in shaped:
            print(
                f"dead letter {r['id']}: {r['outcome']}"
                + (f" -> {r['case']}" if r["case"] else "")
                + (f" ({r['error']})" if r["error"] else "")
            )
    return 1 if any(r.outcome == "not found" for r in results) else 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    source = backfill.mbox_messages if args.format == "mbox" else backfill.maildir_messages
    total, messages = source(args.path)
    engine = _engine(settings)
    normalizer = _normalizer(settings, engine)
    progress = Progress(
        TextColumn("[bold]importing[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with progress:
        task = progress.add_task(Path(args.path).name, total=total)
        summary = backfill.import_messages(
            engine,
            normalizer,
            messages,
            origin=f"{args.format}:{Path(args.path).name}",
            progress=lambda n: progress.advance(task, n),
        )
    result = {
        "read": summary.read,
        "imported": summary.imported,
        "duplicates": summary.duplicates,
        "dead_lettered": summary.dead_lettered,
        "left_to_worker": summary.elsewhere,
    }
    if args.json:
        _print_json(result)
    else:
        print(
            f"imported {summary.imported}, duplicates {summary.duplicates}, "
            f"dead-lettered {summary.dead_lettered}"
            + (f", left to the running worker {summary.elsewhere}" if summary.elsewhere else "")
            + f" (of {summary.read} read)"
        )
    return 0


def _add_outbox_commands(sub: Any) -> None:
    """`parity outbox`, `parity deadletters show|replay` and `parity import`."""
    box = sub.add_parser(
        "outbox", help="outbound messages: acknowledgements, replies"
    ).add_subparsers(dest="outbox_command", required=True)
    listing = box.add_parser("list", help="outbox rows, newest first")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--state", nargs="+", choices=outbox.STATES)
    listing.add_argument("--channel", choices=CHANNELS)
    listing.add_argument("--case", help="only rows of this case (C-...)")
    listing.add_argument("--limit", type=int)
    listing.set_defaults(func=cmd_outbox_list)
    show = box.add_parser("show", help="one row with its text and every attempt")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_outbox_show)
    retry = box.add_parser("retry", help="send a failed or unknown row again")
    retry.add_argument("id", type=int)
    retry.set_defaults(func=cmd_outbox_retry)
    status = box.add_parser("status", help="rows per channel and state, and the senders")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_outbox_status)
    send = box.add_parser("send", help="send due email now, without `parity run`, then exit")
    send.add_argument("--limit", type=int, help="at most this many rows")
    send.set_defaults(func=cmd_outbox_send)

    imports = sub.add_parser("import", help="backfill old mail; never acknowledged").add_subparsers(
        dest="import_command", required=True
    )
    for fmt, what in (("mbox", "an mbox file"), ("maildir", "a Maildir directory")):
        cmd = imports.add_parser(fmt, help=f"import {what}")
        cmd.add_argument("path", metavar="FILE" if fmt == "mbox" else "DIR")
        cmd.add_argument("--json", action="store_true", help="print the summary as JSON")
        cmd.set_defaults(func=cmd_import, format=fmt)


def _add_deadletter_commands(dead: Any) -> None:
    show = dead.add_parser("show", help="a dead letter's error and raw input")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    show.add_argument("--raw", action="store_true", help="write the exact raw bytes to stdout")
    show.set_defaults(func=cmd_deadletters_show)
    replay = dead.add_parser("replay", help="run dead letters through intake again, after a fix")
    replay.add_argument("id", type=int, nargs="?")
    replay.add_argument("--all", action="store_true", help="every unresolved dead letter")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=cmd_deadletters_replay)


# --- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parity", description=__doc__)
    parser.add_argument(
        "--settings", help="settings file (default: $PARITY_SETTINGS or ./settings.toml)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True
    )
    db.add_parser("upgrade", help="migrate to the newest schema").set_defaults(func=cmd_db_upgrade)
    db.add_parser("current", help="show the schema revision").set_defaults(func=cmd_db_current)

    run = sub.add_parser("run", help="run the enabled connectors and the normalizer")
    run.add_argument(
        "--only",
        nargs="+",
        choices=CONNECTOR_NAMES,
        metavar="NAME",
        help=f"run only these connectors ({', '.join(CONNECTOR_NAMES)})",
    )
    run.add_argument(
        "--no-normalizer",
        action="store_true",
        help="take input in only; `parity worker` processes elsewhere file it into cases",
    )
    run.set_defaults(func=cmd_run)

    worker = sub.add_parser(
        "worker",
        help="run normalizer workers only (no HTTP, SMTP or pollers) until stopped",
    )
    worker.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="worker processes (default: [normalizer] processes; 1 on SQLite, cores on PostgreSQL)",
    )
    worker.set_defaults(func=cmd_worker)

    ingest = sub.add_parser(
        "ingest", help="feed one raw message through intake, as a connector would"
    )
    ingest.add_argument("file")
    ingest.add_argument("--channel", required=True, choices=CHANNELS)
    ingest.add_argument("--connector", default="cli")
    ingest.add_argument(
        "--no-normalize", action="store_true", help="store only; leave it to the worker"
    )
    ingest.add_argument("--no-ack", action="store_true", help="never acknowledge (history)")
    ingest.set_defaults(func=cmd_ingest)

    sub.add_parser("normalize", help="normalize all stored input now").set_defaults(
        func=cmd_normalize
    )

    cases = sub.add_parser("cases", help="the case queue").add_subparsers(
        dest="cases_command", required=True
    )
    listing = cases.add_parser("list", help="cases in queue order")
    listing.add_argument("--json", action="store_true")
    listing.add_argument(
        "--status", nargs="+", choices=("new", "open", "pending_customer", "resolved")
    )
    listing.add_argument("--all", action="store_true", help="resolved cases too")
    listing.add_argument(
        "--channel", choices=CHANNELS, help="only cases that have seen this channel"
    )
    listing.add_argument("--limit", type=int)
    listing.set_defaults(func=cmd_cases_list)
    _add_merge_commands(cases, sub)

    case = sub.add_parser("case", help="one case").add_subparsers(
        dest="case_command", required=True
    )
    show = case.add_parser("show", help="a case with its messages")
    show.add_argument("reference")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_case_show)

    dead = sub.add_parser("deadletters", help="input that could not be parsed").add_subparsers(
        dest="dl_command", required=True
    )
    dl_list = dead.add_parser("list")
    dl_list.add_argument("--json", action="store_true")
    dl_list.add_argument("--all", action="store_true", help="replayed ones too")
    dl_list.set_defaults(func=cmd_deadletters_list)
    _add_deadletter_commands(dead)
    _add_outbox_commands(sub)

    # --- parity doctor (issue 13) ---
    sub.add_parser(
        "doctor", help="check settings, database, connectors and secrets; say what to fix"
    ).set_defaults(doctor=True, func=None)

    conns = sub.add_parser("connectors", help="connector health").add_subparsers(
        dest="conn_command", required=True
    )
    status = conns.add_parser("status")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_connectors_status)
    check = conns.add_parser(
        "check", help="exit 0 when these connectors run on this host (for healthchecks)"
    )
    check.add_argument("names", nargs="+", choices=CONNECTOR_NAMES, metavar="NAME")
    check.add_argument("--anywhere", action="store_true", help="on any host sharing the store")
    check.set_defaults(func=cmd_connectors_check)

    audit_parser = sub.add_parser("audit", help="manager audit and the tamper-evident audit log")
    audit_parser.set_defaults(func=cmd_audit)
    audit_parser.add_argument("--since", default="30d", help="30d, 12h, 2w or an ISO date")
    audit_parser.add_argument("--until", help="the period's end (default: now)")
    audit_format = audit_parser.add_mutually_exclusive_group()
    audit_format.add_argument("--json", action="store_true", help="the report as JSON")
    audit_format.add_argument("--csv", action="store_true", help="the table as CSV")
    audit_parser.add_argument(
        "--fail-on-breach",
        action="store_true",
        help="exit 3 when the parity ratio breaches the threshold (for cron and CI)",
    )
    audit_sub = audit_parser.add_subparsers(dest="audit_command")
    verify = audit_sub.add_parser("verify", help="check the HMAC chain of the audit log")
    verify.add_argument("--checkpoint", help="a file written by `parity audit checkpoint`")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(audit_func=cmd_audit_verify)
    export = audit_sub.add_parser("checkpoint", help="export the newest row's HMAC")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    export.set_defaults(audit_func=cmd_audit_checkpoint)
    fold_cmd = audit_sub.add_parser(
        "fold", help="recompute the report's daily rollups of the days that changed"
    )
    fold_cmd.add_argument("--json", action="store_true")
    fold_cmd.set_defaults(audit_func=cmd_audit_fold)

    backup_cmd = sub.add_parser(
        "backup", help="write a consistent copy of the store, with an audit checkpoint, to FILE"
    )
    backup_cmd.add_argument("file", help="the backup file to write (replaced atomically)")
    backup_cmd.add_argument("--json", action="store_true", help="print the result as JSON")
    backup_cmd.set_defaults(func=cmd_backup)
    restore_cmd = sub.add_parser(
        "restore", help="restore FILE into an empty store and verify it against its checkpoint"
    )
    restore_cmd.add_argument("file", help="a file `parity backup` wrote")
    restore_cmd.add_argument("--json", action="store_true", help="print the result as JSON")
    restore_cmd.set_defaults(func=cmd_restore)

    settings_cmd = sub.add_parser("settings", help="settings").add_subparsers(
        dest="settings_command", required=True
    )
    settings_cmd.add_parser("show", help="the effective settings").set_defaults(
        func=cmd_settings_show
    )
    _add_users_parser(sub)
    _add_teams_parser(sub)
    mailboxes.add_parser(sub, cmd_mailbox_authorize, cmd_mailbox_status)
    _add_csat_parsers(sub)
    return parser


class UsageError(ValueError):
    """A command given what it cannot use; the message says what to do instead (exit 2)."""


# Exit statuses, in the sysexits tradition and listed in the commands reference.
EXIT_OK = 0
EXIT_FAILED = 1  # a check failed (a report of trouble, not an error of the command)
EXIT_USAGE = 2
EXIT_NO_INPUT = 66  # a file named on the command line cannot be read
EXIT_SOFTWARE = 70  # a bug: the one line names it; PARITY_TRACEBACK=1 shows where
EXIT_IO = 74
EXIT_TEMPFAIL = 75  # the database is unavailable
EXIT_CONFIG = 78
EXIT_INTERRUPTED = 130


def _no_schema(exc: Exception) -> bool:
    text = str(getattr(exc, "orig", exc))
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def _fail(message: str, code: int) -> int:
    print(f"parity: {message}", file=sys.stderr, flush=True)
    return code


# The commands that write audit rows (or, for verify, recompute their HMACs): each stops at
# start-up without PARITY_AUDIT_KEY unless [audit] allow_unkeyed, before touching the store.
AUDITED = frozenset(
    {
        cmd_run,
        cmd_worker,
        cmd_ingest,
        cmd_normalize,
        cmd_import,
        cmd_deadletters_replay,
        cmd_outbox_send,
        cmd_users_add,
        cmd_users_token,
        cmd_teams_add,
        cmd_teams_member,
        cmd_teams_set,
        cmd_cases_merge,
        cmd_cases_unmerge,
        cmd_contacts_link,
        cmd_contacts_unlink,
        cmd_contacts_erase,
        cmd_retention_run,
        cmd_audit_verify,
        cmd_restore,
        cmd_alerts_check,
        cmd_csat_plan,
    }
)


def needs_audit_key(args: argparse.Namespace) -> bool:
    func = getattr(args, "func", None)
    if func is cmd_audit:
        func = getattr(args, "audit_func", None)
    return func in AUDITED


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "doctor", False):
        # The doctor reports a broken settings file instead of stopping at it.
        return doctor.report(args.settings)
    try:
        settings = load(args.settings)
        if needs_audit_key(args):
            audit.permit(settings.audit.allow_unkeyed)
    except (SettingsError, audit.AuditKeyMissing) as exc:
        print(f"parity: {exc}", file=sys.stderr)
        return 78  # EX_CONFIG
    logs.configure(settings.logging.level, settings.logging.json_lines)
    try:
        return int(args.func(settings, args))
    except audit.AuditKeyMissing as exc:  # a write this table did not foresee: still refused
        print(f"parity: {exc}", file=sys.stderr)
        return 78
    except StorageUnavailable as exc:
        print(f"parity: the database is unavailable: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL
    except (OperationalError, ProgrammingError) as exc:
        if _no_schema(exc):  # a fresh database the command reached before `db upgrade`
            return _fail(
                "the database has no Parity schema yet: run `parity db upgrade` first", EXIT_CONFIG
            )
        if isinstance(exc, ProgrammingError):
            raise
        # cannot connect at all (a read, a migration)
        print(f"parity: the database is unavailable: {mask(str(exc.orig))}", file=sys.stderr)
        return 75
    except ValueError as exc:
        print(f"parity: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        return _fail(f"cannot read {exc.filename or 'the file'}: {exc.strerror}", EXIT_NO_INPUT)
    except PermissionError as exc:
        return _fail(f"{exc.filename or 'a file'}: permission denied", EXIT_NO_INPUT)
    except OSError as exc:
        return _fail(f"{type(exc).__name__}: {mask(str(exc))}", EXIT_IO)
    except (KeyboardInterrupt, EOFError):
        return _fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:
        # One line, never a traceback a user has to read; the traceback is there on request.
        if os.environ.get("PARITY_TRACEBACK"):
            raise
        return _fail(
            f"internal error: {type(exc).__name__}: {mask(str(exc))[:300]} "
            "(set PARITY_TRACEBACK=1 to see where, and report it)",
            EXIT_SOFTWARE,
        )
