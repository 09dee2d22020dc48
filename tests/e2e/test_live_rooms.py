"""Live Rooms end to end: several hosts publishing into one room, each with its own key, recorded
as one recording with a seat each; real ffmpeg publishers over RTMP and HTTP push, the embedded
store, playlists read back and decoded by a real player (PyAV).

Each host sends its own tone (300/500/700/900 Hz): a seat's renditions must carry that host's
tone and no other's, on the one wall clock of the recording."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

import av
import httpx
import numpy as np
import pytest

from storage import keys as K
from tests.utils.media import publish_http, publish_rtmp, tones_per_second
from tests.utils.net import wait_until
from tests.utils.player import WHITELIST, presigned_copy
from tests.utils.service import Service, module_service
from transcode.playlists import parse_master_playlist, parse_media_playlist

GRACE_S = 3
TONES = {1: 300, 2: 500, 3: 700, 4: 900}

service = module_service(
    "rooms", AFTERLIVE_RECONNECT_GRACE=f"{GRACE_S}s", AFTERLIVE_PUBLISHER_TIMEOUT="4s"
)


@pytest.fixture(scope="module")
def token(service: Service) -> str:
    return service.new_creator("Ana")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def invite(service: Service, token: str, room: dict, name: str, **body) -> dict:
    reply = httpx.post(
        f"{service.api}/api/rooms/{room['id']}/hosts",
        json={"name": name, **body},
        headers=auth(token),
        timeout=10,
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


def finished(*publishers) -> None:
    for publisher in publishers:
        _, err = publisher.communicate(timeout=60)
        assert publisher.returncode == 0, err


def audio_of(service: Service, recording_id: str, rendition: str, tmp_path) -> tuple:
    """A rendition's playlist and its decoded audio (first channel, as float)."""
    store = service.store()
    key = K.media_playlist(recording_id, rendition)
    playlist = parse_media_playlist(store.get(key).decode())
    chunks, rate = [], 0
    with av.open(str(presigned_copy(store, key, tmp_path)), options=WHITELIST) as media:
        stream = media.streams.audio[0]
        rate = stream.rate
        for frame in media.decode(stream):
            array = frame.to_ndarray()
            channels = frame.layout.nb_channels
            chunks.append(array[0] if frame.format.is_planar else array.reshape(-1, channels)[:, 0])
    return playlist, np.concatenate(chunks), rate


def test_four_hosts_one_recording_a_seat_each(service, token, tmp_path) -> None:
    room = service.new_room(token, "video", "Four of us")
    bea, cai, dan = (invite(service, token, room, name) for name in ("Bea", "Cai", "Dan"))
    assert [h["seat"] for h in (bea, cai, dan)] == [2, 3, 4]

    dropped_before = mix_dropped(service)
    t0 = time.monotonic()
    ana_live = publish_rtmp(room["rtmp_url"], seconds=22, tone_hz=TONES[1])
    cai_live = publish_rtmp(cai["rtmp_url"], seconds=10, tone_hz=TONES[3], video=False)
    time.sleep(1)
    dan_first = publish_http(dan["http_push_url"], seconds=6, tone_hz=TONES[4])
    time.sleep(max(0, t0 + 4 - time.monotonic()))
    bea_live = publish_rtmp(bea["rtmp_url"], seconds=12, tone_hz=TONES[2])

    # While live: a second publisher on a live seat is refused, before anything is stored.
    wait_until(
        lambda: any(h["live"] for h in hosts_of(service, token, room) if h["seat"] == 2),
        timeout=10,
        what="Bea live",
    )
    second = httpx.put(bea["http_push_url"], content=b"\x47" * 188 * 20, timeout=10)
    assert second.status_code == 409, second.text
    assert "already live" in second.json()["detail"]
    live = {h["seat"]: h["live"] for h in hosts_of(service, token, room)}
    assert live == {1: True, 2: True, 3: True, 4: True}

    finished(dan_first)  # Dan leaves at about 7 s (a clean end: no grace) and comes back at 10
    time.sleep(max(0, t0 + 10 - time.monotonic()))
    dan_back = publish_http(dan["http_push_url"], seconds=6, tone_hz=TONES[4])
    finished(ana_live, cai_live, bea_live, dan_back)

    [recording] = service.wait_ended(room["id"], timeout=30)  # one recording, joins never split it
    rid = recording.id
    detail = httpx.get(f"{service.api}/api/recordings/{rid}", timeout=10).json()
    assert [(h["seat"], h["name"], h["recorded"]) for h in detail["hosts"]] == [
        (1, "Ana", True),
        (2, "Bea", True),
        (3, "Cai", True),
        (4, "Dan", True),
    ]
    by_seat: dict[int, set[str]] = {}
    for r in detail["renditions"]:
        by_seat.setdefault(r["seat"], set()).add(r["name"])
        assert httpx.get(r["playlist_url"], timeout=10).status_code == 200, r
    assert by_seat == {
        0: {"mix"},  # the room's own: every host's audio mixed
        1: {"source", "audio"},
        2: {"hosts/2/source", "hosts/2/audio"},
        3: {"hosts/3/source"},  # no camera: the seat is audio alone
        4: {"hosts/4/source", "hosts/4/audio"},
    }

    store = service.store()
    stored = {info.key for info in store.list(K.recording_prefix(rid))}
    firsts, seconds = {}, {1: 22, 2: 12, 3: 10, 4: 12}
    for seat, rendition in (
        (1, "audio"),
        (2, "hosts/2/audio"),
        (3, "hosts/3/source"),
        (4, "hosts/4/audio"),
    ):
        playlist, samples, rate = audio_of(service, rid, rendition, tmp_path)
        assert all(s.program_date_time is not None for s in playlist.segments)
        base = K.media_playlist(rid, rendition).rsplit("/", 1)[0]
        assert all(f"{base}/{s.uri}" in stored for s in playlist.segments)
        assert abs(playlist.duration_s() - seconds[seat]) <= 2.1, (seat, playlist.duration_s())
        firsts[seat] = playlist.segments[0].program_date_time
        heard = tones_per_second(samples, rate, list(TONES.values()))
        # Every whole second of a seat carries its host's tone, and no other host's.
        assert all(tones == {TONES[seat]} for tones in heard), (seat, heard)
        if seat == 4:  # Dan left and came back: one discontinuity, dated when he came back
            breaks = [s for s in playlist.segments if s.discontinuity]
            assert len(breaks) == 1
            back = (breaks[0].program_date_time - firsts[1]).total_seconds()
            assert 8.5 <= back <= 12, back

    # The master is the room mix: what listeners hear, what clips are cut from.
    master = parse_master_playlist(store.get(K.master_playlist(rid)).decode())
    assert [(v.uri, v.codecs) for v in master.variants] == [("mix/index.m3u8", "mp4a.40.2")]

    # The mix carries each host's tone while (and only while) that host was live.
    mix, samples, rate = audio_of(service, rid, "mix", tmp_path)
    origin = mix.segments[0].program_date_time
    assert abs((origin - firsts[1]).total_seconds()) <= 1.0
    assert abs(mix.duration_s() - 22) <= 2.5, mix.duration_s()
    heard = tones_per_second(samples, rate, list(TONES.values()))
    live = {seat: spans(service, rid, rendition) for seat, rendition in AUDIO_OF.items()}
    checked = 0
    for second, tones in enumerate(heard):
        lo = origin + timedelta(seconds=second)
        hi = lo + timedelta(seconds=1)
        for seat, intervals in live.items():
            inside = any(a + MARGIN <= lo and hi <= b - MARGIN for a, b in intervals)
            outside = all(hi <= a - MARGIN or b + MARGIN <= lo for a, b in intervals)
            if inside:
                assert TONES[seat] in tones, (second, seat, tones, intervals)
                checked += 1
            elif outside:
                assert TONES[seat] not in tones, (second, seat, tones, intervals)
                checked += 1
    assert checked >= 60, checked
    # Every host's audio reached the mix in time: none dropped (read in batches, RTMP sockets
    # would hold up to a second of it, over the mix's jitter buffer).
    dropped = mix_dropped(service)
    assert all(dropped[why] - dropped_before[why] < 0.05 for why in dropped), dropped

    # Who spoke when: each host's turns match when they sent their tone, within 0.5 s.
    turns = httpx.get(f"{service.api}/api/recordings/{rid}/speakers", timeout=10).json()
    for seat, intervals in live.items():
        theirs = [(at(t["start_at"]), at(t["end_at"])) for t in turns if t["seat"] == seat]
        assert len(theirs) == len(intervals), (seat, theirs, intervals)
        for (start, end), (a, b) in zip(theirs, intervals, strict=True):
            assert abs((start - a).total_seconds()) <= 0.5, (seat, start, a)
            assert abs((end - b).total_seconds()) <= 0.5, (seat, end, b)
    assert {t["host"] for t in turns} == {"Ana", "Bea", "Cai", "Dan"}
    assert len(mix.dateranges) == len(turns)  # and any HLS client sees them

    # One wall clock: each seat's first segment is dated when its host joined.
    joined = {seat: (at - firsts[1]).total_seconds() for seat, at in firsts.items()}
    assert abs(joined[3]) <= 1.0 and 0.3 <= joined[4] <= 2.5 and 3.0 <= joined[2] <= 5.5, joined
    ended = recording.ended_at - recording.started_at
    assert timedelta(seconds=20) <= ended <= timedelta(seconds=25), ended


AUDIO_OF = {1: "audio", 2: "hosts/2/audio", 3: "hosts/3/source", 4: "hosts/4/audio"}
MARGIN = timedelta(seconds=0.5)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def spans(service: Service, recording_id: str, rendition: str) -> list[tuple[datetime, datetime]]:
    """When a seat's media ran: its playlist's dated runs, split at discontinuities."""
    playlist = parse_media_playlist(
        service.store().get(K.media_playlist(recording_id, rendition)).decode()
    )
    runs: list[tuple[datetime, datetime]] = []
    for seg in playlist.segments:
        end = seg.program_date_time + timedelta(seconds=seg.duration_s)
        if runs and not seg.discontinuity:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((seg.program_date_time, end))
    return runs


def mix_dropped(service: Service) -> dict[str, float]:
    """afterlive_mix_dropped_seconds_total by reason, from /metrics."""
    text = httpx.get(f"{service.api}/metrics", timeout=10).text
    found = re.findall(r'^afterlive_mix_dropped_seconds_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    assert found, text[:2000]
    return {why: float(value) for why, value in found}


def hosts_of(service: Service, token: str, room: dict) -> list[dict]:
    reply = httpx.get(
        f"{service.api}/api/rooms/{room['id']}/hosts", headers=auth(token), timeout=10
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_a_removed_host_is_cut_off_and_refused_the_room_goes_on(service, token) -> None:
    room = service.new_room(token, "video", "Removal")
    bea = invite(service, token, room, "Bea")
    ana_live = publish_rtmp(room["rtmp_url"], seconds=14, video=False, tone_hz=TONES[1])
    bea_live = publish_http(bea["http_push_url"], seconds=30, video=False, tone_hz=TONES[2])
    wait_until(
        lambda: all(h["live"] for h in hosts_of(service, token, room)), timeout=10, what="both live"
    )
    time.sleep(3)
    removed = httpx.delete(
        f"{service.api}/api/rooms/{room['id']}/hosts/2", headers=auth(token), timeout=10
    )
    assert removed.status_code == 204
    bea_live.wait(timeout=10)  # cut off at once, not after its 30 s
    assert [h["seat"] for h in hosts_of(service, token, room)] == [1]
    again = httpx.put(bea["http_push_url"], content=b"\x47" * 188 * 20, timeout=10)
    assert again.status_code == 403
    assert again.json()["detail"].startswith("this host was removed from the room")
    rtmp_again = publish_rtmp(bea["rtmp_url"], seconds=5, video=False)
    assert rtmp_again.wait(timeout=20) != 0  # refused by RTMP too
    finished(ana_live)

    [recording] = service.wait_ended(room["id"], timeout=30)
    # The room went on with Ana: one recording, what Bea sent before her removal kept.
    renditions = {r.name for r in service.catalog().renditions(recording.id)}
    assert renditions == {"mix", "source", "hosts/2/source"}
    store = service.store()
    bea_part = parse_media_playlist(
        store.get(K.media_playlist(recording.id, "hosts/2/source")).decode()
    )
    assert bea_part.ended and 1.5 <= bea_part.duration_s() <= 8
    assert "the room's creator removed" in service.log.read_text()


def test_audio_room_six_speakers_one_not_recorded(service, token, tmp_path) -> None:
    room = service.new_room(token, "audio", "Stage")
    tones = {1: 300, 2: 420, 3: 540, 4: 660, 5: 780, 6: 900}
    hosts = [invite(service, token, room, f"Speaker {n}", recorded=n != 6) for n in range(2, 7)]
    urls = {1: room["rtmp_url"], **{h["seat"]: h["rtmp_url"] for h in hosts}}
    publishers = [
        publish_rtmp(urls[seat], seconds=8, video=False, tone_hz=tones[seat])
        for seat in sorted(urls)
    ]
    finished(*publishers)
    [recording] = service.wait_ended(room["id"], timeout=30)
    seats = service.catalog().recording_seats(recording.id)
    assert [(s.seat, s.recorded) for s in seats] == [(n, n != 6) for n in range(1, 7)]

    store = service.store()
    stored = [info.key for info in store.list(K.recording_prefix(recording.id))]
    assert not any(key.startswith(K.recording_prefix(recording.id) + "hosts/6/") for key in stored)
    renditions = {r.name for r in service.catalog().renditions(recording.id)}
    assert renditions == {"mix", "source"} | {f"hosts/{n}/source" for n in range(2, 6)}
    for seat in range(1, 6):
        name = "source" if seat == 1 else f"hosts/{seat}/source"
        _, samples, rate = audio_of(service, recording.id, name, tmp_path)
        heard = tones_per_second(samples, rate, list(tones.values()))
        assert len(heard) >= 6 and all(t == {tones[seat]} for t in heard), (seat, heard)
    # The mix: the five recorded speakers together, the one not recorded never.
    _, samples, rate = audio_of(service, recording.id, "mix", tmp_path)
    heard = tones_per_second(samples, rate, list(tones.values()))
    together = [t for t in heard if len(t) >= 5]
    assert len(together) >= 5, heard
    assert all(t == {tones[n] for n in range(1, 6)} for t in together), heard
    assert not any(tones[6] in t for t in heard), heard
    speakers = httpx.get(f"{service.api}/api/recordings/{recording.id}/speakers", timeout=10)
    assert sorted({t["seat"] for t in speakers.json()}) == [1, 2, 3, 4, 5]

    # A clip of the conversation is cut from the mix: all five voices, on the mix's timeline.
    clip, clip_samples, clip_rate = clip_of(service, token, recording.id, 2.0, 6.0, tmp_path)
    assert abs(clip["duration_s"] - 4.0) < 0.1
    clip_master = parse_master_playlist(httpx.get(clip["playback_url"], timeout=10).text)
    assert [v.uri for v in clip_master.variants] == ["mix/index.m3u8"]
    assert abs(len(clip_samples) / clip_rate - 4.0) < 0.1
    heard = tones_per_second(clip_samples, clip_rate, list(tones.values()))
    assert len(heard) >= 3 and all(t == {tones[n] for n in range(1, 6)} for t in heard), heard


def clip_of(service: Service, token: str, recording_id: str, start_s, end_s, tmp_path):
    """A clip cut by the API, once done, and its .m4a decoded (first channel, rate)."""
    reply = httpx.post(
        f"{service.api}/api/recordings/{recording_id}/clips",
        json={"title": "A clip", "start_s": start_s, "end_s": end_s},
        headers=auth(token),
        timeout=10,
    )
    assert reply.status_code == 202, reply.text
    clip = wait_until(
        lambda: clip_done(reply.json()["status_url"], token), timeout=60, what="the clip"
    )
    m4a = tmp_path / f"{clip['id']}.m4a"
    m4a.write_bytes(httpx.get(clip["audio_url"], timeout=10, follow_redirects=True).content)
    with av.open(str(m4a)) as media:
        stream = media.streams.audio[0]
        samples = np.concatenate([f.to_ndarray()[0] for f in media.decode(stream)])
        return clip, samples, stream.rate


def clip_done(status_url: str, token: str) -> dict | None:
    body = httpx.get(status_url, headers=auth(token), timeout=10).json()
    assert body["status"] != "failed", body["error"]
    return body if body["status"] == "done" else None


def test_a_host_removed_from_an_ended_recording_leaves_nothing_and_the_mix_is_made_again(
    service, token, tmp_path
) -> None:
    room = service.new_room(token, "audio", "Consent")
    tones = {1: 300, 2: 500, 3: 700}
    hosts = [invite(service, token, room, name) for name in ("Bea", "Cai")]
    urls = {1: room["rtmp_url"], 2: hosts[0]["rtmp_url"], 3: hosts[1]["rtmp_url"]}
    publishers = [
        publish_rtmp(urls[n], seconds=8, video=False, tone_hz=tones[n]) for n in sorted(urls)
    ]
    finished(*publishers)
    [recording] = service.wait_ended(room["id"], timeout=30)
    rid = recording.id
    prefix = K.recording_prefix(rid)
    store = service.store()
    before = {i.key: i.size for i in store.list(prefix)}
    old_mix = {k for k in before if k.startswith(prefix + "mix/") and k.endswith(".ts")}
    assert any(k.startswith(prefix + "hosts/2/") for k in before)

    url = f"{service.api}/api/recordings/{rid}/hosts"
    other = httpx.delete(f"{url}/2", headers=auth(service.new_creator()), timeout=10)
    assert other.status_code == 403
    assert httpx.delete(f"{url}/7", headers=auth(token), timeout=10).status_code == 404
    reply = httpx.delete(f"{url}/2", headers=auth(token), timeout=10)
    assert reply.status_code == 202, reply.text

    job_id = reply.json()["job_id"]

    def removed():
        # The audit entry is written in the switch; the objects go after it, then the job is done.
        job = service.catalog().job(job_id)
        assert job.status != "failed", job.error
        if job.status != "done":
            return None
        return next(
            e for e in service.catalog().audit_log(recording_id=rid) if e.action == "remove_host"
        )

    event = wait_until(removed, timeout=60, what="the removal job")
    gone = {
        k: v for k, v in before.items() if k.startswith(prefix + "hosts/2/") and k.endswith(".ts")
    }
    assert event.objects_deleted == len(gone) and event.bytes_deleted == sum(gone.values())
    assert event.actor.startswith("creator:") and event.detail["seat"] == 2

    after = {i.key for i in store.list(prefix)}
    assert not any(k.startswith(prefix + "hosts/2/") for k in after)
    assert not old_mix & after  # the old mix, with Bea in it, is gone; the new one has new keys
    renditions = {r.name for r in service.catalog().renditions(rid)}
    assert renditions == {"mix", "source", "hosts/3/source"}
    detail = httpx.get(f"{service.api}/api/recordings/{rid}", timeout=10).json()
    assert [(h["seat"], h["name"], h["recorded"]) for h in detail["hosts"]] == [
        (1, "Ana", True),
        (2, "removed", False),
        (3, "Cai", True),
    ]
    turns = httpx.get(f"{service.api}/api/recordings/{rid}/speakers", timeout=10).json()
    assert sorted({t["seat"] for t in turns}) == [1, 3]

    mix, samples, rate = audio_of(service, rid, "mix", tmp_path)
    assert mix.ended and abs(mix.duration_s() - 8) <= 2.5
    assert {int(d.attributes["SEAT"]) for d in mix.dateranges} == {1, 3}
    heard = tones_per_second(samples, rate, list(tones.values()))
    assert sum(1 for t in heard if t == {300, 700}) >= 5, heard
    assert not any(500 in t for t in heard), heard  # Bea is in no second of the new mix

    # A clip made now is cut from the new mix: without her.
    _, clip_samples, clip_rate = clip_of(service, token, rid, 1.0, 6.0, tmp_path)
    heard = tones_per_second(clip_samples, clip_rate, list(tones.values()))
    assert heard and all(t == {300, 700} for t in heard), heard

    # Removing the last recorded host but one more is refused: take the recording down instead.
    assert httpx.delete(f"{url}/3", headers=auth(token), timeout=10).status_code == 202
    wait_until(
        lambda: (
            len(
                [
                    e
                    for e in service.catalog().audit_log(recording_id=rid)
                    if e.action == "remove_host"
                ]
            )
            == 2
        ),
        timeout=60,
        what="second removal",
    )
    last = httpx.delete(f"{url}/1", headers=auth(token), timeout=10)
    assert last.status_code == 409 and "take the recording down" in last.json()["detail"]
