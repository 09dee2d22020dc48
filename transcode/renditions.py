"""The optional transcoded ladder: 720p/480p/360p renditions made live by the ffmpeg binary.

Off by default: FACTS.md measured a 720p/480p/360p x264 veryfast ladder at 1.33x realtime with
both cores busy, i.e. a whole machine per room. When on, one ffmpeg process per publish reads the
same input bytes as the copy segmenter, scales and encodes every rung in one filter graph, and
writes MPEG-TS segments cut every target duration (keyframes are forced there) on the input's
own timeline (`-copyts`), so PROGRAM-DATE-TIME lines up with the source rendition. ffmpeg appends
each finished segment to a CSV list per rung; a watcher thread turns those lines into
`SegmentClosed` events, the same ones the copy segmenter emits.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import imageio_ffmpeg

from transcode.errors import TranscodeError
from transcode.segmenter import SegmentClosed, StreamInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Rung:
    height: int
    video_kbps: int
    level: str  # H.264 level, set explicitly so CODECS is known before the first segment
    codecs: str

    @property
    def name(self) -> str:
        return f"{self.height}p"


RUNGS = {
    720: Rung(height=720, video_kbps=2800, level="3.1", codecs="avc1.64001f,mp4a.40.2"),
    480: Rung(height=480, video_kbps=1400, level="3.0", codecs="avc1.64001e,mp4a.40.2"),
    360: Rung(height=360, video_kbps=800, level="3.0", codecs="avc1.64001e,mp4a.40.2"),
}
AUDIO_KBPS = 128


def rungs_for(heights: list[int], source_height: int | None) -> list[Rung]:
    """The configured rungs below the source: never upscale, never duplicate the source."""
    unknown = [h for h in heights if h not in RUNGS]
    if unknown:
        raise TranscodeError(f"no ladder rung for heights {unknown}; known: {sorted(RUNGS)}")
    if not source_height:
        return []
    return [RUNGS[h] for h in sorted(heights, reverse=True) if h < source_height]


class LadderTranscoder:
    def __init__(
        self,
        *,
        rungs: list[Rung],
        input_format: str,
        directory: Path,
        target_s: float,
        first_sequences: dict[str, int],
        discontinuity: bool,
        source_info: StreamInfo,
        on_start: Callable[[str, StreamInfo], None],
        on_segment: Callable[[SegmentClosed], None],
        label: str = "",
    ) -> None:
        if not rungs:
            raise ValueError("a ladder needs at least one rung")
        self.rungs = rungs
        self.input_format = input_format
        self.directory = Path(directory)
        self.target_s = target_s
        self.first_sequences = first_sequences
        self.discontinuity = discontinuity
        self.source_info = source_info
        self.on_start = on_start
        self.on_segment = on_segment
        self.label = label
        self.proc: subprocess.Popen[bytes] | None = None
        self._watcher: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc is not None and self.proc.stdin is not None
        return self.proc.stdin

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for rung in self.rungs:
            (self.directory / f"{rung.name}.csv").unlink(missing_ok=True)
            width = (
                _even(self.source_info.width * rung.height / self.source_info.height)
                if self.source_info.width and self.source_info.height
                else None
            )
            self.on_start(
                rung.name,
                StreamInfo(
                    has_video=True,
                    has_audio=self.source_info.has_audio,
                    video_codecs=rung.codecs.split(",")[0],
                    audio_codecs="mp4a.40.2" if self.source_info.has_audio else "",
                    width=width,
                    height=rung.height,
                    frame_rate=self.source_info.frame_rate,
                    renditions=[rung.name],
                ),
            )
        self.proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "ladder.log").open("ab"),
        )
        self._watcher = threading.Thread(
            target=self._watch, name=f"ladder-{self.label}", daemon=True
        )
        self._watcher.start()
        log.info(
            "%s: ladder %s started (pid %s)",
            self.label,
            ",".join(r.name for r in self.rungs),
            self.proc.pid,
        )

    def _command(self) -> list[str]:
        n = len(self.rungs)
        graph = (
            f"[0:v]split={n}"
            + "".join(f"[s{i}]" for i in range(n))
            + ";"
            + ";".join(f"[s{i}]scale=-2:{rung.height}[v{i}]" for i, rung in enumerate(self.rungs))
        )
        gop = f"expr:gte(t,n_forced*{self.target_s})"
        args = [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "warning",
            "-probesize",
            "32768",
            "-analyzeduration",
            "500000",
            "-copyts",
            "-f",
            self.input_format,
            "-i",
            "pipe:0",
            "-filter_complex",
            graph,
        ]
        for i, rung in enumerate(self.rungs):
            args += ["-map", f"[v{i}]"]
            if self.source_info.has_audio:
                args += ["-map", "0:a:0", "-c:a", "aac", "-b:a", f"{AUDIO_KBPS}k"]
            args += [
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-profile:v",
                "high",
                "-level:v",
                rung.level,
                "-b:v",
                f"{rung.video_kbps}k",
                "-maxrate",
                f"{int(rung.video_kbps * 1.1)}k",
                "-bufsize",
                f"{rung.video_kbps * 2}k",
                "-force_key_frames",
                gop,
                "-sc_threshold",
                "0",
                "-pix_fmt",
                "yuv420p",
                "-f",
                "segment",
                "-segment_time",
                str(self.target_s),
                "-segment_format",
                "mpegts",
                "-segment_list_type",
                "csv",
                "-segment_list",
                str(self.directory / f"{rung.name}.csv"),
                "-segment_start_number",
                str(self.first_sequences.get(rung.name, 0)),
                "-reset_timestamps",
                "0",
                str(self.directory / f"{rung.name}-%06d.ts"),
            ]
        return args

    def _watch(self) -> None:
        """Turn the segment lists' new lines into SegmentClosed events until ffmpeg exits."""
        offsets = {rung.name: 0 for rung in self.rungs}
        sequences = {r.name: self.first_sequences.get(r.name, 0) for r in self.rungs}
        while True:
            exited = self.proc is not None and self.proc.poll() is not None
            for rung in self.rungs:
                path = self.directory / f"{rung.name}.csv"
                if not path.exists():
                    continue
                with path.open() as fh:
                    fh.seek(offsets[rung.name])
                    while (line := fh.readline()).endswith("\n"):
                        offsets[rung.name] = fh.tell()
                        self._emit(rung, line, sequences[rung.name])
                        sequences[rung.name] += 1
            if exited:
                return
            time.sleep(0.05)

    def _emit(self, rung: Rung, line: str, sequence: int) -> None:
        name, start, end = line.strip().rsplit(",", 2)
        path = self.directory / name
        self.on_segment(
            SegmentClosed(
                rendition=rung.name,
                sequence=sequence,
                path=path,
                start_s=float(start),
                duration_s=max(float(end) - float(start), 0.001),
                size_bytes=path.stat().st_size,
                discontinuity=self.discontinuity
                and sequence == self.first_sequences.get(rung.name, 0),
                closed_at=time.time(),
            )
        )

    def finish(self, timeout_s: float = 30.0) -> None:
        """The input ended: let ffmpeg flush its last segments, then stop watching."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            self.stdin.close()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.error("%s: ladder did not finish in %.0f s; killing it", self.label, timeout_s)
            self.proc.kill()
            self.proc.wait()
        if self._watcher is not None:
            self._watcher.join(timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._watcher is not None:
            self._watcher.join(5)


def _even(value: float) -> int:
    return int(round(value / 2) * 2)
