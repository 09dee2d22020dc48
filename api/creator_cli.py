"""`afterlive clip` and `afterlive episode`: a creator's jobs from the command line, through the
running service's API, with a progress bar until the job is done."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any

from api.admin_cli import ServiceDown, call_api
from api.settings import Settings

_TIME = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d+)?)$")


def add_commands(sub: argparse._SubParsersAction) -> None:
    token_help = "the creator's API token (default: $AFTERLIVE_TOKEN)"
    clip = sub.add_parser("clip", help="cut a clip of a recording and wait for it")
    clip.add_argument("recording_id")
    clip.add_argument("start", type=position, help="seconds, mm:ss or hh:mm:ss(.s)")
    clip.add_argument("end", type=position)
    clip.add_argument("--title", default=None)
    clip.add_argument("--seat", type=int, default=None, help="one host's video, with the mix")
    clip.add_argument("--token", default=None, help=token_help)
    clip.set_defaults(run=_clip)

    episode = sub.add_parser("episode", help="render clips into a programme's episode")
    episode.add_argument("programme_id")
    episode.add_argument("clips", nargs="+", metavar="CLIP")
    episode.add_argument("--title", required=True)
    episode.add_argument("--description", default="")
    episode.add_argument("--intro", default=None, help="a clip id played first")
    episode.add_argument("--outro", default=None, help="a clip id played last")
    episode.add_argument("--crossfade", type=float, default=1.0, help="seconds (default 1)")
    episode.add_argument(
        "--chapters",
        choices=("clips", "speakers"),
        default="clips",
        help="one chapter per clip (default), or one per speaker turn titled with the host",
    )
    episode.add_argument("--token", default=None, help=token_help)
    episode.set_defaults(run=_episode)


def position(text: str) -> float:
    """`75`, `1:15`, `0:01:15.5` -> seconds."""
    match = _TIME.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not seconds, mm:ss or hh:mm:ss")
    first, second, seconds = match.groups()
    hours, minutes = (first, second) if second is not None else (None, first)
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds)


def _clip(settings: Settings, args: argparse.Namespace) -> int:
    api = _Api(settings, args.token)
    title = args.title or f"Clip {args.start:g}-{args.end:g} s"
    clip = api.call(
        "POST",
        f"/api/recordings/{args.recording_id}/clips",
        {"title": title, "start_s": args.start, "end_s": args.end}
        | ({} if args.seat is None else {"seat": args.seat}),
    )
    print(f"clip {clip['id']} queued", file=sys.stderr)
    done = _follow(api, f"/api/clips/{clip['id']}", "clip")
    print(f"clip {done['id']}: {done['duration_s']:.3f} s", file=sys.stderr)
    print(json.dumps({k: done[k] for k in ("id", "playback_url", "audio_url")}))
    return 0


def _episode(settings: Settings, args: argparse.Namespace) -> int:
    api = _Api(settings, args.token)
    episode = api.call(
        "POST",
        f"/api/programmes/{args.programme_id}/episodes",
        {
            "title": args.title,
            "description": args.description,
            "clips": args.clips,
            "intro_clip": args.intro,
            "outro_clip": args.outro,
            "crossfade_s": args.crossfade,
            "chapters": args.chapters,
        },
    )
    print(f"episode {episode['id']} queued", file=sys.stderr)
    done = _follow(api, f"/api/episodes/{episode['id']}", "episode")
    print(f"episode {done['id']}: {done['duration_s']:.1f} s", file=sys.stderr)
    print(json.dumps({k: done[k] for k in ("id", "audio_url", "m4a_url", "playback_url")}))
    return 0


def _follow(api: _Api, path: str, what: str, *, interval_s: float = 0.5) -> dict:
    """Poll a job's resource, drawing a progress bar on stderr, until done or failed."""
    tty = sys.stderr.isatty()
    last = None
    while True:
        state = api.call("GET", path)
        shown = (state["status"], state["progress"])
        if shown != last:
            bar = "#" * (state["progress"] // 4)
            line = f"{what} {state['status']:<8} [{bar:<25}] {state['progress']:3d}%"
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr)
            last = shown
        if state["status"] == "done":
            if tty:
                print(file=sys.stderr)
            return state
        if state["status"] == "failed":
            if tty:
                print(file=sys.stderr)
            raise ValueError(f"{what} failed: {state['error']}")
        time.sleep(interval_s)


class _Api:
    def __init__(self, settings: Settings, token: str | None) -> None:
        self.base = settings.local_api_url
        self.token = token or os.environ.get("AFTERLIVE_TOKEN")
        if not self.token:
            raise ValueError(
                "a creator token is needed: --token or AFTERLIVE_TOKEN (afterlive creators add)"
            )

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        try:
            return call_api(self.base, self.token, method, path, body)
        except ServiceDown as exc:
            raise ValueError(str(exc)) from None
