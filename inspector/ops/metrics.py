"""Prometheus exposition of the selectors' figures (prometheus-client's text format, a fresh registry per scrape)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, SummaryMetricFamily

from inspector.ops import selectors


class _InspectorCollector:
    def collect(self):
        lengths = selectors.queue_lengths()
        up = GaugeMetricFamily("inspector_broker_up", "1 if the Celery broker answered this scrape")
        up.add_metric([], 0 if lengths is None else 1)
        yield up
        queue = GaugeMetricFamily("inspector_queue_length", "Messages waiting in a Celery queue", labels=["queue"])
        for name, n in (lengths or {}).items():
            queue.add_metric([name], n)
        yield queue

        stats = selectors.work_stats()
        inspections = GaugeMetricFamily("inspector_inspections", "Inspections by status", labels=["status"])
        for status, n in stats.inspections_by_status.items():
            inspections.add_metric([status], n)
        yield inspections
        sets = GaugeMetricFamily("inspector_support_sets", "Support sets by status", labels=["status"])
        for status, n in stats.support_sets_by_status.items():
            sets.add_metric([status], n)
        yield sets
        yield GaugeMetricFamily(
            "inspector_oldest_queued_seconds",
            "Age of the oldest queued inspection (0: none queued); grows when workers cannot keep up",
            value=stats.oldest_queued_seconds,
        )
        hist = HistogramMetricFamily(
            "inspector_inspection_duration_seconds", "Claim to result of each done inspection, all workers"
        )
        buckets = [(repr(b), n) for b, n in stats.duration_buckets] + [("+Inf", stats.duration_count)]
        hist.add_metric([], buckets, sum_value=stats.duration_sum_seconds)
        yield hist
        detect = SummaryMetricFamily("inspector_detect_seconds", "The detector's own time per done inspection")
        detect.add_metric([], count_value=stats.detect_count, sum_value=stats.detect_sum_seconds)
        yield detect


def render() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_InspectorCollector())
    return generate_latest(registry)
