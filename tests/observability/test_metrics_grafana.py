"""The Grafana dashboard in contrib/grafana is importable JSON whose every query names metrics
that Bananas really exposes (a renamed metric would leave a panel silently empty)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bananas import Job, observe
from bananas.metrics import JobMetrics
from bananas.metrics.collector import StoreSample
from bananas.metrics.prometheus import BananasMetrics, render
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "bananas.json"


def exposed_names() -> set[str]:
    metrics = JobMetrics()
    job = Job(name="a")
    for disposition in (observe.Disposition.COMPLETED, observe.Disposition.RETRY, observe.Disposition.DEAD):
        metrics.attempt_finished(observe.Settled(job, disposition, attempt=1, duration=0.1))
    metrics.job_claimed(job, "w", 0.5)
    metrics.cron_fired("s", job)
    sample = StoreSample(ready={("default", "normal"): 1}, scheduled=0, processing=0, dead=0, workers_alive=1)
    text = render(BananasMetrics(metrics, lambda: sample), process=False).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_query_uses_exposed_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = {name for expr in exprs for name in re.findall(r"\bbananas_[a-z_]+", expr)}
    assert used and used <= exposed_names(), used - exposed_names()
    assert dashboard["uid"] == "bananas-overview" and dashboard["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
