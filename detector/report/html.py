"""HTML pages for people: the evaluation report and the model card (the demo run's page is
``detector.report.demo_page``), and the pieces every page is built from.

Each page is one file with its plots embedded as PNG data URIs, so it opens offline,
can be attached to a ticket, and needs no server. Plots use matplotlib's Agg backend.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from detector.model.bundle import ModelBundle
from detector.model.scorer import ScoreResult

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem} h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0} td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left} td:nth-child(3){text-align:left} img{max-width:100%;height:auto}
.nowrap{white-space:nowrap} .kv td{text-align:left} .num td:nth-child(3){text-align:right} .ok{color:#17692f;font-weight:600} .bad{color:#a11;font-weight:600} .muted{color:#666} code{background:#f4f4f4;padding:0 .2rem}
"""


def figure_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def img(fig: Figure, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{figure_uri(fig)}">'


class Html(str):
    """Markup written by this module on purpose; every other table cell is escaped.

    Cells come from data (category values, entity ids, reasons): a cell is trusted as
    HTML only by its type, never by what its text looks like.
    """


def cell(value: Any) -> str:
    return value if isinstance(value, Html) else html.escape(str(value))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, sections: Sequence[tuple[str, str]], subtitle: str = "") -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
    ]
    parts.append(f"<h1>{html.escape(title)}</h1>")
    if subtitle:
        parts.append(f"<p class='muted'>{html.escape(subtitle)}</p>")
    for heading, content in sections:
        section_id = heading.lower().replace(" ", "-")
        parts.append(
            f"<section id='{html.escape(section_id)}'><h2>{html.escape(heading)}</h2>{content}</section>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.2f}%"


# -- model card ---------------------------------------------------------------------------
def _temporal_line(bundle: ModelBundle) -> str:
    """The temporal forms the model reads, and how they were chosen (features.temporal_auto)."""
    plan = bundle.spec.temporal_plan
    line = (
        f"{', '.join(plan.forms)} of {', '.join(plan.windows)} (window "
        f"{', '.join(sorted({str(n) for n in plan.windows.values()}))}; dev half-life "
        f"{plan.halflife_events:g} events)"
        if plan
        else "none"
    )
    choice = bundle.summary.get("temporal_choice")
    if choice:
        from detector.model.choose import describe_choice

        line += f"; chosen by validation: {describe_choice(choice)}"
    return line


def model_card_sections(bundle: ModelBundle) -> list[tuple[str, str]]:
    s = bundle.summary
    chosen = s["chosen"]
    rows = s["rows"]
    overview = table(
        ["", ""],
        [
            ["version", bundle.version or "(unpublished)"],
            ["created", bundle.created_at],
            ["chosen model", f"K={chosen['n_components']}, {chosen['covariance_type']} covariance"],
            [
                "features",
                f"{len(bundle.spec.numeric)} numeric, {len(bundle.spec.categorical)} categorical ({len(bundle.spec.columns)} encoded columns)",
            ],
            ["log1p features", ", ".join(sorted(bundle.spec.log1p)) or "-"],
            ["temporal features", _temporal_line(bundle)],
            [
                "rows",
                f"{rows['fit']:,} fit, {rows['calibration']:,} calibration, {rows['bic_subsample']:,} in the BIC search; "
                f"{rows['dropped_labelled_anomalous']:,} labelled anomalous and {rows['dropped_invalid_or_incomplete']:,} invalid/incomplete dropped",
            ],
            ["training time", f"{s.get('train_seconds', 0):.1f} s"],
            ["libraries", ", ".join(f"{k} {v}" for k, v in s.get("libraries", {}).items())],
        ],
    )
    thresholds = table(
        ["severity", "percentile of normal", "log-likelihood threshold"],
        [
            [n, f"{t['percentile']}%", f"{t['log_likelihood']:.3f}"]
            for n, t in bundle.thresholds.to_dict().items()
        ],
    )
    grid = s.get("grid", [])
    covs = sorted({c["covariance_type"] for c in grid})
    ks = sorted({c["n_components"] for c in grid})
    heat = np.full((len(covs), len(ks)), np.nan)
    for c in grid:
        if c["bic"] is not None:
            heat[covs.index(c["covariance_type"]), ks.index(c["n_components"])] = c["bic"]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(ks) + 2), 0.6 * len(covs) + 1.5))
    im = ax.imshow(heat, aspect="auto", cmap="viridis_r")
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_yticks(range(len(covs)), covs)
    ax.set_xlabel("n_components")
    if chosen["covariance_type"] in covs and chosen["n_components"] in ks:
        ax.scatter(
            [ks.index(chosen["n_components"])],
            [covs.index(chosen["covariance_type"])],
            marker="*",
            s=250,
            c="red",
            label="chosen",
        )
        ax.legend(loc="upper right", fontsize=8)
    fig.colorbar(im, ax=ax, label="BIC (lower is better)")
    ax.set_title("BIC of the grid (blank = skipped)")
    grid_rows = [
        [
            c["covariance_type"],
            c["n_components"],
            "-" if c["bic"] is None else f"{c['bic']:,.0f}",
            "-" if c["aic"] is None else f"{c['aic']:,.0f}",
            "yes" if c["converged"] else "no",
            c["skipped"] or "",
        ]
        for c in grid
    ]
    ref = s.get("reference", {})
    ref_rows = [
        [name, f"{r['mean']:.4g}", f"{r['std']:.4g}", f"{r['min']:.4g}", f"{r['max']:.4g}"]
        for name, r in ref.items()
        if r.get("kind") == "numeric"
    ]
    cat_rows = [
        [
            name,
            len(r["categories"]),
            ", ".join(r["categories"][:12]) + (" ..." if len(r["categories"]) > 12 else ""),
        ]
        for name, r in ref.items()
        if r.get("kind") == "categorical"
    ]
    content = (
        overview
        + "<h3>Thresholds</h3>"
        + thresholds
        + "<h3>Model selection</h3>"
        + img(fig, "BIC heat map")
        + "<details><summary>grid table (BIC and AIC on the search subsample)</summary>"
        + table(["covariance", "K", "BIC", "AIC", "converged", "skipped because"], grid_rows)
        + "</details>"
        + (
            "<h3>Columns (what training did with each)</h3>"
            + table(
                ["column", "type", "why", "missing cells"],
                [
                    [
                        c["column"],
                        c["type"],
                        c["why"],
                        "" if c["missing_cells"] is None else c["missing_cells"],
                    ]
                    for c in s["columns"]
                ],
            )
            if s.get("columns")
            else ""
        )
        + "<h3>Feature reference statistics (fit rows, before scaling)</h3>"
        + table(["feature", "mean", "std", "min", "max"], ref_rows)
        + (table(["categorical feature", "categories", "examples"], cat_rows) if cat_rows else "")
    )
    return [("Model card", content)]


def model_card_report(path: Path, bundle: ModelBundle) -> None:
    path.write_text(page(f"Model card {bundle.version}", model_card_sections(bundle)))


# -- evaluation ---------------------------------------------------------------------------
def evaluation_report(
    path: Path,
    bundle: ModelBundle,
    result: ScoreResult,
    labels: np.ndarray,
    figures: dict[str, Any],
) -> None:
    y = np.asarray(labels).astype(bool)
    ok = np.isfinite(result.log_likelihood)
    y_ok, ll = y[ok], result.log_likelihood[ok]
    sections: list[tuple[str, str]] = []
    summary = table(
        ["rows", "scored", "normal", "anomalous", "invalid", "AUROC", "AUPRC"],
        [
            [
                figures["rows"],
                figures["scored"],
                figures["normal"],
                figures["anomalous"],
                figures["unscored_invalid"],
                "-" if figures["auroc"] is None else f"{figures['auroc']:.4f}",
                "-" if figures["auprc"] is None else f"{figures['auprc']:.4f}",
            ]
        ],
    )
    sections.append(("Summary", summary))
    if y_ok.any() and (~y_ok).any():
        fpr, tpr, _ = roc_curve(y_ok, -ll)
        prec, rec, _ = precision_recall_curve(y_ok, -ll)
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        a1.plot(fpr, tpr, lw=2)
        a1.plot([0, 1], [0, 1], "--", c="grey")
        a1.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            title=f"ROC (AUROC {figures['auroc']:.3f})",
        )
        a2.plot(rec, prec, lw=2)
        a2.axhline(y_ok.mean(), ls="--", c="grey", label="anomaly share")
        a2.set(
            xlabel="recall",
            ylabel="precision",
            title=f"Precision-recall (AUPRC {figures['auprc']:.3f})",
        )
        a2.legend()
        sections.append(("ROC and PR curves", img(fig, "ROC and precision-recall curves")))
    fig, ax = plt.subplots(figsize=(11, 4.2))
    lo = np.percentile(ll, 0.5) if ll.size else -1
    hi = np.percentile(ll, 99.9) if ll.size else 1
    bins = np.linspace(
        max(lo, float(np.min(bundle.thresholds.log_likelihood)) - 30), hi, 80
    ).tolist()
    ax.hist(
        np.clip(ll[~y_ok], bins[0], bins[-1]), bins=bins, alpha=0.6, label="normal", density=True
    )
    if y_ok.any():
        ax.hist(
            np.clip(ll[y_ok], bins[0], bins[-1]),
            bins=bins,
            alpha=0.6,
            label="anomalous",
            density=True,
        )
    for name, thr in zip(bundle.thresholds.names, bundle.thresholds.log_likelihood, strict=True):
        ax.axvline(
            thr,
            ls="--",
            c="red" if name == bundle.thresholds.names[-1] else "orange",
            label=f"{name} threshold",
        )
    ax.set(
        xlabel="log-likelihood (clipped to the plotted range)",
        ylabel="density",
        title="Log-likelihood by label",
    )
    ax.legend()
    sections.append(("Score distributions", img(fig, "histogram of log-likelihood by label")))
    rows = []
    for (name, f), target in zip(
        figures["per_severity"].items(), bundle.thresholds.percentiles, strict=True
    ):
        realized = f["alert_rate_normal"]
        rows.append(
            [name, f"{target}%", pct(realized), pct(f["recall_anomalous"]), pct(f["precision"])]
        )
    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = list(figures["per_severity"])
    xs = np.arange(len(names))
    ax.bar(xs - 0.2, [float(t) for t in bundle.thresholds.percentiles], 0.4, label="target")
    ax.bar(
        xs + 0.2,
        [100 * (figures["per_severity"][n]["alert_rate_normal"] or 0) for n in names],
        0.4,
        label="realized on normal rows",
    )
    ax.set_xticks(xs, names)
    ax.set(ylabel="alert rate on normal rows (%)", title="Calibration")
    ax.legend()
    sections.append(
        (
            "Calibration and recall",
            table(
                [
                    "severity",
                    "target alert rate",
                    "realized on normal",
                    "recall on anomalous",
                    "precision",
                ],
                rows,
            )
            + img(fig, "target versus realized alert rate"),
        )
    )
    drivers: Counter[str] = Counter()
    for contributions in result.top_features.values():
        if contributions:
            drivers[contributions[0].feature] += 1
    if drivers:
        top = drivers.most_common(15)
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(top) + 1.2))
        ax.barh([n for n, _ in reversed(top)], [c for _, c in reversed(top)])
        ax.set(xlabel="alerts where it contributed most", title="Features that drive alerts")
        sections.append(
            ("Features that drive alerts", img(fig, "features that most often drive alerts"))
        )
    else:
        sections.append(("Features that drive alerts", "<p>No alerts.</p>"))
    sections.extend(model_card_sections(bundle))
    path.write_text(
        page(
            f"Evaluation of model {bundle.version}",
            sections,
            subtitle=f"{figures['rows']:,} labelled rows",
        )
    )
