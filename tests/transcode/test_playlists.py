"""HLS playlist text: exact output, round trips, a second parser's reading, rewriting, speed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

import m3u8
import pytest
from hypothesis import given
from hypothesis import strategies as st

from transcode.errors import TranscodeError
from transcode.playlists import (
    DateRange,
    MasterPlaylist,
    MediaPlaylist,
    MediaSegment,
    Variant,
    parse_master_playlist,
    parse_media_playlist,
    rewrite_uris,
)

START = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


def live_segments(
    count: int, *, duration_s: float = 2.0, prefix: str = "seg"
) -> list[MediaSegment]:
    return [
        MediaSegment(
            uri=f"{prefix}{i:05d}.ts",
            duration_s=duration_s,
            program_date_time=START + timedelta(seconds=duration_s * i),
        )
        for i in range(count)
    ]


def master() -> MasterPlaylist:
    return MasterPlaylist(
        variants=[
            Variant(
                uri="720p/index.m3u8",
                bandwidth=3_000_000,
                average_bandwidth=2_500_000,
                codecs="avc1.64001f,mp4a.40.2",
                resolution=(1280, 720),
                frame_rate=30.0,
                name="720p",
            ),
            Variant(
                uri="360p/index.m3u8",
                bandwidth=900_000,
                codecs="avc1.4d401e,mp4a.40.2",
                resolution=(640, 360),
                frame_rate=29.97,
            ),
            Variant(uri="audio/index.m3u8", bandwidth=140_000, codecs="mp4a.40.2"),
        ]
    )


# --- media playlists: the text ------------------------------------------------------------------


def test_media_playlist_text_is_exact() -> None:
    playlist = MediaPlaylist(
        segments=[
            MediaSegment(uri="seg00000.ts", duration_s=2.002, program_date_time=START),
            MediaSegment(uri="seg00001.ts", duration_s=1.9996, title="after the intro"),
            MediaSegment(
                uri="seg00002.ts",
                duration_s=2.5,
                discontinuity=True,
                program_date_time=datetime(2026, 11, 22, 10, 5, 0, 123456, tzinfo=UTC),
            ),
        ],
        media_sequence=17,
        playlist_type="VOD",
        ended=True,
    )
    assert playlist.render() == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-TARGETDURATION:3\n"
        "#EXT-X-MEDIA-SEQUENCE:17\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXT-X-PROGRAM-DATE-TIME:2026-11-22T10:00:00.000+00:00\n"
        "#EXTINF:2.002,\n"
        "seg00000.ts\n"
        "#EXTINF:2.000,after the intro\n"
        "seg00001.ts\n"
        "#EXT-X-DISCONTINUITY\n"
        "#EXT-X-PROGRAM-DATE-TIME:2026-11-22T10:05:00.123+00:00\n"
        "#EXTINF:2.500,\n"
        "seg00002.ts\n"
        "#EXT-X-ENDLIST\n"
    )


def test_fmp4_playlist_has_version_6_map_and_start() -> None:
    playlist = MediaPlaylist(
        segments=[MediaSegment(uri="s1.m4s", duration_s=4.0)],
        discontinuity_sequence=2,
        independent_segments=False,
        map_uri="init.mp4",
        start_offset_s=-6,
    )
    assert playlist.render() == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:6\n"
        "#EXT-X-TARGETDURATION:4\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXT-X-DISCONTINUITY-SEQUENCE:2\n"
        "#EXT-X-START:TIME-OFFSET=-6.000,PRECISE=YES\n"
        '#EXT-X-MAP:URI="init.mp4"\n'
        "#EXTINF:4.000,\n"
        "s1.m4s\n"
    )


def test_discontinuity_tag_sits_right_before_its_segment_and_sequence_only_when_positive() -> None:
    segments = live_segments(4)
    segments[2].discontinuity = True
    text = MediaPlaylist(segments=segments).render()
    lines = text.splitlines()
    assert "#EXT-X-DISCONTINUITY-SEQUENCE" not in text
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    at = lines.index("#EXT-X-DISCONTINUITY")
    assert lines[at + 1].startswith("#EXT-X-PROGRAM-DATE-TIME:")
    assert lines[at + 2] == "#EXTINF:2.000,"
    assert lines[at + 3] == "seg00002.ts"
    text = MediaPlaylist(segments=segments, discontinuity_sequence=5).render()
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:5\n" in text


def test_program_date_time_keeps_its_offset_and_truncates_to_milliseconds() -> None:
    paris = timezone(timedelta(hours=1))
    at = datetime(2026, 11, 22, 11, 0, 2, 999_999, tzinfo=paris)
    text = MediaPlaylist(
        segments=[MediaSegment(uri="a.ts", duration_s=2, program_date_time=at)]
    ).render()
    assert "#EXT-X-PROGRAM-DATE-TIME:2026-11-22T11:00:02.999+01:00\n" in text
    parsed = parse_media_playlist(text).segments[0].program_date_time
    assert parsed == at.replace(microsecond=999_000)


def test_naive_program_date_time_is_refused() -> None:
    naive = datetime(2026, 11, 22, 10, 0, 0)
    playlist = MediaPlaylist(
        segments=[MediaSegment(uri="a.ts", duration_s=2, program_date_time=naive)]
    )
    with pytest.raises(TranscodeError, match="no UTC offset"):
        playlist.render()


def test_empty_live_playlist_renders_with_target_1() -> None:
    text = MediaPlaylist(segments=[], playlist_type="EVENT").render()
    assert "#EXT-X-TARGETDURATION:1\n" in text
    assert parse_media_playlist(text).segments == []


def test_duration_is_the_exact_sum() -> None:
    playlist = MediaPlaylist(segments=live_segments(3600, duration_s=2.002))
    assert playlist.duration_s() == pytest.approx(7207.2, abs=1e-9)
    assert MediaPlaylist(segments=[]).duration_s() == 0.0


@pytest.mark.parametrize(
    "segment",
    [
        MediaSegment(uri="a\nb.ts", duration_s=2),
        MediaSegment(uri="#a.ts", duration_s=2),
        MediaSegment(uri="", duration_s=2),
        MediaSegment(uri=" a.ts", duration_s=2),
        MediaSegment(uri="a.ts", duration_s=2, title="two\nlines"),
        MediaSegment(uri="a.ts", duration_s=-0.5),
        MediaSegment(uri="a.ts", duration_s=float("nan")),
        MediaSegment(uri="a.ts", duration_s=float("inf")),
    ],
    ids=[
        "newline-uri",
        "hash-uri",
        "empty-uri",
        "space-uri",
        "newline-title",
        "negative",
        "nan",
        "inf",
    ],
)
def test_segments_that_cannot_be_written_are_refused(segment: MediaSegment) -> None:
    with pytest.raises(TranscodeError):
        MediaPlaylist(segments=[segment]).render()


@pytest.mark.parametrize(
    "fields",
    [
        {"playlist_type": "LIVE"},
        {"media_sequence": -1},
        {"discontinuity_sequence": -1},
        {"map_uri": 'in"it.mp4'},
        {"start_offset_s": float("nan")},
    ],
)
def test_playlist_fields_that_cannot_be_written_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(TranscodeError):
        MediaPlaylist(segments=live_segments(1), **fields).render()


# --- target duration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("durations", "target"),
    [
        ([2.49], 2),
        ([2.5], 3),  # half rounds up, not to even: a player rounding half up must not see 3 > 2
        ([2.51], 3),
        ([3.5], 4),  # banker's rounding would say 4 here and 2 above; half-up says 4 and 3
        ([2.4994], 2),  # written as 2.499
        ([2.4996], 3),  # written as 2.500: the rule applies to the text a player reads
        ([2.0, 2.49, 1.0], 2),
        ([2.0, 2.5, 1.0], 3),
        ([0.2], 1),
        ([0.0], 1),
        ([6.006], 6),
    ],
)
def test_target_duration_is_the_longest_written_extinf_rounded_half_up(
    durations: list[float], target: int
) -> None:
    playlist = MediaPlaylist(
        segments=[MediaSegment(uri=f"{i}.ts", duration_s=d) for i, d in enumerate(durations)]
    )
    assert playlist.required_target_duration() == target
    assert f"#EXT-X-TARGETDURATION:{target}\n" in playlist.render()
    assert m3u8.loads(playlist.render()).target_duration == target


@given(st.lists(st.floats(min_value=0.0, max_value=30.0), max_size=20))
def test_no_written_extinf_rounds_above_the_target(durations: list[float]) -> None:
    playlist = MediaPlaylist(
        segments=[MediaSegment(uri=f"{i}.ts", duration_s=d) for i, d in enumerate(durations)]
    )
    text = playlist.render()
    target = int(text.split("#EXT-X-TARGETDURATION:")[1].split("\n")[0])
    written = [
        Decimal(line[len("#EXTINF:") :].rstrip(","))
        for line in text.splitlines()
        if line.startswith("#EXTINF:")
    ]
    rounded = [int(d.quantize(Decimal(1), rounding=ROUND_HALF_UP)) for d in written]
    assert all(r <= target for r in rounded)
    assert target == max([1, *rounded])  # and no larger than it has to be


def test_an_explicit_target_is_kept_but_never_below_a_segment() -> None:
    segments = live_segments(3, duration_s=2.002)
    assert (
        "#EXT-X-TARGETDURATION:6\n" in MediaPlaylist(segments=segments, target_duration=6).render()
    )
    segments[1].duration_s = 2.5
    with pytest.raises(TranscodeError, match="below 3 s"):
        MediaPlaylist(segments=segments, target_duration=2).render()


# --- media playlists: reading back --------------------------------------------------------------

ROUND_TRIPS = {
    "live-event": MediaPlaylist(
        segments=live_segments(5, duration_s=2.002),
        target_duration=2,
        media_sequence=120,
        playlist_type="EVENT",
    ),
    "vod-with-discontinuities": MediaPlaylist(
        segments=[
            MediaSegment(uri="a/0.ts", duration_s=2.0, program_date_time=START),
            MediaSegment(uri="a/1.ts", duration_s=1.5, title="the end of part one"),
            MediaSegment(
                uri="b/0.ts",
                duration_s=2.0,
                discontinuity=True,
                program_date_time=START + timedelta(hours=1, milliseconds=250),
            ),
            MediaSegment(uri="b/1.ts", duration_s=0.75, discontinuity=True),
        ],
        target_duration=2,
        discontinuity_sequence=4,
        playlist_type="VOD",
        ended=True,
    ),
    "fmp4-sliding-window": MediaPlaylist(
        segments=live_segments(3, duration_s=4.0, prefix="https://cdn.example/r/1/seg-"),
        target_duration=4,
        media_sequence=9_000,
        independent_segments=False,
        map_uri="https://cdn.example/r/1/init.mp4?v=2",
        start_offset_s=-12.5,
    ),
}


@pytest.mark.parametrize("playlist", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_parse_is_the_inverse_of_render(playlist: MediaPlaylist) -> None:
    text = playlist.render()
    parsed = parse_media_playlist(text)
    assert parsed == playlist
    assert parsed.render() == text


def test_a_computed_target_reads_back_as_an_explicit_one() -> None:
    playlist = MediaPlaylist(segments=live_segments(2, duration_s=2.002))
    parsed = parse_media_playlist(playlist.render())
    assert parsed.target_duration == 2
    assert parsed.render() == playlist.render()


@pytest.mark.parametrize("playlist", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_m3u8_library_reads_what_we_wrote(playlist: MediaPlaylist) -> None:
    theirs = m3u8.loads(playlist.render())
    assert theirs.version == (6 if playlist.map_uri else 3)
    assert theirs.target_duration == playlist.target_duration
    assert theirs.media_sequence == playlist.media_sequence
    assert (theirs.discontinuity_sequence or 0) == playlist.discontinuity_sequence
    assert theirs.is_endlist == playlist.ended
    assert theirs.is_independent_segments == playlist.independent_segments
    expected_type = playlist.playlist_type.lower() if playlist.playlist_type else None
    assert theirs.playlist_type == expected_type
    if playlist.map_uri:
        assert [init.uri for init in theirs.segment_map] == [playlist.map_uri]
    if playlist.start_offset_s is not None:
        assert theirs.start.time_offset == playlist.start_offset_s
        assert theirs.start.precise == "YES"
    assert len(theirs.segments) == len(playlist.segments)
    for seen, ours in zip(theirs.segments, playlist.segments, strict=True):
        assert seen.uri == ours.uri
        assert seen.duration == pytest.approx(ours.duration_s, abs=5e-4)
        assert seen.title == ours.title
        assert seen.discontinuity == ours.discontinuity
        assert seen.program_date_time == ours.program_date_time


def test_parser_reads_other_writers_spellings() -> None:
    text = (
        "#EXTM3U\r\n"
        "#EXT-X-VERSION:3\r\n"
        "# a comment\r\n"
        "#EXT-X-TARGETDURATION:10\r\n"
        "#EXT-X-ALLOW-CACHE:YES\r\n"
        "\r\n"
        "#EXT-X-PROGRAM-DATE-TIME:2026-11-22T10:00:00Z\r\n"
        "#EXTINF:9.5,title, with a comma\r\n"
        "first.ts\r\n"
        "#EXT-X-BITRATE:800\r\n"
        "#EXTINF:10,\r\n"
        "second.ts\r\n"
    )
    playlist = parse_media_playlist(text)
    assert playlist.target_duration == 10
    assert playlist.media_sequence == 0
    assert not playlist.independent_segments
    assert [s.uri for s in playlist.segments] == ["first.ts", "second.ts"]
    assert [s.duration_s for s in playlist.segments] == [9.5, 10.0]
    assert playlist.segments[0].title == "title, with a comma"
    assert playlist.segments[0].program_date_time == START


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "#EXTM3U"),
        ("#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n", "#EXTM3U"),
        ("\ufeff#EXTM3U\n#EXT-X-TARGETDURATION:2\n", "byte order mark"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n", "no URI"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n#EXT-X-ENDLIST\n", "no URI"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n#EXTINF:2,\na.ts\n", "without a URI"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\na.ts\n", "no #EXTINF"),
        ("#EXTM3U\n#EXTINF:2,\na.ts\n", "TARGETDURATION"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:two\n", "not a decimal integer"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:-1\n", "decimal integer"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:long,\na.ts\n", "not a decimal number"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:-2,\na.ts\n", "negative"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:LIVE\n", "EVENT or VOD"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PROGRAM-DATE-TIME:noon\n", "date-time"),
        (
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PROGRAM-DATE-TIME:2026-11-22T10:00:00\n",
            "no UTC offset",
        ),
        ('#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:BYTERANGE="1@0"\n', "no URI"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=init.mp4 x\n", "malformed"),
        (
            '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI="a.mp4"\n#EXTINF:2,\na.ts\n'
            '#EXT-X-MAP:URI="b.mp4"\n',
            "second #EXT-X-MAP",
        ),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-START:PRECISE=YES\n", "TIME-OFFSET"),
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n", "master playlist"),
    ],
)
def test_text_that_is_not_a_media_playlist_is_refused(text: str, complaint: str) -> None:
    with pytest.raises(TranscodeError, match=complaint):
        parse_media_playlist(text)


# --- the per-segment cache ----------------------------------------------------------------------


def test_rendering_again_sees_every_change_to_a_segment() -> None:
    segments = live_segments(3)
    playlist = MediaPlaylist(segments=segments, playlist_type="EVENT")
    first = playlist.render()
    assert playlist.render() == first

    segments[1].uri = "renamed.ts"
    segments[1].duration_s = 1.25
    segments[1].title = "retitled"
    segments[2].discontinuity = True
    segments[2].program_date_time = None
    segments.append(MediaSegment(uri="seg00003.ts", duration_s=2.0))
    playlist.ended = True
    fresh = MediaPlaylist(
        segments=[
            MediaSegment(
                uri=s.uri,
                duration_s=s.duration_s,
                program_date_time=s.program_date_time,
                discontinuity=s.discontinuity,
                title=s.title,
            )
            for s in segments
        ],
        playlist_type="EVENT",
        ended=True,
    )
    assert playlist.render() == fresh.render()
    assert "#EXTINF:1.250,retitled\nrenamed.ts\n" in playlist.render()
    assert "#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\nseg00002.ts\n" in playlist.render()


def test_cache_does_not_leak_into_equality_or_repr() -> None:
    rendered = MediaSegment(uri="a.ts", duration_s=2)
    rendered.render()
    assert rendered == MediaSegment(uri="a.ts", duration_s=2)
    assert "_rendered" not in repr(rendered)


# --- master playlists ---------------------------------------------------------------------------


def test_master_playlist_text_is_exact() -> None:
    assert master().render() == (
        "#EXTM3U\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "# 720p\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=3000000,AVERAGE-BANDWIDTH=2500000,"
        'CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=1280x720,FRAME-RATE=30.000\n'
        "720p/index.m3u8\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=900000,CODECS="avc1.4d401e,mp4a.40.2",'
        "RESOLUTION=640x360,FRAME-RATE=29.970\n"
        "360p/index.m3u8\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=140000,CODECS="mp4a.40.2"\n'
        "audio/index.m3u8\n"
    )


def test_master_round_trip() -> None:
    text = master().render()
    assert parse_master_playlist(text) == master()
    assert parse_master_playlist(text).render() == text
    plain = MasterPlaylist(variants=master().variants[2:], independent_segments=False)
    assert parse_master_playlist(plain.render()) == plain


def test_m3u8_library_reads_our_master() -> None:
    theirs = m3u8.loads(master().render())
    assert theirs.is_variant
    assert theirs.is_independent_segments
    seen = [
        (
            p.uri,
            p.stream_info.bandwidth,
            p.stream_info.average_bandwidth,
            p.stream_info.codecs,
            p.stream_info.resolution,
            p.stream_info.frame_rate,
        )
        for p in theirs.playlists
    ]
    assert seen == [
        (
            v.uri,
            v.bandwidth,
            v.average_bandwidth,
            v.codecs,
            v.resolution,
            None if v.frame_rate is None else round(v.frame_rate, 3),
        )
        for v in master().variants
    ]


@pytest.mark.parametrize(
    "variant",
    [
        Variant(uri="v.m3u8", bandwidth=0, codecs="mp4a.40.2"),
        Variant(uri="v.m3u8", bandwidth=1, average_bandwidth=0, codecs="mp4a.40.2"),
        Variant(uri="v.m3u8", bandwidth=1, codecs=""),
        Variant(uri="v.m3u8", bandwidth=1, codecs='mp4a"'),
        Variant(uri="v.m3u8", bandwidth=1, codecs="avc1.64001f", resolution=(0, 720)),
        Variant(uri="v.m3u8", bandwidth=1, codecs="avc1.64001f", frame_rate=0.0),
        Variant(uri="v\n.m3u8", bandwidth=1, codecs="mp4a.40.2"),
        Variant(uri="v.m3u8", bandwidth=1, codecs="mp4a.40.2", name="two\nlines"),
    ],
)
def test_variants_that_cannot_be_written_are_refused(variant: Variant) -> None:
    with pytest.raises(TranscodeError):
        MasterPlaylist(variants=[variant]).render()


def test_master_without_variants_is_refused() -> None:
    with pytest.raises(TranscodeError):
        MasterPlaylist(variants=[]).render()


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n", "#EXTM3U"),
        ("#EXTM3U\n", "at least one"),
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n", "no URI"),
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n#EXT-X-STREAM-INF:BANDWIDTH=2\nv\n", "no URI"),
        ("#EXTM3U\nv.m3u8\n", "no #EXT-X-STREAM-INF"),
        ('#EXTM3U\n#EXT-X-STREAM-INF:CODECS="mp4a.40.2"\nv.m3u8\n', "no BANDWIDTH"),
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=720p\nv.m3u8\n", "WxH"),
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=lots\nv.m3u8\n", "decimal integer"),
        ('#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS="a\nv.m3u8\n', "malformed"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n", "media playlist"),
    ],
)
def test_text_that_is_not_a_master_playlist_is_refused(text: str, complaint: str) -> None:
    with pytest.raises(TranscodeError, match=complaint):
        parse_master_playlist(text)


# --- rewriting URIs -----------------------------------------------------------------------------


def presign(key: str) -> str:
    return f"https://s3.example/bucket/{key}?X-Amz-Signature=0f{len(key)}"


def test_rewrite_media_playlist_touches_only_uris() -> None:
    playlist = MediaPlaylist(
        segments=live_segments(3),
        map_uri="r/1/init.mp4",
        start_offset_s=-6,
        ended=True,
    )
    text = playlist.render()
    rewritten = rewrite_uris(text, presign)
    expected = text.replace('URI="r/1/init.mp4"', f'URI="{presign("r/1/init.mp4")}"')
    for segment in playlist.segments:
        expected = expected.replace(f"\n{segment.uri}\n", f"\n{presign(segment.uri)}\n")
    assert rewritten == expected
    parsed = parse_media_playlist(rewritten)
    assert parsed.map_uri == presign("r/1/init.mp4")
    assert [s.uri for s in parsed.segments] == [presign(s.uri) for s in playlist.segments]


def test_rewrite_master_playlist_touches_every_uri_and_nothing_else() -> None:
    text = (
        "#EXTM3U\r\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\r\n"
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English",URI="audio/en.m3u8"\r\n'
        '#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="CC1",INSTREAM-ID="CC1"\r\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=3000000,CODECS="avc1.64001f,mp4a.40.2",AUDIO="aud"\r\n'
        "720p/index.m3u8\r\n"
        "\r\n"
        "# a comment that is not a URI\r\n"
        '#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=80000,CODECS="avc1.64001f",URI="720p/iframes.m3u8"\r\n'
        "#EXT-X-STREAM-INF:BANDWIDTH=900000\r\n"
        "  360p/index.m3u8  \r\n"
        '#EXT-X-SESSION-DATA:DATA-ID="com.example.title",VALUE="Morning show"'
    )
    seen: list[str] = []

    def record(uri: str) -> str:
        seen.append(uri)
        return presign(uri)

    rewritten = rewrite_uris(text, record)
    assert seen == [
        "audio/en.m3u8",
        "720p/index.m3u8",
        "720p/iframes.m3u8",
        "360p/index.m3u8",
    ]
    expected = (
        text.replace('URI="audio/en.m3u8"', f'URI="{presign("audio/en.m3u8")}"')
        .replace("\r\n720p/index.m3u8\r\n", f"\r\n{presign('720p/index.m3u8')}\r\n")
        .replace('URI="720p/iframes.m3u8"', f'URI="{presign("720p/iframes.m3u8")}"')
        .replace("  360p/index.m3u8  ", f"  {presign('360p/index.m3u8')}  ")
    )
    assert rewritten == expected


def test_rewrite_does_not_mistake_a_quoted_value_for_a_uri_attribute() -> None:
    line = '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="x,URI=",LANGUAGE="en",URI="en.m3u8"'
    expected = line.replace('URI="en.m3u8"', 'URI="EN.M3U8"')
    assert rewrite_uris(f"#EXTM3U\n{line}\n", str.upper) == f"#EXTM3U\n{expected}\n"


def test_rewrite_of_our_master_reads_back() -> None:
    rewritten = parse_master_playlist(rewrite_uris(master().render(), presign))
    assert [v.uri for v in rewritten.variants] == [presign(v.uri) for v in master().variants]
    assert [v.codecs for v in rewritten.variants] == [v.codecs for v in master().variants]


@pytest.mark.parametrize("bad", ["a\nb", "#a", "", 'a"b'])
def test_rewrite_refuses_uris_that_would_break_the_playlist(bad: str) -> None:
    text = MediaPlaylist(segments=live_segments(1), map_uri="init.mp4").render()
    with pytest.raises(TranscodeError):
        rewrite_uris(text, lambda uri: bad)


def test_rewriting_a_two_hour_playlist_rewrites_every_uri() -> None:
    # Speed is measured by bench/playlists.py; this checks the large case behaves.
    text = MediaPlaylist(segments=live_segments(3600), playlist_type="EVENT").render()
    rewritten = rewrite_uris(text, presign)
    assert rewritten.count("https://s3.example/bucket/") == 3600


# --- date ranges: speaker turns -------------------------------------------------------------------


def turn(n: int, seat: int, start_s: float, end_s: float | None, name: str) -> DateRange:
    return DateRange(
        id=f"turn-{n}",
        class_="com.afterlive.speaker",
        start=START + timedelta(seconds=start_s),
        end=None if end_s is None else START + timedelta(seconds=end_s),
        attributes={"SEAT": float(seat), "HOST": name},
    )


def test_date_ranges_round_trip_and_a_second_parser_reads_them() -> None:
    ranges = [turn(1, 1, 0.5, 3.25, "Ana"), turn(2, 2, 3.5, 7.0, "Bea, the second")]
    playlist = MediaPlaylist(segments=live_segments(4), dateranges=ranges, playlist_type="EVENT")
    text = playlist.render()
    assert (
        '#EXT-X-DATERANGE:ID="turn-1",CLASS="com.afterlive.speaker",'
        'START-DATE="2026-11-22T10:00:00.500+00:00",END-DATE="2026-11-22T10:00:03.250+00:00",'
        'X-SEAT=1.000,X-HOST="Ana"'
    ) in text.splitlines()
    assert text.index("#EXT-X-DATERANGE") < text.index("#EXTINF")
    back = parse_media_playlist(text)
    assert back.dateranges == ranges
    # m3u8 ties date ranges to the segment after them: the first.
    theirs = m3u8.loads(text).segments[0].dateranges
    assert [(d.id, d.start_date, dict(d.x_client_attrs)["x_host"]) for d in theirs] == [
        ("turn-1", "2026-11-22T10:00:00.500+00:00", '"Ana"'),
        ("turn-2", "2026-11-22T10:00:03.500+00:00", '"Bea, the second"'),
    ]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (turn(1, 1, 3.0, 2.0, "Ana"), "ends before it starts"),
        (turn(1, 1, 0, 1, 'Say "hi"'), "quoted string"),
        (DateRange(id="x", start=START, attributes={"bad name": "v"}), "not an attribute name"),
        (DateRange(id="x", start=START, attributes={"N": float("nan")}), "is nan"),
    ],
)
def test_bad_date_ranges_are_refused(bad: DateRange, why: str) -> None:
    with pytest.raises(TranscodeError, match=why):
        MediaPlaylist(segments=live_segments(1), dateranges=[bad]).render()


def test_date_ranges_need_a_program_date_time() -> None:
    undated = [MediaSegment(uri="a.ts", duration_s=2.0)]
    with pytest.raises(TranscodeError, match="needs a segment with EXT-X-PROGRAM-DATE-TIME"):
        MediaPlaylist(segments=undated, dateranges=[turn(1, 1, 0, 1, "Ana")]).render()
