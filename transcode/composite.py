"""The room picture for stock players: every host's copied video in one grid, with the room mix.

After a multi-host video live, `composite` makes the "grid" rendition from what was recorded:
each seat's stored video segments (placed on the recording's wall clock by their
EXT-X-PROGRAM-DATE-TIME) and the mix's AAC, copied. One ffmpeg process does it all:

- The layout is a pure function of how many seats the grid shows (`layout`): one host full, two
  side by side, three or four in a 2x2 (the fourth cell blank for three). It holds for the whole
  recording, so a tile never moves: a host who is not there yet, has left, has no camera or
  turned it off is their tile with their name on it (drawtext, when a font is found; a plain
  colour tile otherwise).
- A seat's video is cut into runs (`runs`): segments that follow each other with no gap, no
  discontinuity and a video stream each. A run is one ffmpeg input (the segments concatenated
  byte-wise, `concatf:`: they are one MPEG-TS stream split at keyframes, so their timestamps run
  on), shifted to its wall-clock offset and overlaid on the seat's name tile; when it ends, the
  name tile shows again (`eof_action=pass`), never a frozen last frame.
- The mix is one input too, copied (no second AAC encode); the picture is H.264 at `width` x
  `height` (640x360 by default), cut into HLS segments of `target_s` on the same timeline.
  Output time t is wall time `start + t`, for the mix and for every tile.

`filter_graph` builds the graph text from the placed runs alone (no I/O), so layouts are tested
without media; `composite` probes, writes the inputs' lists and runs ffmpeg (blocking).
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import av
import av.error
import imageio_ffmpeg

from transcode.errors import TranscodeError
from transcode.playlists import parse_media_playlist

log = logging.getLogger(__name__)

RENDITION = "grid"
# The canvas behind the cells (the empty fourth cell of three hosts) and each seat's name tile.
CANVAS = "0x101010"
TILE = "0x303030"
# Fonts tried for the hosts' names, in order (Debian's fonts-dejavu-core, fonts-liberation).
FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)
# Segments further apart than this (end to next start) belong to different runs.
GAP_S = 0.5
MAX_TILES = 4
# Decoding the hosts' 720p video is most of a grid's cost (about 0.1 of a core per 720p30 host
# measured here), and a tile shows it at a quarter of its size or less: the deblocking filter
# is skipped (~17% of a decode; its blocks shrink away in the downscale) and ffmpeg's frame
# threads with their hand-offs are not used (one thread per input; the job runs in a batch).
DECODE_OPTIONS = ["-threads", "1", "-skip_loop_filter", "all", "-flags2", "fast"]


@dataclass(frozen=True, kw_only=True)
class Cell:
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True, kw_only=True)
class VideoSegment:
    """A stored segment of a seat's copied rendition, downloaded to `path`."""

    path: Path
    start_at: datetime  # its EXT-X-PROGRAM-DATE-TIME
    duration_s: float
    discontinuity: bool = False


@dataclass(frozen=True, kw_only=True)
class Seat:
    """One tile of the grid: a seat's name and its video segments, in order (none for a host
    without a camera)."""

    seat: int
    name: str
    segments: Sequence[VideoSegment] = ()


@dataclass(frozen=True, kw_only=True)
class Run:
    """Consecutive segments of a seat with video: one input, at `offset_s` into the grid."""

    tile: int  # index into the layout's cells
    offset_s: float
    paths: Sequence[Path]


@dataclass(frozen=True, kw_only=True)
class GridSegment:
    path: Path
    sequence: int
    start_s: float  # into the grid: its wall time is the grid's start plus this
    duration_s: float
    size_bytes: int


def layout(count: int, width: int, height: int) -> list[Cell]:
    """The cells of a grid of `count` hosts (1-4) on a `width` x `height` canvas."""
    if not 1 <= count <= MAX_TILES:
        raise TranscodeError(f"a grid shows 1 to {MAX_TILES} hosts, not {count}")
    if width % 4 or height % 4:
        raise TranscodeError(f"the grid's size {width}x{height} must be a multiple of 4")
    if count == 1:
        return [Cell(x=0, y=0, w=width, h=height)]
    half_w, half_h = width // 2, height // 2
    if count == 2:
        return [Cell(x=0, y=0, w=half_w, h=height), Cell(x=half_w, y=0, w=half_w, h=height)]
    cells = [Cell(x=x, y=y, w=half_w, h=half_h) for y in (0, half_h) for x in (0, half_w)]
    return cells[:count]


def runs(segments: Sequence[VideoSegment], *, has_video=None) -> list[list[VideoSegment]]:
    """A seat's segments cut where its video does not run on: a gap, a discontinuity (a
    reconnect), a segment without video (a camera off). `has_video(path)` defaults to a probe."""
    probe = has_video or _has_video
    pieces: list[list[VideoSegment]] = []
    end: datetime | None = None
    for seg in segments:
        if not probe(seg.path):
            end = None
            continue
        joined = (
            pieces
            and end is not None
            and not seg.discontinuity
            and abs((seg.start_at - end).total_seconds()) <= GAP_S
        )
        if joined:
            pieces[-1].append(seg)
        else:
            pieces.append([seg])
        end = seg.start_at + timedelta(seconds=seg.duration_s)
    return pieces


def filter_graph(
    *,
    names: Sequence[str | None],
    placed: Sequence[Run],
    width: int,
    height: int,
    duration_s: float,
    fps: int = 15,
    font: Path | None = None,
    name_files: Sequence[Path] | None = None,
) -> str:
    """The ffmpeg filter graph of a grid: one name tile per entry of `names` (drawn from
    `name_files[i]` in `font`, or plain with no font or a None name), input k's video
    (`placed[k]`) over its tile from its offset until it ends, the tiles stacked into
    `[grid]`. Inputs 0..len(placed)-1 are the runs, in order."""
    cells = layout(len(names), width, height)
    chains: list[str] = []
    for i, cell in enumerate(cells):
        tile = f"color=c={TILE}:s={cell.w}x{cell.h}:r={fps}:d={duration_s:.3f}"
        if font is not None and names[i] is not None and name_files is not None:
            size = max(14, cell.h // 8)
            tile += (
                f",drawtext=fontfile={_escape(str(font))}:textfile={_escape(str(name_files[i]))}"
                f":expansion=none:fontcolor=white:fontsize={size}:x=(w-tw)/2:y=(h-th)/2"
            )
        chains.append(f"{tile}[tile{i}]")
    last = {i: f"tile{i}" for i in range(len(cells))}
    for k, run in enumerate(placed):
        cell = cells[run.tile]
        chains.append(
            f"[{k}:v:0]setpts=PTS-STARTPTS+{run.offset_s:.3f}/TB,fps={fps},"
            f"scale={cell.w}:{cell.h}:force_original_aspect_ratio=increase:flags=area,"
            f"crop={cell.w}:{cell.h},setsar=1[run{k}]"
        )
        # Before the run: the tile as it is; after its last frame: the tile again.
        chains.append(f"[{last[run.tile]}][run{k}]overlay=eof_action=pass:repeatlast=0[over{k}]")
        last[run.tile] = f"over{k}"
    tiles = "".join(f"[{last[i]}]" for i in range(len(cells)))
    if len(cells) == 1:
        chains.append(f"{tiles}format=yuv420p[grid]")
    else:
        # A 2x2 of three leaves its fourth cell to the canvas colour.
        positions = "|".join(f"{c.x}_{c.y}" for c in cells)
        chains.append(
            f"{tiles}xstack=inputs={len(cells)}:layout={positions}:fill={CANVAS},"
            f"pad={width}:{height}:0:0:color={CANVAS},format=yuv420p[grid]"
        )
    return ";\n".join(chains)


def find_font() -> Path | None:
    return next((Path(f) for f in FONTS if Path(f).is_file()), None)


def composite(
    seats: Sequence[Seat],
    mix: Sequence[Path],
    *,
    start: datetime,
    end: datetime,
    directory: Path,
    width: int = 640,
    height: int = 360,
    fps: int = 15,
    target_s: float = 2.0,
    preset: str = "veryfast",
    crf: int = 26,
    first_sequence: int = 0,
    label: str = "grid",
    paced: bool = False,
) -> list[GridSegment]:
    """Make the grid of `seats` (in tile order) from `start` to `end` with the mix (its
    segments' files, in order, starting at `start`) as its sound: HLS segments in `directory`.
    Blocking; TranscodeError when ffmpeg fails. `paced` reads every input at its own pace
    (ffmpeg's -re), as a live composite would: for measuring what one would cost."""
    if not seats:
        raise TranscodeError(f"{label}: a grid needs at least one seat")
    if not mix:
        raise TranscodeError(f"{label}: a grid needs the mix for its sound")
    duration = (end - start).total_seconds()
    if duration <= 0:
        raise TranscodeError(f"{label}: nothing to composite ({start} to {end})")
    directory.mkdir(parents=True, exist_ok=True)
    lists = directory / "inputs"
    lists.mkdir(exist_ok=True)

    font = find_font()
    if font is None:
        log.warning("%s: no font found (%s): the name tiles are plain", label, ", ".join(FONTS))
    name_files = []
    for i, seat in enumerate(seats):
        path = lists / f"name-{i}.txt"
        path.write_text(seat.name)
        name_files.append(path)

    placed: list[Run] = []
    for tile, seat in enumerate(seats):
        for piece in runs(seat.segments):
            offset = (piece[0].start_at - start).total_seconds()
            if offset >= duration:
                continue
            placed.append(Run(tile=tile, offset_s=offset, paths=[s.path for s in piece]))
    lists_of = [_list_file(lists / f"run-{k}.txt", run.paths) for k, run in enumerate(placed)]
    lists_of.append(_list_file(lists / "mix.txt", mix))
    inputs: list[str] = []
    for k, path in enumerate(lists_of):
        inputs += ["-re"] if paced else []
        if k < len(placed):
            inputs += DECODE_OPTIONS
        inputs += ["-i", f"concatf:{path}"]
    graph = filter_graph(
        names=[s.name for s in seats],
        placed=placed,
        width=width,
        height=height,
        duration_s=duration,
        fps=fps,
        font=font,
        name_files=name_files,
    )
    gop = max(1, round(target_s * fps))
    playlist = directory / "index.m3u8"
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        *inputs,
        "-filter_complex",
        graph,
        "-map",
        "[grid]",
        "-map",
        f"{len(placed)}:a:0",
        "-t",
        f"{duration:.3f}",
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-crf",
        str(crf),
        "-maxrate",
        "1200k",
        "-bufsize",
        "2400k",
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
        "-c:a",
        "copy",
        "-f",
        "hls",
        "-hls_time",
        f"{target_s:g}",
        "-hls_list_size",
        "0",
        "-hls_playlist_type",
        "vod",
        "-start_number",
        str(first_sequence),
        "-hls_segment_filename",
        str(directory / f"{RENDITION}-%06d.ts"),
        str(playlist),
    ]
    t0 = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise TranscodeError(f"{label}: ffmpeg failed ({done.returncode}): {done.stderr[-2000:]}")
    made, at = [], 0.0
    for n, seg in enumerate(parse_media_playlist(playlist.read_text()).segments):
        path = directory / seg.uri
        made.append(
            GridSegment(
                path=path,
                sequence=first_sequence + n,
                start_s=at,
                duration_s=seg.duration_s,
                size_bytes=path.stat().st_size,
            )
        )
        at += seg.duration_s
    log.info(
        "%s: %d seats, %d video runs, %.1f s of grid in %.1f s",
        label,
        len(seats),
        len(placed),
        duration,
        time.monotonic() - t0,
    )
    return made


def _list_file(path: Path, files: Sequence[Path]) -> Path:
    """A `concatf:` list: one path a line."""
    path.write_text("".join(f"{Path(f).resolve()}\n" for f in files))
    return path


def _has_video(path: Path) -> bool:
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.video)
    except av.error.FFmpegError:
        return False


def _escape(value: str) -> str:
    """A path as a filter option value. Ours are work directories and font paths: refuse what
    the graph's two levels of escaping would have to carry rather than get it wrong."""
    if any(char in value for char in "\\':,;[]= \n"):
        raise TranscodeError(
            f"{value!r}: a path in a filter graph must not contain :,;[]'= or spaces"
        )
    return value


__all__ = ["RENDITION", "Cell", "GridSegment", "Seat", "VideoSegment", "composite", "layout"]
