"""Podcast feeds: RSS 2.0 with the iTunes namespace, the way Apple Podcasts and other apps read it.

ElementTree writes the XML, so titles and descriptions are escaped however creators write them.
Enclosure URLs must stay valid for as long as the feed lists them (apps download episodes days
later), so they are never presigned: the public base URL when there is one, else the API's
stable URL that redirects to a fresh presigned one.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from storage.models import Episode, Programme

ITUNES = "http://www.itunes.com/dtds/podcast-1.0.dtd"
ATOM = "http://www.w3.org/2005/Atom"
CONTENT = "http://purl.org/rss/1.0/modules/content/"
ET.register_namespace("itunes", ITUNES)
ET.register_namespace("atom", ATOM)
ET.register_namespace("content", CONTENT)


@dataclass(frozen=True, kw_only=True)
class FeedUrls:
    feed: str  # where the feed itself is read (atom:link rel=self)
    site: str  # the programme's page
    artwork: str | None
    enclosure: Callable[[Episode], str]


def render_feed(
    programme: Programme, episodes: Sequence[Episode], urls: FeedUrls, *, built_at: datetime
) -> bytes:
    """The feed of a programme's published episodes, newest first."""
    rss = ET.Element("rss", {"version": "2.0"})
    channel = ET.SubElement(rss, "channel")
    _text(channel, "title", programme.title)
    _text(channel, "link", urls.site)
    _text(channel, "description", programme.description or programme.title)
    _text(channel, "language", programme.language)
    _text(channel, "lastBuildDate", format_datetime(built_at))
    _text(channel, "generator", "afterlive")
    ET.SubElement(
        channel,
        f"{{{ATOM}}}link",
        {"href": urls.feed, "rel": "self", "type": "application/rss+xml"},
    )
    _text(channel, f"{{{ITUNES}}}author", programme.author or programme.title)
    _text(channel, f"{{{ITUNES}}}summary", programme.description or programme.title)
    _text(channel, f"{{{ITUNES}}}explicit", "true" if programme.explicit else "false")
    _text(channel, f"{{{ITUNES}}}type", "episodic")
    owner = ET.SubElement(channel, f"{{{ITUNES}}}owner")
    _text(owner, f"{{{ITUNES}}}name", programme.author or programme.title)
    if urls.artwork:
        ET.SubElement(channel, f"{{{ITUNES}}}image", {"href": urls.artwork})
        image = ET.SubElement(channel, "image")
        _text(image, "url", urls.artwork)
        _text(image, "title", programme.title)
        _text(image, "link", urls.site)
    top, _, sub = programme.category.partition(">")
    category = ET.SubElement(channel, f"{{{ITUNES}}}category", {"text": top.strip()})
    if sub.strip():
        ET.SubElement(category, f"{{{ITUNES}}}category", {"text": sub.strip()})

    published = [e for e in episodes if e.status == "done" and e.published_at is not None]
    for episode in sorted(published, key=lambda e: e.published_at, reverse=True):
        item = ET.SubElement(channel, "item")
        _text(item, "title", episode.title)
        _text(item, "description", episode.description or episode.title)
        _text(item, "guid", f"afterlive:episode:{episode.id}", isPermaLink="false")
        _text(item, "pubDate", format_datetime(episode.published_at))
        ET.SubElement(
            item,
            "enclosure",
            {
                "url": urls.enclosure(episode),
                "length": str(episode.audio_bytes or 0),
                "type": "audio/mpeg",
            },
        )
        _text(item, f"{{{ITUNES}}}duration", str(round(episode.duration_s or 0)))
        _text(item, f"{{{ITUNES}}}explicit", "true" if programme.explicit else "false")
        _text(item, f"{{{ITUNES}}}episodeType", "full")
        if episode.number is not None:
            _text(item, f"{{{ITUNES}}}episode", str(episode.number))
    ET.indent(rss)
    return ET.tostring(rss, encoding="utf-8", xml_declaration=True)


def _text(parent: ET.Element, tag: str, text: str, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    element.text = text
    return element
