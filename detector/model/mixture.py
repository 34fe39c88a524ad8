"""Gaussian-mixture algebra scikit-learn does not expose: marginals and contributions.

A Gaussian mixture's marginal over a subset of features is again a Gaussian mixture with
the same weights, the means restricted to the subset and each covariance restricted to
the subset's rows and columns. That gives an exact density for rows with missing values.
Every covariance type is expanded to full (K, d, d) matrices once, so one code path
serves all four.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture

_LOG_2PI = float(np.log(2.0 * np.pi))


def full_covariances(gmm: GaussianMixture) -> np.ndarray:
    """The fitted covariances as a (K, d, d) array whatever ``covariance_type`` was."""
    k, d = gmm.means_.shape
    cov = gmm.covariances_
    if gmm.covariance_type == "full":
        return np.asarray(cov, dtype=np.float64)
    if gmm.covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d)).copy()
    if gmm.covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([np.eye(d) * c for c in cov])  # spherical


@dataclass(frozen=True)
class Mixture:
    """Weights, means and full covariances, with Cholesky factors precomputed."""

    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    covariances: np.ndarray  # (K, d, d)

    def __post_init__(self) -> None:
        chol = np.linalg.cholesky(self.covariances)
        object.__setattr__(self, "_chol", chol)
        log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        object.__setattr__(
            self, "_log_norm", np.log(self.weights) - 0.5 * (self.dim * _LOG_2PI + log_det)
        )

    @classmethod
    def from_sklearn(cls, gmm: GaussianMixture) -> Mixture:
        return cls(
            np.asarray(gmm.weights_, dtype=np.float64),
            np.asarray(gmm.means_, dtype=np.float64),
            full_covariances(gmm),
        )

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def marginal(self, columns: np.ndarray) -> Mixture:
        """The exact marginal mixture over ``columns`` (indices into the full feature set)."""
        idx = np.asarray(columns, dtype=np.intp)
        return Mixture(self.weights, self.means[:, idx], self.covariances[:, idx][:, :, idx])

    def weighted_log_prob(self, x: np.ndarray) -> np.ndarray:
        """(n, K): log(weight_k) + log N(x | mean_k, cov_k) for each row and component."""
        chol: np.ndarray = self._chol  # type: ignore[attr-defined]
        out = np.empty((x.shape[0], self.weights.shape[0]))
        for k in range(self.weights.shape[0]):
            y = solve_triangular(chol[k], (x - self.means[k]).T, lower=True)
            out[:, k] = -0.5 * np.einsum("ij,ij->j", y, y)
        return out + self._log_norm  # type: ignore[attr-defined]

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """(n,): log density of each row under the mixture."""
        return np.asarray(logsumexp(self.weighted_log_prob(x), axis=1))

    def contributions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature terms of each row's squared Mahalanobis distance.

        Under each row's most responsible component k, with z = x - mean_k and
        P = cov_k^-1, term_i = z_i * (P z)_i; the terms sum to z' P z exactly. Returns
        ``(terms (n, d), component (n,))``.
        """
        comp = np.argmax(self.weighted_log_prob(x), axis=1)
        terms = np.empty_like(x)
        for k in np.unique(comp):
            rows = comp == k
            z = x[rows] - self.means[k]
            pz = np.linalg.solve(self.covariances[k], z.T).T
            terms[rows] = z * pz
        return terms, comp
