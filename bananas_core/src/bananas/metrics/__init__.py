"""Metrics: the in-memory collector (the original's snapshot), Prometheus endpoints, the exporter.

``bananas.metrics.collector`` needs nothing optional; ``bananas.metrics.prometheus`` needs the
``prometheus`` extra (``prometheus_client``) and is imported only when metrics are served.
"""

from __future__ import annotations

from bananas.metrics.collector import Collector, JobMetrics, Snapshot, StoreSample, sample_store, snapshot_of

__all__ = ["Collector", "JobMetrics", "Snapshot", "StoreSample", "sample_store", "snapshot_of"]
