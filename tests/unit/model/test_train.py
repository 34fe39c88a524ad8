"""Training: BIC model selection, calibrated thresholds, what is refused."""

from __future__ import annotations

import numpy as np
import pytest

from detector.errors import TrainingError
from detector.model.scorer import Scorer
from detector.model.train import train
from tests.unit.conftest import as_rows, mixture_sample, small_settings


def test_bic_picks_the_true_number_of_components(small_bundle) -> None:
    # Given 5,000 rows from three well separated Gaussians (full covariance)
    # When the BIC grid over K = 1..4 x four covariance types is searched
    chosen = small_bundle.summary["chosen"]
    # Then three components win, and every grid cell is recorded with BIC and AIC
    assert chosen["n_components"] == 3
    grid = small_bundle.summary["grid"]
    assert len(grid) == 4 * 4
    assert all(c["bic"] is not None and c["aic"] is not None for c in grid)


def test_warning_alert_rate_on_fresh_normal_rows_is_near_one_percent(big_bundle) -> None:
    # Given a model trained on 100,000 rows (20,000 of them held out to calibrate)
    scorer = Scorer(big_bundle)
    # When 50,000 fresh rows from the same distribution are scored
    result = scorer.score(as_rows(mixture_sample(50_000, seed=99)))
    # Then about 1% raise a warning (or worse) and about 0.1% are critical
    warning_rate = float((result.severity >= 1).mean())
    assert 0.008 <= warning_rate <= 0.012, warning_rate
    assert 0.0003 <= float((result.severity == 2).mean()) <= 0.002


def test_a_cell_with_too_many_parameters_for_the_rows_is_skipped_with_a_reason() -> None:
    # Given only 300 rows of 4 features, and a grid up to 10 full-covariance components
    rows = as_rows(mixture_sample(300, seed=4))
    bundle = train(
        rows,
        small_settings(
            model={"n_components_max": 10, "covariance_types": ["full"]}, training={"min_rows": 50}
        ),
    )
    # Then the cells that cannot be estimated are skipped and say why, and a model is chosen
    skipped = [c for c in bundle.summary["grid"] if c["skipped"]]
    assert skipped and all("too few rows" in c["skipped"] for c in skipped)
    assert bundle.summary["chosen"]["n_components"] <= 3


def test_labelled_anomalies_are_dropped_and_too_few_rows_refused() -> None:
    # Given 400 rows of which 300 are labelled anomalous
    rows = as_rows(mixture_sample(400, seed=5))
    labels = np.array([1] * 300 + [0] * 100)
    # When training requires at least 200 normal rows
    # Then it refuses with a message naming the counts
    with pytest.raises(TrainingError, match="100 usable normal rows"):
        train(rows, small_settings(), labels=labels)


def test_training_summary_carries_what_drift_checks_and_audits_need(small_bundle) -> None:
    s = small_bundle.summary
    assert set(s["reference"]) == {"a", "b", "c", "d"}
    ref = s["reference"]["a"]
    assert sum(ref["bin_counts"]) == s["rows"]["fit"]
    assert len(ref["bin_counts"]) == len(ref["bin_edges"]) + 1
    assert {"0.1", "1", "50"} <= set(s["calibration_quantiles"])
    assert "scikit-learn" in s["libraries"] and s["train_seconds"] > 0


def test_the_summary_tells_what_became_of_each_column() -> None:
    # Given rows with a numeric column with gaps, a category, an id, and reader notes
    from tests.unit.conftest import as_rows, mixture_sample, small_settings

    x = mixture_sample(1500, seed=60)
    rows = [
        dict(r, kind=["pump", "fan"][i % 2], serial=f"SN{i}", a=None if i % 100 == 0 else r["a"])
        for i, r in enumerate(as_rows(x))
    ]
    notes = {"a": "3 cells read as missing ('n/a')", "entity": "entity id column"}
    # When a model is trained
    bundle = train(rows, small_settings(model={"n_components_max": 3}), column_notes=notes)
    cols = {c["column"]: c for c in bundle.summary["columns"]}
    # Then the summary's column table carries type, reason and missing cells per column
    assert [cols[n]["type"] for n in ("a", "b", "kind", "serial", "entity")] == [
        "numeric",
        "numeric",
        "categorical",
        "excluded",
        "excluded",
    ]
    assert cols["a"]["missing_cells"] == 15
    assert cols["a"]["why"] == "every present value is a number; 3 cells read as missing ('n/a')"
    assert cols["kind"]["why"] == "2 levels (text values)"
    assert cols["serial"]["why"].startswith("excluded as id")
    assert "serial" not in bundle.spec.features
