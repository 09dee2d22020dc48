"""The `afterlive` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from types import FrameType

from api import admin_cli, creator_cli
from api.settings import Settings, SettingsError, load_settings
from api.version import version
from storage import Catalog, EmbeddedStore, StorageError
from storage.embedded import port_free

log = logging.getLogger("afterlive")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"afterlive: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.run(settings, args) or 0
    except (StorageError, ValueError) as exc:
        print(f"afterlive: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="afterlive",
        description="Record live rooms to HLS in an S3-compatible store; replay, expire, clip.",
        epilog="Configuration comes from AFTERLIVE_* and AWS_* environment variables (see README).",
    )
    sub = parser.add_subparsers(title="commands")

    serve = sub.add_parser("serve", help="run the service (and the embedded store if no S3 is set)")
    serve.add_argument("--host", help="API host (default AFTERLIVE_API_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="API port (default AFTERLIVE_API_PORT or 8000)")
    serve.set_defaults(run=_serve)

    store = sub.add_parser("store", help="run only the embedded S3 store, for development")
    store.set_defaults(run=_store)

    assets = sub.add_parser(
        "assets", help="install hls.js for the catch-up page (with npm) and print its path"
    )
    assets.set_defaults(run=_assets)

    admin_cli.add_commands(sub)
    creator_cli.add_commands(sub)

    creators = sub.add_parser("creators", help="manage creators").add_subparsers(title="actions")
    add = creators.add_parser("add", help="register a creator and print its API token")
    add.add_argument("name")
    add.set_defaults(run=_creators_add)
    lst = creators.add_parser("list", help="list creators")
    lst.set_defaults(run=_creators_list)

    ver = sub.add_parser("version", help="print the version")
    ver.set_defaults(run=lambda _s, _a: print(f"afterlive {version()}"))
    return parser


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from api.app import create_app
    from api.runtime import start_runtime

    if args.host:
        settings.api_host = args.host
    if args.port:
        settings.api_port = args.port
    # Fail before starting anything, with the setting to change.
    _port_free(settings.api_host, settings.api_port, "AFTERLIVE_API_PORT")
    _port_free(settings.rtmp_host, settings.rtmp_port, "AFTERLIVE_RTMP_PORT")
    settings.ensure_admin_token()
    if settings.admin_token is None:
        log.info("admin token is in %s", settings.data_dir / "admin_token")
    runtime = start_runtime(settings)
    try:
        return _run_uvicorn(settings, create_app(settings, runtime))
    finally:
        runtime.close()


def _run_uvicorn(settings: Settings, app) -> int:
    import uvicorn

    server = _quiet_server()(
        uvicorn.Config(
            app,
            host=settings.api_host,
            port=settings.api_port,
            log_level=settings.log_level.lower(),
            lifespan="on",
            # An HTTP push is a request that lasts as long as the live: don't wait for it forever.
            timeout_graceful_shutdown=10,
        )
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to whatever
    # handler was there before: make that a no-op so a clean shutdown exits 0, not by signal.
    signal.signal(signal.SIGTERM, lambda *_: None)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    # uvicorn returns (rather than raising) when startup fails, e.g. on a port in use.
    return 0 if server.started else 1


def _quiet_server() -> type:
    """uvicorn's Server, waking once a second instead of ten times when nothing happens.

    uvicorn's main loop sleeps 0.1 s between checks for a signal, and does its real work (the
    Date header) once a second. Those ten wake-ups were 0.13% of a core on an idle service, a
    quarter of what a live stream costs. Here the loop sleeps a second and a signal wakes it,
    so a shutdown starts as promptly as before.
    """
    import uvicorn

    class QuietServer(uvicorn.Server):
        _loop: asyncio.AbstractEventLoop | None = None
        _wake: asyncio.Event | None = None

        async def main_loop(self) -> None:
            self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
            counter = 0
            should_exit = await self.on_tick(counter)
            while not should_exit:
                counter += 10  # on_tick does its once-a-second work at multiples of 10
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                self._wake.clear()
                should_exit = await self.on_tick(counter)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if self._loop is not None and self._wake is not None:
                # A signal handler: hand the wake-up to the loop, as another thread would.
                self._loop.call_soon_threadsafe(self._wake.set)

    return QuietServer


def _port_free(host: str, port: int, setting: str) -> None:
    if not port_free(port, host):
        raise ValueError(f"cannot listen on {host}:{port} (in use); set {setting} to a free port")


def _store(settings: Settings, _args: argparse.Namespace) -> int:
    embedded = EmbeddedStore(settings.store_dir, port=settings.store_port)
    t0 = time.monotonic()
    print(f"starting SeaweedFS in {settings.store_dir} ...", file=sys.stderr)
    embedded.start()
    creds = embedded.credentials
    print(f"ready in {time.monotonic() - t0:.1f} s; Ctrl+C stops it. To use it:", file=sys.stderr)
    print(f"export AWS_ENDPOINT_URL={embedded.endpoint_url}")
    print(f"export AWS_ACCESS_KEY_ID={creds.access_key_id}")
    print(f"export AWS_SECRET_ACCESS_KEY={creds.secret_access_key}")
    sys.stdout.flush()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        embedded.stop()
    return 0


def _assets(settings: Settings, _args: argparse.Namespace) -> int:
    from api.assets import AssetsError, hls_js_path, hls_js_version, install_hls_js

    path = hls_js_path(settings.assets_dir)
    if path is None:
        print(f"installing hls.js {hls_js_version()} with npm ...", file=sys.stderr)
        try:
            path = install_hls_js(settings.assets_dir)
        except AssetsError as exc:
            print(f"afterlive: {exc}", file=sys.stderr)
            return 1
    print(path)
    return 0


def _open_catalog(settings: Settings) -> Catalog:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(settings.catalog_url)
    catalog.create_schema()
    return catalog


def _creators_add(settings: Settings, args: argparse.Namespace) -> int:
    creator, token = _open_catalog(settings).add_creator(args.name)
    print(
        f"creator {creator.name} (id {creator.id}) added. Its API token, shown only once:",
        file=sys.stderr,
    )
    print(token)
    return 0


def _creators_list(settings: Settings, _args: argparse.Namespace) -> int:
    for creator in _open_catalog(settings).creators():
        print(f"{creator.id}  {creator.created_at:%Y-%m-%d %H:%M}  {creator.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
