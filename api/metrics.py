"""`GET /metrics`: Prometheus text, read from the running parts at scrape time.

Nothing is counted twice: the recorder, the uploader and the store keep their own counters, and a
collector turns them into metric families when Prometheus asks. prometheus_client writes the
exposition format (escaping, types, HELP lines); we only say what the numbers are.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from api.runtime import Runtime
from api.version import version

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RuntimeCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime
        info = GaugeMetricFamily("afterlive_info", "afterlive version", labels=["version"])
        info.add_metric([version()], 1)
        yield info

        live, _ = rt.recorder.live_counts()
        yield GaugeMetricFamily(
            "afterlive_live_rooms", "Rooms recording now (publisher connected or in grace)", live
        )
        yield GaugeMetricFamily(
            "afterlive_publishers_connected",
            "Publishers connected now, over every seat of every room",
            rt.recorder.seats_live(),
        )

        yield CounterMetricFamily(
            "afterlive_publishes_refused_busy",
            "New lives refused because the node was at its limit or behind on uploads",
            rt.recorder.refused_busy,
        )

        yield CounterMetricFamily(
            "afterlive_lives_ended_spool_full",
            "Lives ended (keeping what they had) because the spool's disk was full",
            rt.recorder.ended_spool_full,
        )
        dropped = CounterMetricFamily(
            "afterlive_mix_dropped_seconds",
            "Seconds of hosts' audio the live room mixes could not take: late (behind the"
            " jitter buffer), early (far ahead of the clock), behind (the mix fell behind)",
            labels=["reason"],
        )
        for why, seconds in rt.recorder.mix_dropped_s().items():
            dropped.add_metric([why], seconds)
        yield dropped
        yield GaugeMetricFamily(
            "afterlive_spool_free_bytes",
            "Free bytes on the spool's disk (new lives are refused under min_spool_free)",
            rt.recorder.space.free(),
        )
        if rt.rtmp is not None:
            yield GaugeMetricFamily(
                "afterlive_rtmp_connections", "RTMP connections open now", rt.rtmp.open
            )
            yield GaugeMetricFamily(
                "afterlive_rtmp_pending_connections",
                "RTMP connections open now whose publish is not accepted yet",
                rt.rtmp.pending,
            )
            refused = CounterMetricFamily(
                "afterlive_rtmp_connections_refused",
                "RTMP connections closed at once: the server held max_connections "
                "(reason=connections) or max_pending (reason=pending)",
                labels=["reason"],
            )
            for reason, n in sorted(rt.rtmp.refused.items()):
                refused.add_metric([reason], n)
            yield refused

        stats = rt.uploader.stats
        yield CounterMetricFamily(
            "afterlive_segments_uploaded", "Media segments stored", stats.segments
        )
        yield CounterMetricFamily(
            "afterlive_uploads", "Objects stored (segments and playlists)", stats.uploaded
        )
        yield CounterMetricFamily(
            "afterlive_uploaded_bytes", "Bytes stored by the uploader", stats.uploaded_bytes
        )
        yield CounterMetricFamily(
            "afterlive_upload_retries", "Uploads that failed and were retried", stats.failures
        )
        latency = SummaryMetricFamily(
            "afterlive_upload_latency_seconds",
            "From queued to stored, per object (quantiles over the last 2,048 uploads)",
            count_value=stats.uploaded,
            sum_value=stats.latency_sum_s,
        )
        yield latency
        recent = list(stats.latency_s)
        if len(recent) >= 2:
            cuts = statistics.quantiles(recent, n=100, method="inclusive")
            recent_q = GaugeMetricFamily(
                "afterlive_upload_latency_recent_seconds",
                "Upload latency quantiles over the last 2,048 uploads",
                labels=["quantile"],
            )
            for q in (50, 95, 99):
                recent_q.add_metric([f"0.{q}"], cuts[q - 1])
            yield recent_q
        yield GaugeMetricFamily(
            "afterlive_spool_depth",
            "Objects waiting in the local spool to be uploaded",
            rt.uploader.pending(),
        )
        yield GaugeMetricFamily(
            "afterlive_upload_backlog_bytes",
            "Bytes queued or uploading to the store",
            stats.backlog_bytes,
        )
        yield GaugeMetricFamily(
            "afterlive_upload_lag_seconds",
            "How long the oldest queued upload has waited",
            rt.uploader.oldest_wait_s(),
        )

        requests = CounterMetricFamily(
            "afterlive_store_requests", "Store operations sent", labels=["operation"]
        )
        for op, n in sorted(rt.store.requests.items()):
            requests.add_metric([op], n)
        yield requests
        errors = CounterMetricFamily(
            "afterlive_store_errors",
            "Store operations that failed after botocore's retries",
            labels=["operation"],
        )
        for op, n in sorted(rt.store.failures.items()):
            errors.add_metric([op], n)
        yield errors
        if rt.embedded is not None:
            yield CounterMetricFamily(
                "afterlive_embedded_store_restarts",
                "Times the embedded store was restarted after dying",
                rt.embedded.restarts,
            )


def registry_for(runtime: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
