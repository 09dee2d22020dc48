"""The composite grid: layouts and filter graphs without media; a real grid of real encoded
segments (ffmpeg-made colour pictures), decoded back with PyAV, tile by tile, time by time."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import numpy as np
import pytest

from tests.utils.media import FFMPEG
from transcode.composite import (
    CANVAS,
    TILE,
    Cell,
    Run,
    Seat,
    VideoSegment,
    composite,
    filter_graph,
    find_font,
    layout,
    runs,
)
from transcode.errors import TranscodeError

START = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)


def test_layouts_one_full_two_side_by_side_three_and_four_in_a_2x2() -> None:
    assert layout(1, 640, 360) == [Cell(x=0, y=0, w=640, h=360)]
    assert layout(2, 640, 360) == [Cell(x=0, y=0, w=320, h=360), Cell(x=320, y=0, w=320, h=360)]
    four = [(c.x, c.y, c.w, c.h) for c in layout(4, 640, 360)]
    assert four == [(0, 0, 320, 180), (320, 0, 320, 180), (0, 180, 320, 180), (320, 180, 320, 180)]
    assert layout(3, 640, 360) == layout(4, 640, 360)[:3]
    for bad in (0, 5):
        with pytest.raises(TranscodeError):
            layout(bad, 640, 360)
    with pytest.raises(TranscodeError):
        layout(2, 642, 360)


def test_filter_graph_places_each_run_on_its_tile_at_its_time(tmp_path) -> None:
    names = [tmp_path / f"n{i}.txt" for i in range(3)]
    graph = filter_graph(
        names=["Ana", "Bea", "Cai"],
        placed=[
            Run(tile=0, offset_s=0.0, paths=[]),
            Run(tile=1, offset_s=6.25, paths=[]),
            Run(tile=1, offset_s=30.0, paths=[]),
        ],
        width=640,
        height=360,
        duration_s=40,
        font=Path("/fonts/f.ttf"),
        name_files=names,
    )
    chains = graph.split(";\n")
    # One name tile per seat, the size of its cell, the whole duration, the name from its file.
    tiles = [c for c in chains if c.startswith("color=")]
    assert len(tiles) == 3
    assert all(f"c={TILE}:s=320x180:r=15:d=40.000" in c for c in tiles)
    assert f"textfile={names[1]}" in tiles[1] and "expansion=none" in tiles[1]
    # Input k is run k: shifted to its offset, fitted to its cell, over its seat's tile.
    assert "[1:v:0]setpts=PTS-STARTPTS+6.250/TB" in graph
    assert "[2:v:0]setpts=PTS-STARTPTS+30.000/TB" in graph
    assert "[tile1][run1]overlay=eof_action=pass:repeatlast=0[over1]" in chains
    assert "[over1][run2]overlay=eof_action=pass:repeatlast=0[over2]" in chains  # seat 2 again
    assert chains[-1].startswith("[over0][over2][tile2]xstack=inputs=3:layout=0_0|320_0|0_180:")
    assert f"fill={CANVAS}" in chains[-1] and chains[-1].endswith("[grid]")


def test_filter_graph_without_a_font_draws_plain_tiles_and_one_host_is_full() -> None:
    graph = filter_graph(
        names=["Ana"],
        placed=[Run(tile=0, offset_s=1, paths=[])],
        width=640,
        height=360,
        duration_s=5,
    )
    assert "drawtext" not in graph and "xstack" not in graph
    assert f"color=c={TILE}:s=640x360" in graph and "scale=640:360" in graph
    assert graph.endswith(
        "[tile0][run0]overlay=eof_action=pass:repeatlast=0[over0];\n[over0]format=yuv420p[grid]"
    )


def seg(path: str, at: float, duration: float = 2.0, discontinuity: bool = False) -> VideoSegment:
    return VideoSegment(
        path=Path(path),
        start_at=START + timedelta(seconds=at),
        duration_s=duration,
        discontinuity=discontinuity,
    )


def test_runs_split_at_gaps_discontinuities_and_segments_without_video() -> None:
    segments = [
        seg("a", 0),
        seg("b", 2),
        seg("c", 4.02),  # one run (20 ms of wall-time jitter)
        seg("d", 8),  # a gap: the host left
        seg("e", 10, discontinuity=True),  # a reconnect
        seg("f", 12),
        seg("g", 14),  # the camera went off in g
    ]
    pieces = runs(segments, has_video=lambda p: p.name != "g")
    assert [[s.path.name for s in piece] for piece in pieces] == [
        ["a", "b", "c"],
        ["d"],
        ["e", "f"],
    ]


# -- a real grid -------------------------------------------------------------------------------

COLOURS = {"red": (255, 0, 0), "green": (0, 128, 0), "blue": (0, 0, 255)}


def segments_of(directory: Path, colour: str, seconds: float, at: float, **flags) -> list:
    """`seconds` of a 1280x720 picture of one colour with a tone, as 2 s MPEG-TS segments
    (what a seat's copied rendition holds), dated from `at` seconds after START."""
    directory.mkdir(parents=True)
    subprocess.run(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"color=c={colour}:s=1280x720:r=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_playlist_type",
            "vod",
            "-hls_segment_filename",
            str(directory / "%03d.ts"),
            str(directory / "index.m3u8"),
        ],
        check=True,
    )
    files = sorted(directory.glob("*.ts"))
    return [
        VideoSegment(
            path=f,
            start_at=START + timedelta(seconds=at + 2 * n),
            duration_s=2.0,
            discontinuity=n == 0 and flags.get("discontinuity", False),
        )
        for n, f in enumerate(files)
    ]


def mix_of(directory: Path, seconds: float) -> list[Path]:
    directory.mkdir(parents=True)
    subprocess.run(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=300:sample_rate=48000",
            "-t",
            str(seconds),
            "-c:a",
            "aac",
            "-ac",
            "1",
            "-b:a",
            "96k",
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_playlist_type",
            "vod",
            "-hls_segment_filename",
            str(directory / "%03d.ts"),
            str(directory / "index.m3u8"),
        ],
        check=True,
    )
    return sorted(directory.glob("*.ts"))


def frames_at(playlist: Path, times: list[float]) -> dict[float, np.ndarray]:
    """The decoded RGB picture nearest each time (seconds from the grid's first frame)."""
    pictures: dict[float, np.ndarray] = {}
    with av.open(str(playlist)) as container:
        stream = container.streams.video[0]
        first = None
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base)
            first = t if first is None else first
            for want in times:
                if want not in pictures and t - first >= want:
                    pictures[want] = frame.to_ndarray(format="rgb24")
    return pictures


def cell_colour(picture: np.ndarray, cell: Cell) -> np.ndarray:
    """The mean colour of a cell's middle, away from edges the encoder blurs."""
    part = picture[
        cell.y + cell.h // 4 : cell.y + 3 * cell.h // 4,
        cell.x + cell.w // 8 : cell.x + 7 * cell.w // 8,
    ]
    return part.reshape(-1, 3).mean(axis=0)


def near(colour: np.ndarray, want: tuple[int, int, int], tolerance: float = 40) -> bool:
    return bool(np.abs(colour - np.array(want)).max() <= tolerance)


def name_tile(picture: np.ndarray, cell: Cell) -> bool:
    """A seat's name tile: the tile's grey, with white letters in its middle."""
    middle = picture[cell.y + cell.h // 3 : cell.y + 2 * cell.h // 3, cell.x : cell.x + cell.w]
    grey = int(TILE[2:4], 16)
    background = np.median(middle.reshape(-1, 3), axis=0)
    lettered = (middle.min(axis=2) > 200).mean()
    return bool(np.abs(background - grey).max() <= 12 and 0.002 < lettered < 0.3)


def test_a_real_grid_puts_each_host_in_their_tile_at_their_time(tmp_path) -> None:
    # Ana (red) 0-6 s; Bea (green) joins at 2, leaves at 4, comes back 6-10; Cai has no camera;
    # Dan (blue) reconnects: 0-4 then 8-10.
    seats = [
        Seat(seat=1, name="Ana", segments=segments_of(tmp_path / "ana", "red", 6, 0)),
        Seat(
            seat=2,
            name="Bea",
            segments=segments_of(tmp_path / "bea1", "green", 2, 2)
            + segments_of(tmp_path / "bea2", "green", 4, 6, discontinuity=True),
        ),
        Seat(seat=3, name="Cai"),
        Seat(
            seat=4,
            name="Dan",
            segments=segments_of(tmp_path / "dan1", "blue", 4, 0)
            + segments_of(tmp_path / "dan2", "blue", 2, 8, discontinuity=True),
        ),
    ]
    made = composite(
        seats,
        mix_of(tmp_path / "mix", 10),
        start=START,
        end=START + timedelta(seconds=10),
        directory=tmp_path / "grid",
        label="test grid",
    )
    assert [round(s.duration_s, 1) for s in made] == [2.0] * 5
    assert [s.sequence for s in made] == [0, 1, 2, 3, 4]
    assert made[3].start_s == pytest.approx(6.0)

    playlist = tmp_path / "grid" / "index.m3u8"
    with av.open(str(playlist)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, video.width, video.height) == ("h264", 640, 360)
        assert (audio.codec_context.name, audio.rate, audio.channels) == ("aac", 48000, 1)

    ana, bea, cai, dan = layout(4, 640, 360)
    pictures = frames_at(playlist, [1.0, 3.0, 5.0, 7.0, 9.0])
    expected = {  # None: the seat's name tile
        1.0: ("red", None, None, "blue"),
        3.0: ("red", "green", None, "blue"),
        5.0: ("red", None, None, None),
        7.0: (None, "green", None, None),
        9.0: (None, "green", None, "blue"),
    }
    assert find_font() is not None  # Debian's fonts-dejavu-core is on this machine
    for t, wants in expected.items():
        for cell, want in zip((ana, bea, cai, dan), wants, strict=True):
            colour = cell_colour(pictures[t], cell)
            if want is None:
                assert name_tile(pictures[t], cell), (t, cell, colour)
            else:
                assert near(colour, COLOURS[want]), (t, cell, want, colour)


def test_three_hosts_leave_the_fourth_cell_to_the_canvas_and_names_differ(tmp_path) -> None:
    seats = [
        Seat(seat=1, name="Ana", segments=segments_of(tmp_path / "ana", "red", 4, 0)),
        Seat(seat=2, name="Bea"),
        Seat(seat=3, name="Cai Long-Name: 100% 'real'"),  # drawn from a file, not parsed
    ]
    composite(
        seats,
        mix_of(tmp_path / "mix", 4),
        start=START,
        end=START + timedelta(seconds=4),
        directory=tmp_path / "grid",
    )
    [picture] = frames_at(tmp_path / "grid" / "index.m3u8", [1.0]).values()
    cells = layout(4, 640, 360)
    assert near(cell_colour(picture, cells[0]), COLOURS["red"])
    assert name_tile(picture, cells[1]) and name_tile(picture, cells[2])
    canvas = int(CANVAS[2:4], 16)
    assert near(cell_colour(picture, cells[3]), (canvas,) * 3, tolerance=6)
    # Different names draw differently: the letters are the names, not a fixed mark.
    a, b = (picture[c.y : c.y + c.h, c.x : c.x + c.w].min(axis=2) > 200 for c in cells[1:3])
    assert 0 < a.sum() < b.sum()  # the long name has more letters
