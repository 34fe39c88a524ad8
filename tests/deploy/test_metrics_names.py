"""Every metric the dashboard and the alert rules query is one the code exports, read from
the registries of `ServiceMetrics` and `RetrainMetrics` (not from a list), with label names
the metric has."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from detector.metrics import RetrainMetrics, ServiceMetrics
from detector.retrain.exporter import PUSH_JOB
from tests.deploy.tools import DEPLOY

METRIC = re.compile(r"\b(detector_[a-z0-9_]+)\b(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
# Labels Prometheus adds at scrape time, not the code.
TARGET_LABELS = {"job", "instance"}


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, as Prometheus stores them (counters end in _total,
    histograms have _bucket with le, _sum, _count)."""
    out: dict[str, set[str]] = {}
    for metrics in (ServiceMetrics(), RetrainMetrics()):
        registry: CollectorRegistry = metrics.registry
        for collector in list(registry._collector_to_names):
            labels = set(getattr(collector, "_labelnames", ()))
            for family in collector.describe():
                if family.type == "counter":
                    out[f"{family.name}_total"] = labels
                elif family.type == "histogram":
                    out[f"{family.name}_bucket"] = labels | {"le"}
                    out[f"{family.name}_sum"] = labels
                    out[f"{family.name}_count"] = labels
                else:
                    out[family.name] = labels
    return out


def dashboard_exprs() -> list[str]:
    d = json.loads((DEPLOY / "grafana" / "detector-dashboard.json").read_text())
    return [t["expr"] for p in d["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def unknown_in(expr: str, names: dict[str, set[str]]) -> list[str]:
    problems = []
    for metric, selector in METRIC.findall(expr):
        if metric not in names:
            problems.append(f"{metric}: not exported")
            continue
        for label in MATCHER.findall(selector or ""):
            if label not in names[metric] | TARGET_LABELS:
                problems.append(f"{metric}{{{label}}}: no such label")
    return problems


def test_registries_are_read_not_listed() -> None:
    names = exported()
    # A counter, a histogram and a retrain metric, as Prometheus names their samples
    assert {"detector_events_total", "detector_stage_duration_seconds_bucket"} <= set(names)
    assert "detector_retrain_runs_total" in names
    assert names["detector_events_total"] == {"outcome"}


def test_every_dashboard_query_uses_exported_metrics_and_labels() -> None:
    names = exported()
    exprs = dashboard_exprs()
    assert sum(len(METRIC.findall(e)) for e in exprs) >= len(exprs)
    problems = {e: unknown_in(e, names) for e in exprs}
    assert not {e: p for e, p in problems.items() if p}


def test_every_alert_rule_uses_exported_metrics_and_labels() -> None:
    names = exported()
    rules = rule_exprs()
    assert len(rules) >= 7
    problems = {alert: unknown_in(expr, names) for alert, expr in rules}
    assert not {a: p for a, p in problems.items() if p}


def test_the_check_catches_a_misspelt_metric_or_label() -> None:
    names = exported()
    assert unknown_in('rate(detector_event_total{outcome="scored"}[1m])', names)
    assert unknown_in('rate(detector_events_total{outcom="scored"}[1m])', names)
    assert not unknown_in('rate(detector_events_total{outcome="scored"}[1m])', names)


def test_the_rules_job_labels_are_the_scrape_jobs_and_the_push_job() -> None:
    # Given the jobs compose's Prometheus scrapes and the job the CronJob pushes as
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {c["job_name"] for c in prom["scrape_configs"]} | {PUSH_JOB}
    # Then every job="..." in the rules is one of them
    used: set[str] = set()
    for _, expr in rule_exprs():
        used |= set(re.findall(r'job="([^"]+)"', expr))
    assert used and used <= jobs, used - jobs


def _panel(title: str) -> dict[str, Any]:
    d = json.loads((DEPLOY / "grafana" / "detector-dashboard.json").read_text())
    return next(p for p in d["panels"] if p["title"] == title)


def test_the_retraining_panel_reads_both_the_scraped_and_the_pushed_retrainer() -> None:
    exprs = [t["expr"] for t in _panel("Retraining runs")["targets"]]
    assert any(f'job!="{PUSH_JOB}"' in e for e in exprs)
    assert any(f'job="{PUSH_JOB}"' in e for e in exprs)
