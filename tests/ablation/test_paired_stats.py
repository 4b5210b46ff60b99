"""Statistics of the ablation report (``detector/ablation/stats.py``): Student's t computed without scipy
(against closed forms and printed tables), Holm's adjustment on a hand example, paired t-intervals and the
verdicts on hand-made runs whose numbers are worked out in the docstrings."""
from __future__ import annotations

import math
import random

import pytest

from detector.ablation.results import RunResult
from detector.ablation.stats import (
    holm,
    paired_comparisons,
    paired_t,
    regularized_beta,
    student_t_cdf,
    student_t_quantile,
    t_test_p_value,
    verdict,
)

# --------------------------------------------------------------------------------------------------
# Student's t
# --------------------------------------------------------------------------------------------------


def test_regularized_beta_closed_forms():
    """I_x(1, 1) = x (uniform); I_x(a, 1) = x^a; I_x(1, b) = 1 - (1 - x)^b; I_x(a, b) = 1 - I_{1-x}(b, a)."""
    for x in (0.0, 0.1, 0.37, 0.5, 0.9, 1.0):
        assert regularized_beta(x, 1, 1) == pytest.approx(x, abs=1e-14)
        assert regularized_beta(x, 3.5, 1) == pytest.approx(x ** 3.5, abs=1e-13)
        assert regularized_beta(x, 1, 2.5) == pytest.approx(1 - (1 - x) ** 2.5, abs=1e-13)
        assert regularized_beta(x, 2.2, 0.7) == pytest.approx(1 - regularized_beta(1 - x, 0.7, 2.2), abs=1e-13)
    with pytest.raises(ValueError):
        regularized_beta(1.5, 1, 1)


def test_student_t_cdf_closed_forms():
    """df = 1 is the Cauchy law, F(t) = 1/2 + atan(t) / pi; df = 2: F(t) = 1/2 + t / (2 sqrt(t^2 + 2));
    for large df, t approaches the standard normal, F(t) = (1 + erf(t / sqrt 2)) / 2."""
    for t in (-30.0, -2.5, -0.3, 0.0, 0.7, 4.303, 100.0):
        assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
        assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(t * t + 2)), abs=1e-13)
        assert student_t_cdf(t, 1e7) == pytest.approx((1 + math.erf(t / math.sqrt(2))) / 2, abs=1e-6)
    assert student_t_cdf(math.inf, 3) == 1.0 and student_t_cdf(-math.inf, 3) == 0.0


@pytest.mark.parametrize("p, df, table", [
    # two-sided 95% (p = 0.975) and 90% (p = 0.95) critical values as printed in t tables (3 decimals)
    (0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 3, 3.182), (0.975, 4, 2.776), (0.975, 5, 2.571),
    (0.975, 9, 2.262), (0.975, 10, 2.228), (0.975, 30, 2.042),
    (0.95, 1, 6.314), (0.95, 2, 2.920), (0.95, 4, 2.132), (0.95, 10, 1.812), (0.995, 4, 4.604),
])
def test_student_t_quantile_matches_printed_tables(p, df, table):
    q = student_t_quantile(p, df)
    assert q == pytest.approx(table, abs=5e-4)
    assert student_t_quantile(1 - p, df) == pytest.approx(-q, abs=1e-12)
    assert student_t_cdf(q, df) == pytest.approx(p, abs=1e-12)


def test_student_t_against_scipy_when_installed():
    """An independent implementation (scipy is not a dependency; skipped where it is absent)."""
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for _ in range(200):
        df = rng.choice([1, 2, 3, 5, 8, 20, 60]) * rng.uniform(0.5, 1.5)
        t, p = rng.uniform(-8, 8), rng.uniform(0.01, 0.99)
        assert student_t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-12)
        assert t_test_p_value(t, df) == pytest.approx(2 * stats.t.sf(abs(t), df), abs=1e-12)
        assert student_t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9, abs=1e-9)


# --------------------------------------------------------------------------------------------------
# Holm and the paired t
# --------------------------------------------------------------------------------------------------

def test_holm_hand_example():
    """p = (0.01, 0.04, 0.03, 0.005), m = 4. Ascending: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06;
    0.04 x 1 = 0.04, raised to the running maximum 0.06. In input order: (0.03, 0.06, 0.06, 0.02): at 5% the
    first and last hypotheses are rejected, although raw p of 0.04 and 0.03 are below 0.05 too."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    # None stays out of the family: m = 2, so 0.03 x 2 = 0.06, then max(0.06, 0.2) = 0.2; adjusted p caps at 1
    assert holm([None, 0.2, 0.03]) == [None, pytest.approx(0.2), pytest.approx(0.06)]
    assert holm([0.6, 0.7]) == [1.0, pytest.approx(1.0)]
    assert holm([]) == [] and holm([0.04]) == [0.04]


def test_paired_t_hand_example():
    """d = (0.02, 0.03, 0.02): mean 0.07 / 3 = 0.023333; deviations (-1/300, 2/300, -1/300), squares sum
    6 / 90000, over n - 1 = 2: sd = sqrt(1/30000) = 0.0057735, se = sd / sqrt 3 = 1/300; t = 7 with 2 df.
    95% interval: 0.023333 ± 4.303 / 300 = [0.008990, 0.037676]. Two-sided p with 2 df (closed form
    1 - t / sqrt(t^2 + 2)): 1 - 7 / sqrt(51) = 0.019804."""
    mean, (low, high), p = paired_t([0.02, 0.03, 0.02])
    assert mean == pytest.approx(0.07 / 3, abs=1e-15)
    assert (low, high) == (pytest.approx(0.023333 - 4.303 / 300, abs=2e-6), pytest.approx(0.023333 + 4.303 / 300,
                                                                                            abs=2e-6))
    assert p == pytest.approx(1 - 7 / math.sqrt(51), abs=1e-12)
    # one difference: no spread, no interval; no spread at all: zero-width interval, p 1 (equal) or 0 (constant gain)
    assert paired_t([0.04]) == (0.04, None, None)
    assert paired_t([0.0, 0.0, 0.0]) == (0.0, (0.0, 0.0), 1.0)
    assert paired_t([0.5, 0.5]) == (0.5, (0.5, 0.5), 0.0)
    # 90% interval of d = (1, 3): mean 2, sd sqrt 2, se 1, t_{0.95, 1} = 6.314
    low, high = paired_t([1.0, 3.0], level=0.90)[1]
    assert (low, high) == (pytest.approx(2 - 6.314, abs=1e-3), pytest.approx(2 + 6.314, abs=1e-3))


def test_verdict_words():
    assert verdict(0.02, 0.01, 3) == "better" and verdict(-0.02, 0.01, 3) == "worse"
    assert verdict(0.02, 0.2, 3) == "not distinguishable from noise"
    assert verdict(0.0, 0.0, 3) == "not distinguishable from noise"
    assert verdict(0.04, None, 1) == "one seed: no interval" and verdict(None, None, 0) == "no common seed"


# --------------------------------------------------------------------------------------------------
# comparisons of hand-made runs
# --------------------------------------------------------------------------------------------------

# variant -> {seed: mAP}; mAP50 is 2 x mAP + 0.1 in every run (so its differences are 2 x those of mAP)
MAPS = {
    "a": {0: 0.30, 1: 0.32, 2: 0.31},
    "b": {0: 0.32, 1: 0.35, 2: 0.33},          # d = (+0.02, +0.03, +0.02): t = 7, p = 0.019804
    "c": {0: 0.29, 1: 0.33, 2: 0.31},          # d = (-0.01, +0.01, 0): mean 0, t = 0, p = 1
    "f": {0: 0.28, 1: 0.29, 2: 0.29},          # d = (-0.02, -0.03, -0.02): t = -7, p = 0.019804
    "one": {1: 0.36, 3: 0.50},                 # seed 3 has no baseline run: one common seed, d = +0.04
    "none": {7: 0.40},                         # no common seed
}


def _results(maps: dict[str, dict[int, float]]) -> list[RunResult]:
    return [RunResult(v, s, {"mAP": m, "mAP50": 2 * m + 0.1}, {}, 1.0, []) for v, seeds in maps.items()
            for s, m in seeds.items()]


def test_paired_comparisons_two_variants_in_the_family():
    """Family {b, c} (per metric; "one" and "none" have no p-value): ascending p: b 0.019804 x 2 = 0.039608;
    c 1 x 1 = 1. b is better at 5% after Holm, c is not distinguishable from noise. mAP50 differences are
    2 x those of mAP, so t, p and verdicts are the same and the interval is twice as wide."""
    out = paired_comparisons(_results(MAPS), ["a", "b", "c", "one", "none"], "a", ["mAP", "mAP50"])
    assert [(c.variant, c.metric) for c in out] == [("b", "mAP"), ("b", "mAP50"), ("c", "mAP"), ("c", "mAP50"),
                                                    ("one", "mAP"), ("one", "mAP50"), ("none", "mAP"),
                                                    ("none", "mAP50")]
    b, b50, c = out[0], out[1], out[2]
    assert b.baseline == "a" and b.seeds == (0, 1, 2)
    assert b.differences == pytest.approx((0.02, 0.03, 0.02), abs=1e-12)
    assert b.p_value == pytest.approx(1 - 7 / math.sqrt(51), abs=1e-9)
    assert b.p_holm == pytest.approx(2 * (1 - 7 / math.sqrt(51)), abs=1e-9)
    assert b.interval == (pytest.approx(0.07 / 3 - 4.303 / 300, abs=2e-6), pytest.approx(0.07 / 3 + 4.303 / 300,
                                                                                          abs=2e-6))
    assert b.verdict == "better" and b50.verdict == "better"
    assert b50.p_holm == pytest.approx(b.p_holm, abs=1e-9)
    assert b50.interval[1] - b50.interval[0] == pytest.approx(2 * (b.interval[1] - b.interval[0]), abs=1e-9)
    assert c.mean == pytest.approx(0.0, abs=1e-12) and c.p_value == pytest.approx(1.0, abs=1e-9)
    assert c.p_holm == pytest.approx(1.0) and c.verdict == "not distinguishable from noise"
    one, none = out[4], out[6]
    assert one.seeds == (1,) and one.mean == pytest.approx(0.04) and one.interval is None
    assert one.p_value is None and one.p_holm is None and one.verdict == "one seed: no interval"
    assert none.seeds == () and none.mean is None and none.verdict == "no common seed"


def test_holm_turns_a_raw_win_into_noise_with_three_variants():
    """Family {b, c, f}: ascending p (ties kept in input order): b 0.019804 x 3 = 0.059412; f max(0.059412,
    0.019804 x 2) = 0.059412; c 1. Raw p of b and f are below 5%, but after Holm neither is: both read
    "not distinguishable from noise"."""
    out = {c.variant: c for c in paired_comparisons(_results(MAPS), ["a", "b", "c", "f"], "a", ["mAP"])}
    raw = 1 - 7 / math.sqrt(51)
    assert out["b"].p_value == pytest.approx(raw, abs=1e-9) and out["f"].p_value == pytest.approx(raw, abs=1e-9)
    assert out["b"].p_holm == pytest.approx(3 * raw, abs=1e-9) and out["f"].p_holm == pytest.approx(3 * raw, abs=1e-9)
    assert out["f"].mean == pytest.approx(-0.07 / 3, abs=1e-12)
    assert {v: c.verdict for v, c in out.items()} == {"b": "not distinguishable from noise", "c":
                                                      "not distinguishable from noise",
                                                      "f": "not distinguishable from noise"}
    # with baseline b instead, f - b = (-0.04, -0.06, -0.04): t = -7 again, the family is {a, c, f}
    by_b = {c.variant: c for c in paired_comparisons(_results(MAPS), ["a", "b", "c", "f"], "b", ["mAP"])}
    assert set(by_b) == {"a", "c", "f"} and by_b["f"].differences == pytest.approx((-0.04, -0.06, -0.04))


def test_no_results_and_baseline_only():
    assert paired_comparisons([], ["a", "b"], "a", ["mAP"])[0].verdict == "no common seed"
    assert paired_comparisons(_results({"a": MAPS["a"]}), ["a"], "a", ["mAP"]) == []
