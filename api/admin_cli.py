"""`afterlive sweep | hold | release | extend | takedown`: retention from the command line.

When `afterlive serve` is running, the command goes through its admin API (the only way to stop
a live publisher on a takedown). When it is not, the command opens the catalog and the store
itself (starting the embedded store for the duration), so a cron job can sweep a stopped node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from api.settings import Settings
from storage import lifecycle


def add_commands(sub: argparse._SubParsersAction) -> None:
    sweep = sub.add_parser(
        "sweep", help="delete expired recordings now (the service does it every minute)"
    )
    sweep.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    sweep.set_defaults(run=_sweep)

    hold = sub.add_parser("hold", help="put a recording on hold: it does not expire until released")
    hold.add_argument("recording_id")
    hold.add_argument("--reason", default="", help="why (kept in the audit log)")
    hold.set_defaults(run=_hold)

    release = sub.add_parser("release", help="release a hold (expires at the earliest in 1 h)")
    release.add_argument("recording_id")
    release.set_defaults(run=_release)

    extend = sub.add_parser("extend", help="push a recording's expiry back by some hours")
    extend.add_argument("recording_id")
    extend.add_argument("hours", type=float)
    extend.set_defaults(run=_extend)

    rule = sub.add_parser(
        "lifecycle", help="print (or --apply) the S3 lifecycle rule of the retention safety net"
    )
    rule.add_argument("--apply", action="store_true", help="put the rule on the bucket")
    rule.add_argument("--margin-days", type=int, default=lifecycle.DEFAULT_MARGIN_DAYS)
    rule.set_defaults(run=_lifecycle)

    takedown = sub.add_parser("takedown", help="delete a recording now, live or not")
    takedown.add_argument("recording_id")
    takedown.add_argument(
        "--include-derived", action="store_true", help="also delete the clips cut from it"
    )
    takedown.set_defaults(run=_takedown)


class ServiceDown(Exception):
    pass


def call_api(base: str, token: str, method: str, path: str, body: dict | None = None) -> Any:
    """One JSON call to the running service. An HTTP error becomes ValueError("code: detail");
    ServiceDown if nothing answers."""
    request = urllib.request.Request(
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as exc:
        try:
            detail = json.load(exc).get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        raise ValueError(f"{exc.code}: {detail}") from None
    except (urllib.error.URLError, ConnectionError) as exc:
        raise ServiceDown(f"afterlive serve does not answer at {base}: {exc}") from exc


def _api(settings: Settings, method: str, path: str, body: dict | None = None) -> Any:
    """The admin API of the running service."""
    return call_api(settings.local_api_url, settings.ensure_admin_token(), method, path, body)


@contextlib.contextmanager
def _local(settings: Settings) -> Iterator[Any]:
    """The runtime's retention parts without the service: store (embedded if so configured),
    catalog, sweeper."""
    from api.runtime import assemble, open_catalog

    with _local_store(settings) as store:
        catalog = open_catalog(settings)
        runtime = assemble(settings, store=store, catalog=catalog)
        try:
            yield runtime
        finally:
            runtime.clips.close()
            runtime.programmes.close()
            runtime.uploader.close()
            catalog.dispose()


def _run(settings: Settings, remote, local) -> Any:
    try:
        return remote()
    except ServiceDown:
        print("afterlive serve is not answering: working on the store directly", file=sys.stderr)
        with _local(settings) as runtime:
            try:
                return local(runtime)
            except KeyError as exc:
                raise ValueError(f"no recording {exc.args[0]}") from None


def _sweep(settings: Settings, args: argparse.Namespace) -> int:
    from api.routes.admin import sweep_out

    query = "?dry_run=true" if args.dry_run else ""
    report = _run(
        settings,
        lambda: _api(settings, "POST", f"/api/admin/sweep{query}"),
        lambda rt: sweep_out(rt.retention.sweep(dry_run=args.dry_run), args.dry_run).model_dump(
            mode="json"
        ),
    )
    if args.dry_run:
        for p in report["planned"]:
            print(
                f"would delete {p['recording_id']} ({p['reason']}, expired {p['expires_at']}, "
                f"{p['objects']} segments, {p['bytes']} bytes)"
            )
        print(f"{len(report['planned'])} recording(s) due")
    else:
        for e in report["deleted"]:
            print(
                f"deleted {e['recording_id']} ({e['action']}): {e['objects_deleted']} objects, "
                f"{e['bytes_deleted']} bytes"
            )
        for rec, error in report["failed"].items():
            print(f"not deleted yet {rec}: {error}", file=sys.stderr)
        print(f"{len(report['deleted'])} recording(s) deleted in {report['seconds']} s")
    return 1 if report["failed"] else 0


def _change(settings: Settings, recording_id: str, action: str, body: dict, local) -> int:
    from api.routes.admin import admin_view

    item = _run(
        settings,
        lambda: _api(settings, "POST", f"/api/admin/recordings/{recording_id}/{action}", body),
        lambda rt: admin_view(rt, recording_id, local(rt)).model_dump(mode="json"),
    )
    held = " (held)" if item["held"] else ""
    print(f"{item['id']} {item['status']}{held}, expires {item['expires_at'] or 'after its live'}")
    return 0


def _hold(settings: Settings, args: argparse.Namespace) -> int:
    return _change(
        settings,
        args.recording_id,
        "hold",
        {"reason": args.reason},
        lambda rt: rt.retention.hold(args.recording_id, actor="admin (cli)", reason=args.reason),
    )


def _release(settings: Settings, args: argparse.Namespace) -> int:
    return _change(
        settings,
        args.recording_id,
        "release",
        {},
        lambda rt: rt.retention.release(args.recording_id, actor="admin (cli)"),
    )


def _extend(settings: Settings, args: argparse.Namespace) -> int:
    if args.hours <= 0:
        raise ValueError("hours must be more than 0")
    return _change(
        settings,
        args.recording_id,
        "extend",
        {"hours": args.hours},
        lambda rt: rt.retention.extend(args.recording_id, actor="admin (cli)", hours=args.hours),
    )


def _takedown(settings: Settings, args: argparse.Namespace) -> int:
    derived = "true" if args.include_derived else "false"

    def local(rt) -> dict:
        event = asyncio.run(
            rt.retention.take_down(
                args.recording_id, actor="admin (cli)", include_derived=args.include_derived
            )
        )
        return {"objects_deleted": event.objects_deleted, "bytes_deleted": event.bytes_deleted}

    event = _run(
        settings,
        lambda: _api(
            settings,
            "DELETE",
            f"/api/admin/recordings/{args.recording_id}?include_derived={derived}",
        ),
        local,
    )
    print(
        f"{args.recording_id} taken down: {event['objects_deleted']} objects, "
        f"{event['bytes_deleted']} bytes deleted"
    )
    return 0


def _lifecycle(settings: Settings, args: argparse.Namespace) -> int:
    days = lifecycle.expiration_days(settings.retention, args.margin_days)
    rule = lifecycle.safety_net_rule(days)
    print(json.dumps({"Rules": [rule]}, indent=2))
    if not settings.lifecycle_safety_net:
        print(
            "note: objects are tagged for this rule only with AFTERLIVE_LIFECYCLE_SAFETY_NET=true",
            file=sys.stderr,
        )
    if args.apply:
        with _local_store(settings) as store:
            rules = store.put_lifecycle_rule(rule)
        print(f"applied to bucket {settings.bucket} ({len(rules)} rule(s) in all)", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _local_store(settings: Settings) -> Iterator[Any]:
    from api.runtime import store_config
    from storage import EmbeddedStore, ObjectStore

    embedded = None
    if settings.embedded_store:
        embedded = EmbeddedStore(settings.store_dir, port=settings.store_port)
        embedded.start()
    try:
        store = ObjectStore(store_config(settings, embedded))
        store.ensure_bucket()
        yield store
    finally:
        if embedded is not None:
            embedded.stop()
