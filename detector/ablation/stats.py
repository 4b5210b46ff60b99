"""Statistics of the ablation table: mean and spread over seeds, and paired comparisons against a baseline.

Paired comparison of variant ``v`` with the baseline ``b`` on a metric (e.g. COCO ``mAP``): for every seed
``k`` that finished under both, ``d_k = metric(v, k) - metric(b, k)`` (same seed: same initialisation and data
order, so the run-to-run noise they share cancels). Over the ``n`` common seeds:

* ``mean = sum(d) / n``, ``sd`` the sample standard deviation (n - 1), ``se = sd / sqrt(n)``;
* the 95% t-interval ``mean ± t_{0.975, n-1} · se`` (Student's t quantile, computed here: scipy is not a
  dependency);
* the two-sided paired t-test ``t = mean / se`` with ``n - 1`` degrees of freedom, its p-value Holm-corrected
  over the variants compared on that metric (:func:`holm`);
* the verdict at ``alpha = 0.05`` on the Holm p-value: ``better`` (mean > 0), ``worse`` (mean < 0), else
  ``not distinguishable from noise``; with one common seed, ``one seed: no interval``.

The interval is the per-comparison 95% interval; only the verdict carries the Holm correction, so with
several variants an interval that just excludes 0 can still read "not distinguishable from noise".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from detector.ablation.results import RunResult

ALPHA = 0.05
"""Level of the verdicts (after Holm) and 1 - level of the intervals."""


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1 in the denominator); std is None for fewer than 2 values.

    Raises ValueError on an empty sequence.
    """
    if not values:
        raise ValueError("mean_std of no values")
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


# --------------------------------------------------------------------------------------------------
# Student's t distribution
# --------------------------------------------------------------------------------------------------

def regularized_beta(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` for ``0 <= x <= 1``, ``a, b > 0``.

    ``I_x(a, b) = x^a (1 - x)^b / (a B(a, b)) · 1 / (1 + d_1 / (1 + d_2 / (1 + ...)))`` with
    ``d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1))`` and ``d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m))``
    (the continued fraction of DLMF 8.17.22), evaluated with the modified Lentz method; it converges fast for
    ``x < (a + 1) / (a + b + 2)``, else ``1 - I_{1-x}(b, a)`` is used. ``I_x(1, 1) = x``.
    """
    if not (0.0 <= x <= 1.0) or a <= 0 or b <= 0:
        raise ValueError(f"regularized_beta needs 0 <= x <= 1 and a, b > 0, got x={x}, a={a}, b={b}")
    if x == 0.0 or x == 1.0:
        return x
    if x > (a + 1) / (a + b + 2):
        return 1.0 - regularized_beta(1.0 - x, b, a)
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    log_front = a * math.log(x) + b * math.log1p(-x) - math.log(a) - log_beta
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0  # f = 1 + d_1 / (1 + d_2 / ...), by Lentz: f_j = f_{j-1} c_j / d_j
    for j in range(1, 1000):
        m = j // 2
        if j % 2:
            coef = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            coef = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + coef * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + coef / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) / f


def student_t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df > 0`` degrees of freedom:
    ``1 - I_{df / (df + t²)}(df / 2, 1 / 2) / 2`` for ``t >= 0``, by symmetry below."""
    if df <= 0:
        raise ValueError(f"student_t_cdf needs df > 0, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2, 0.5)
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The ``t`` with ``P(T <= t) = p`` (``0 < p < 1``), by bisection on :func:`student_t_cdf` to ~1e-12.

    Tabulated: ``t_{0.975, 1} = 12.706``, ``t_{0.975, 2} = 4.303``, ``t_{0.975, 4} = 2.776``.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"student_t_quantile needs 0 < p < 1, got {p}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if student_t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


def t_test_p_value(t: float, df: float) -> float:
    """Two-sided p-value ``P(|T| >= |t|) = I_{df / (df + t²)}(df / 2, 1 / 2)``; 0 for an infinite ``t``."""
    return 0.0 if math.isinf(t) else regularized_beta(df / (df + t * t), df / 2, 0.5)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None entries are left out of the family).

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted ``p_(i)`` is
    ``min(1, max_{j <= i} (m - j + 1) p_(j))``; rejecting where the adjusted value is below ``alpha`` keeps the
    probability of any false "better / worse" in the family below ``alpha``. Returned in the input order.
    """
    order = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m, running = len(order), 0.0
    out: list[float | None] = [None] * len(p_values)
    for j, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - j) * p))
        out[i] = running
    return out


# --------------------------------------------------------------------------------------------------
# paired comparisons of variants
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairedComparison:
    """One variant against the baseline on one metric (see the module docstring).

    Attributes:
        variant, baseline, metric: what is compared (``metric`` a key of results.json ``stats``).
        seeds: the seeds finished under both, ascending; differences: variant minus baseline at each.
        mean: mean difference (None without a common seed).
        interval: ``(low, high)`` 95% t-interval of the mean difference (None with fewer than 2 seeds).
        p_value: two-sided paired t-test (None with fewer than 2 seeds); p_holm: after Holm over the variants.
        verdict: ``better``, ``worse``, ``not distinguishable from noise``, ``one seed: no interval`` or
            ``no common seed``.
    """

    variant: str
    baseline: str
    metric: str
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float | None
    interval: tuple[float, float] | None
    p_value: float | None
    p_holm: float | None
    verdict: str


def paired_t(differences: Sequence[float], level: float = 1 - ALPHA) -> tuple[float, tuple[float, float] | None,
                                                                            float | None]:
    """``(mean, interval, p)`` of paired differences: the ``level`` t-interval and the two-sided t-test p-value.

    With one difference: ``(d, None, None)``. Zero spread: the interval is ``(mean, mean)`` and p is 1 when the
    mean is 0 (identical runs), else 0 (the same non-zero gain on every seed).
    """
    n = len(differences)
    mean, sd = mean_std(differences)
    if sd is None:
        return mean, None, None
    se = sd / math.sqrt(n)
    if se == 0.0:
        return mean, (mean, mean), 1.0 if mean == 0.0 else 0.0
    half = student_t_quantile(0.5 + level / 2, n - 1) * se
    return mean, (mean - half, mean + half), t_test_p_value(mean / se, n - 1)


def verdict(mean: float | None, p_holm: float | None, num_seeds: int, alpha: float = ALPHA) -> str:
    """Plain words for a paired comparison where a larger metric is better (see the module docstring)."""
    if num_seeds == 0:
        return "no common seed"
    if p_holm is None:
        return "one seed: no interval"
    if p_holm < alpha and mean != 0:
        return "better" if mean > 0 else "worse"
    return "not distinguishable from noise"


def paired_comparisons(results: Sequence[RunResult], variants: Sequence[str], baseline: str,
                       metrics: Sequence[str], level: float = 1 - ALPHA) -> list[PairedComparison]:
    """Every variant but ``baseline`` against it on every metric, variant-major in the order of ``variants``.

    Only seeds finished under both (and holding the metric) are paired. Holm runs over the variants, separately
    for each metric; comparisons without a p-value (fewer than 2 common seeds) are outside the family.
    """
    values: dict[tuple[str, str], dict[int, float]] = {}
    for r in results:
        for m in metrics:
            if m in r.stats and r.stats[m] is not None:
                values.setdefault((r.variant, m), {})[r.seed] = float(r.stats[m])
    raw = []
    for v in variants:
        if v == baseline:
            continue
        for m in metrics:
            mine, ref = values.get((v, m), {}), values.get((baseline, m), {})
            seeds = tuple(sorted(set(mine) & set(ref)))
            diffs = tuple(mine[s] - ref[s] for s in seeds)
            mean, interval, p = paired_t(diffs, level) if diffs else (None, None, None)
            raw.append((v, m, seeds, diffs, mean, interval, p))
    adjusted: dict[int, float | None] = {}
    for m in metrics:
        idx = [i for i, row in enumerate(raw) if row[1] == m]
        adjusted.update(zip(idx, holm([raw[i][6] for i in idx])))
    return [PairedComparison(v, baseline, m, seeds, diffs, mean, interval, p, adjusted[i],
                             verdict(mean, adjusted[i], len(seeds)))
            for i, (v, m, seeds, diffs, mean, interval, p) in enumerate(raw)]
