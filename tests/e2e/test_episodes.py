"""From live room to podcast: real publishers, clips cut by the service, an episode rendered from
them, a feed that feedparser reads clean, enclosures that download with the declared length, and
all of it surviving the recordings' deletion."""

from __future__ import annotations

import subprocess

import feedparser
import httpx
from mutagen.id3 import ID3

from tests.utils.media import FFMPEG, loudness, publish_rtmp
from tests.utils.net import wait_until
from tests.utils.service import Service, module_service


def artwork(path) -> bytes:
    """A real 256x256 JPEG, as a creator would upload."""
    subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=256x256",
            "-frames:v",
            "1",
            str(path),
        ],
        check=True,
    )
    return path.read_bytes()


service = module_service("episodes")


def wait_status(url: str, headers: dict, timeout: float = 120) -> dict:
    def done():
        body = httpx.get(url, headers=headers, timeout=10).json()
        assert body["status"] != "failed", body["error"]
        return body if body["status"] == "done" else None

    return wait_until(done, timeout=timeout, interval=0.5, what=url)


def test_live_rooms_become_a_podcast_that_outlives_them(service: Service, tmp_path) -> None:
    creator = {"Authorization": f"Bearer {service.new_creator('Host')}"}
    clips, recordings = [], []
    for title, kind, tone in (("Opening", "audio", 440), ("Debate", "video", 660)):
        room = httpx.post(
            f"{service.api}/api/rooms", json={"title": title, "kind": kind}, headers=creator
        ).json()
        publisher = publish_rtmp(room["rtmp_url"], video=kind == "video", seconds=10, tone_hz=tone)
        assert publisher.wait(60) == 0, publisher.stderr.read()
        [rec] = service.wait_ended(room["id"])
        recordings.append(rec.id)
        clip = httpx.post(
            f"{service.api}/api/recordings/{rec.id}/clips",
            json={"title": f"{title} part", "start_s": 1, "end_s": 8},
            headers=creator,
        ).json()
        clips.append(wait_status(clip["status_url"], creator))

    programme = httpx.post(
        f"{service.api}/api/programmes",
        json={"title": "Rooms Weekly", "description": "The best of our rooms", "author": "Host"},
        headers=creator,
    ).json()
    image = artwork(tmp_path / "art.jpg")
    art = httpx.put(
        f"{service.api}/api/programmes/{programme['id']}/artwork",
        content=image,
        headers=creator,
    )
    assert art.status_code == 200, art.text
    reply = httpx.post(
        f"{service.api}/api/programmes/{programme['id']}/episodes",
        json={"title": "Episode one", "clips": [c["id"] for c in clips], "crossfade_s": 1.0},
        headers=creator,
    )
    assert reply.status_code == 202, reply.text
    episode = wait_status(f"{service.api}/api/episodes/{reply.json()['id']}", creator)
    assert abs(episode["duration_s"] - (7 + 7 - 1)) < 0.2
    assert [c["title"] for c in episode["chapters"]] == ["Opening part", "Debate part"]

    # The recordings go; the programme, its feed and its episode stay.
    admin = {"Authorization": f"Bearer {(service.data_dir / 'admin_token').read_text().strip()}"}
    for rec_id in recordings:
        gone = httpx.delete(f"{service.api}/api/admin/recordings/{rec_id}", headers=admin)
        assert gone.status_code == 200

    feed_url = programme["feed_url"]
    feed = feedparser.parse(httpx.get(feed_url, timeout=10).content)
    assert not feed.bozo, feed.bozo_exception
    assert feed.feed.title == "Rooms Weekly"
    [item] = feed.entries
    assert item.title == "Episode one" and item.itunes_duration == str(round(episode["duration_s"]))
    [enclosure] = item.enclosures
    assert enclosure.type == "audio/mpeg"
    mp3 = httpx.get(enclosure.href, follow_redirects=True, timeout=30)
    assert mp3.status_code == 200 and len(mp3.content) == int(enclosure.length)
    path = tmp_path / "episode.mp3"
    path.write_bytes(mp3.content)
    integrated, peak = loudness(path)
    assert abs(integrated + 16) <= 1.0 and peak <= -1.0
    tags = ID3(path)
    assert str(tags["TIT2"]) == "Episode one" and str(tags["TALB"]) == "Rooms Weekly"
    assert tags.getall("APIC")[0].data == image
    assert len(tags.getall("CHAP")) == 2
    feed_in_store = service.store().get(f"programmes/{programme['id']}/feed.xml")
    assert b"Episode one" in feed_in_store
    hls = httpx.get(episode["playback_url"], timeout=10)
    assert hls.status_code == 200 and "#EXT-X-ENDLIST" in hls.text
    # The CLI renders the next episode from the same clips, with a progress bar.
    from tests.utils.service import AFTERLIVE

    cli = subprocess.run(
        [
            *AFTERLIVE,
            "episode",
            programme["id"],
            clips[1]["id"],
            clips[0]["id"],
            "--title",
            "Episode two",
            "--crossfade",
            "0.5",
        ],
        env=service.env | {"AFTERLIVE_TOKEN": creator["Authorization"].removeprefix("Bearer ")},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert cli.returncode == 0, cli.stderr
    assert "episode done" in cli.stderr and "100%" in cli.stderr
    feed = feedparser.parse(httpx.get(feed_url, timeout=10).content)
    assert [e.title for e in feed.entries] == ["Episode two", "Episode one"]
    assert [e.itunes_episode for e in feed.entries] == ["2", "1"]
