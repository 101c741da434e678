"""PQ index and SAP's per-round prune count (Diao et al., ICLR 2023; METHODS.md §1).

The paper works on weights; edgeprune applies it to the vector of filter importances of one channel group
to decide how many of the group's units may go this round (our derivation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["pq_index", "sap_keep_bound", "sap_prune_count"]


def _check_pq(p: float, q: float) -> None:
    if not 0 < p < q:
        raise ValueError(f"PQ index needs 0 < p < q, got p={p}, q={q}")


def pq_index(w: Sequence[float] | np.ndarray, p: float = 0.5, q: float = 1.0) -> float:
    """I(w) = 1 - d^(1/q - 1/p) · ||w||_p / ||w||_q, in [0, 1 - d^(1/q - 1/p)]; larger = sparser.

    `d` is the length of `w` (the entries still present, zeros included: a zero entry is what makes a
    vector compressible). An empty or all-zero vector has index 0.
    """
    _check_pq(p, q)
    a = np.abs(np.asarray(w, dtype=np.float64).ravel())
    d = a.size
    if d == 0 or not a.any():
        return 0.0
    norm_p = float((a**p).sum() ** (1.0 / p))
    norm_q = float((a**q).sum() ** (1.0 / q))
    return 1.0 - d ** (1.0 / q - 1.0 / p) * norm_p / norm_q


def sap_keep_bound(d: int, index: float, p: float = 0.5, q: float = 1.0, eta: float = 0.0) -> float:
    """r = d · (1+η)^(−q/(q−p)) · (1−I)^(qp/(q−p)): how many of d entries should be kept."""
    _check_pq(p, q)
    return d * (1.0 + eta) ** (-q / (q - p)) * (1.0 - index) ** (q * p / (q - p))


def sap_prune_count(
    scores: Sequence[float] | np.ndarray,
    p: float = 0.5,
    q: float = 1.0,
    eta: float = 0.0,
    gamma: float = 1.0,
    beta: float = 0.9,
) -> int:
    """floor(d · min(γ · (1 − r/d), β)): how many of the group's d units SAP removes this round.

    Never all of them: the result is clipped to [0, d - 1].
    """
    d = len(scores)
    if d == 0:
        return 0
    r = sap_keep_bound(d, pq_index(scores, p, q), p, q, eta)
    n = math.floor(d * min(gamma * (1.0 - r / d), beta) + 1e-9)  # 1e-9: 0.9*10 must be 9, not 8
    return max(0, min(d - 1, n))
