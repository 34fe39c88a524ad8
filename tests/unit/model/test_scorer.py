"""The Scorer: marginal scoring, unknown categories, explanations, policies."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from detector.model.mixture import full_covariances
from detector.model.scorer import Scorer
from detector.model.train import train
from detector.settings import FeatureSettings
from tests.unit.conftest import as_rows, mixture_sample, small_settings


@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied", "spherical"])
def test_marginal_scoring_matches_a_sub_mixture_built_by_hand(covariance_type: str) -> None:
    # Given a model of one covariance type
    bundle = train(
        as_rows(mixture_sample(3_000, seed=6)),
        small_settings(model={"covariance_types": [covariance_type], "n_components_max": 3}),
    )
    scorer = Scorer(bundle)
    # When rows miss feature "c" (absent) or "a" (null)
    x = mixture_sample(20, seed=7)
    rows = as_rows(x)
    for r in rows[:10]:
        del r["c"]
    for r in rows[10:]:
        r["a"] = None
    result = scorer.score(rows)
    # Then each score equals the density of the sub-mixture over the present features,
    # built by hand from the fitted weights, means and covariances (in scaled units)
    gmm = bundle.mixture
    covs = full_covariances(gmm)
    xs = (x - bundle.scaler.mean_) / bundle.scaler.scale_
    for rows_idx, present in ((slice(0, 10), [0, 1, 3]), (slice(10, 20), [1, 2, 3])):
        sub = xs[rows_idx][:, present]
        comp = [
            np.log(w) + multivariate_normal(m[present], c[np.ix_(present, present)]).logpdf(sub)
            for w, m, c in zip(gmm.weights_, gmm.means_, covs, strict=True)
        ]
        expected = logsumexp(np.vstack(comp), axis=0)
        np.testing.assert_allclose(result.log_likelihood[rows_idx], expected, rtol=1e-9, atol=1e-9)
    # ...against thresholds calibrated on the calibration rows marginalized the same way
    cal = bundle.calibration_rows[:, [0, 1, 3]]
    sub_mixture, thresholds = scorer._marginal(np.array([0, 1, 3]))
    np.testing.assert_allclose(
        thresholds.log_likelihood,
        np.quantile(sub_mixture.log_likelihood(cal), [0.01, 0.001], method="lower"),
    )


def test_complete_rows_use_score_samples_exactly(small_bundle) -> None:
    x = mixture_sample(100, seed=8)
    result = Scorer(small_bundle).score(as_rows(x))
    expected = small_bundle.mixture.score_samples(small_bundle.scaler.transform(x))
    np.testing.assert_array_equal(result.log_likelihood, expected)


def test_unknown_category_and_missing_value_are_scored_not_refused(categorical_bundle) -> None:
    # Given a model with a categorical feature "kind" (pump, fan, valve)
    scorer = Scorer(categorical_bundle)
    rows = as_rows(mixture_sample(3, seed=9))
    rows[0]["kind"] = "compressor"  # never seen in training
    rows[1]["kind"] = "fan"
    rows[1]["b"] = None  # missing value
    rows[2]["kind"] = None  # missing category
    # When they are scored
    result = scorer.score(rows)
    # Then all three have finite scores, the unknown category is counted, nothing is an error
    assert not result.errors
    assert np.isfinite(result.log_likelihood).all()
    assert result.unknown_categories.tolist() == [1, 0, 0]
    assert result.feature_missing[1].tolist() == [False, True, False, False, False]
    assert result.feature_missing[2, -1]


def test_contributions_sum_to_the_mahalanobis_distance_and_name_the_culprit(small_bundle) -> None:
    # Given a normal row with feature "b" pushed 12 standard deviations out
    x = mixture_sample(1, seed=10)
    x[0, 1] += 12.0
    result = Scorer(small_bundle).score(as_rows(x))
    # Then it alerts critical, "b" is the top feature, and the terms sum to the distance
    assert result.severity_name(0) == "critical"
    top = result.top_features[0]
    assert top[0].feature == "b"
    assert top[0].value == pytest.approx(x[0, 1])
    assert len(top) == 3
    scorer = Scorer(small_bundle)
    full = scorer.explain(as_rows(x))
    xs = small_bundle.scaler.transform(x)
    terms, comp = scorer.mixture.contributions(xs)
    z = xs[0] - scorer.mixture.means[comp[0]]
    d2 = z @ np.linalg.solve(scorer.mixture.covariances[comp[0]], z)
    assert terms.sum() == pytest.approx(d2)
    assert full.mahalanobis_sq[0] == pytest.approx(d2)


def test_percentile_maps_scores_to_the_calibration_distribution(big_bundle) -> None:
    scorer = Scorer(big_bundle)
    thr = big_bundle.thresholds.log_likelihood
    pct = big_bundle.thresholds.percentile_of(np.array([thr[0] - 1e-9, np.inf, -np.inf]))
    assert pct[0] == pytest.approx(1.0, abs=0.05)
    assert pct[1] == 100.0 and pct[2] == 0.0
    assert scorer.thresholds.names == ("warning", "critical")


def test_missing_value_policies(small_bundle) -> None:
    rows = as_rows(mixture_sample(4, seed=11))
    rows[0]["a"] = None
    rows[1]["a"] = rows[1]["b"] = rows[1]["c"] = None
    # reject: any missing value is a missing_features error
    rejected = Scorer(small_bundle, FeatureSettings(missing_policy="reject")).score(rows)
    assert set(rejected.errors) == {0, 1} and rejected.errors[0][0] == "missing_features"
    # marginalize (default): up to max_missing_fraction (0.5) is scored, 3 of 4 missing is not
    marginal = Scorer(small_bundle).score(rows)
    assert set(marginal.errors) == {1}
    assert np.isfinite(marginal.log_likelihood[[0, 2, 3]]).all()
    # impute: the training mean stands in; every row scores
    imputed = Scorer(
        small_bundle, FeatureSettings(missing_policy="impute", max_missing_fraction=1.0)
    ).score(rows)
    assert not imputed.errors and np.isfinite(imputed.log_likelihood).all()


def test_bad_values_are_row_errors_and_huge_values_are_critical(small_bundle) -> None:
    rows = as_rows(mixture_sample(3, seed=12))
    rows[0]["a"] = "hot"
    rows[1]["a"] = float("inf")
    rows[2]["a"] = 1e300
    result = Scorer(small_bundle).score(rows)
    assert result.errors[0][0] == "bad_value" and "'hot'" in result.errors[0][1]
    assert result.errors[1][0] == "bad_value" and "infinite" in result.errors[1][1]
    assert result.severity_name(2) == "critical" and np.isfinite(result.log_likelihood[2])


def test_an_empty_batch_scores_to_empty_results(small_bundle) -> None:
    result = Scorer(small_bundle).score([])
    assert result.log_likelihood.shape == (0,) and not result.errors


def test_a_reading_that_overflows_once_standardized_is_a_row_error_not_a_batch_failure() -> None:
    # Given a model of features with standard deviations below 1, and a batch where one
    # row's reading is finite but infinite once standardized
    scorer = Scorer(train(as_rows(mixture_sample(3_000, seed=5) * 0.05), small_settings()))
    rows = as_rows(mixture_sample(4, seed=31) * 0.05)
    rows[1]["b"] = -1e308
    # When the batch is scored (and explained, as reports do)
    result = scorer.score(rows)
    explained = scorer.explain(rows)
    # Then only that row is refused, as bad_value naming the feature; the others score
    assert set(result.errors) == {1} and result.errors[1][0] == "bad_value"
    assert result.errors[1][1].startswith("b = ")
    assert np.isfinite(result.log_likelihood[[0, 2, 3]]).all()
    assert set(explained.top_features) == {0, 2, 3}
