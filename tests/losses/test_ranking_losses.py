"""Tests for detector/losses/ranking.py: DR loss and AP-loss.

Average precision is computed here independently of the losses, by sorting: rank the elements by
descending score; the precision at the k-th ranked element is (positives among the first k) / k; AP is
the mean of the precisions at the positives. Interpolated AP replaces each positive's precision by the
largest precision at that positive or any positive ranked below it (higher recall).
"""
import math

import pytest
import torch

from detector.losses.ranking import ap_loss, ap_loss_and_update, dr_loss


def average_precision(scores: torch.Tensor, labels: torch.Tensor, interpolated: bool = False) -> float:
    order = scores.reshape(-1).argsort(descending=True)
    hits = labels.reshape(-1)[order].double()
    precision = hits.cumsum(0) / torch.arange(1, hits.numel() + 1, dtype=torch.float64)
    at_pos = precision[hits > 0]
    if interpolated:
        at_pos = at_pos.flip(0).cummax(0).values.flip(0)
    return float(at_pos.mean())


def _toy(seed=0, n=300, num_pos=25):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n)
    labels[torch.randperm(n, generator=g)[:num_pos]] = 1
    scores = torch.randn(n, generator=g) + 0.8 * labels  # positives slightly higher on average
    return scores, labels


# ============================================================================================ AP-loss
def _ap_loss_reference(scores, labels, delta):
    """Algorithm 1 of Chen et al. 2019 written out literally: loop over positives from the lowest score,
    dense step function against every element, running max for the interpolated precision."""
    s = scores.double().reshape(-1)
    pos = labels.reshape(-1) > 0
    update = torch.zeros_like(s)

    def step(x):
        return torch.clamp(x / (2 * delta) + 0.5, 0, 1)

    num_pos = int(pos.sum())
    pos_idx = torch.nonzero(pos)[:, 0]
    neg_idx = torch.nonzero(~pos)[:, 0]
    max_prec, interp = 0.0, {}
    for i in pos_idx[s[pos_idx].argsort()].tolist():
        h_pos = step(s[pos_idx] - s[i])
        h_neg = step(s[neg_idx] - s[i])
        rank_pos = 1 + h_pos.sum() - 0.5  # drop k = i, whose H(0) is 0.5
        rank = rank_pos + h_neg.sum()
        prec = float(rank_pos / rank)
        err = h_neg / rank  # L_ij over negatives j
        if prec >= max_prec:
            max_prec = prec
        else:
            err = err * (1 - max_prec) / (1 - prec)
        update[neg_idx] += err
        update[i] = -(1 - max_prec)
        interp[i] = max_prec
    loss = 1 - sum(interp.values()) / num_pos
    return loss, update / num_pos


def test_ap_loss_hand_example():
    """Scores [3, 2, 1], labels [P, N, P], delta 1 (every score gap is >= delta, so H is the exact step).

    Ranks: P (precision 1/1), N, P (precision 2/3); interpolated precisions 1 and 2/3, AP = 5/6, loss 1/6.
    Updates (divided by |P| = 2): the top positive is ranked perfectly, 0; the bottom positive
    -(1 - 2/3) / 2 = -1/6; the negative is above the bottom positive only: L = H / rank = 1/3, so +1/6.
    """
    scores = torch.tensor([3.0, 2.0, 1.0], requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 1.0])
    loss = ap_loss(scores, labels)
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(1 / 6))
    torch.testing.assert_close(scores.grad, torch.tensor([0.0, 1 / 6, -1 / 6]))
    ap = average_precision(scores.detach(), labels, interpolated=True)
    assert math.isclose(1 - float(loss.detach()), ap, rel_tol=1e-6)


def test_ap_loss_hand_example_with_interpolation():
    """Scores [4, 3, 2, 1], labels [N, N, P, P], delta 1.

    Precision at the positives: 1/3 (rank 3) and 2/4 = 1/2 (rank 4). Interpolation lifts the first to
    1/2 (a positive further down has a higher precision): interpolated AP 1/2, loss 1/2 (plain AP 5/12).
    Updates / |P| = 2: each positive -(1 - 1/2) / 2 = -1/4. Each negative: from the positive at 1,
    H / rank = 1/4; from the positive at 2, H / rank = 1/3 scaled by (1 - 1/2) / (1 - 1/3) = 3/4 -> 1/4;
    sum 1/2, / 2 -> +1/4.
    """
    scores = torch.tensor([4.0, 3.0, 2.0, 1.0], requires_grad=True)
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    loss = ap_loss(scores, labels)
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(0.5))
    torch.testing.assert_close(scores.grad, torch.tensor([0.25, 0.25, -0.25, -0.25]))
    assert math.isclose(average_precision(scores.detach(), labels), 5 / 12, rel_tol=1e-9)


@pytest.mark.parametrize("delta", [0.25, 1.0, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_loss_matches_literal_algorithm(delta, seed):
    """The sorted, prefix-sum computation equals the paper's loop on close scores (interpolation active)."""
    scores, labels = _toy(seed, n=120, num_pos=15)
    scores[:4] = scores[4]  # ties between elements
    ref_loss, ref_update = _ap_loss_reference(scores, labels, delta)
    loss, update = ap_loss_and_update(scores, labels > 0, delta)
    assert math.isclose(float(loss), ref_loss, rel_tol=1e-9, abs_tol=1e-12)
    torch.testing.assert_close(update, ref_update, rtol=1e-9, atol=1e-12)


def test_ap_loss_equals_one_minus_interpolated_ap_when_gaps_exceed_delta():
    g = torch.Generator().manual_seed(3)
    labels = (torch.rand(60, generator=g) < 0.3).float()
    scores = torch.randperm(60, generator=g).float() * 1.5  # all gaps >= 1.5 > delta = 1
    loss = ap_loss(scores, labels)
    assert math.isclose(1 - float(loss), average_precision(scores, labels, interpolated=True), rel_tol=1e-6)


def test_ap_loss_is_zero_when_positives_outrank_negatives_by_delta():
    scores = torch.tensor([5.0, 4.5, 4.2, 3.1, 1.0, 0.0, -2.0], requires_grad=True)
    labels = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # lowest positive 4.2 >= 3.1 + delta
    loss = ap_loss(scores, labels, delta=1.0)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.all(scores.grad == 0)
    assert average_precision(scores.detach(), labels) == 1.0


def test_ap_loss_without_positives_is_zero():
    scores = torch.randn(10, requires_grad=True)
    loss = ap_loss(scores, torch.zeros(10))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.all(scores.grad == 0)


def test_ap_loss_step_improves_average_precision():
    scores, labels = _toy(seed=4)
    scores = scores.clone().requires_grad_()
    before = average_precision(scores.detach(), labels)
    loss = ap_loss(scores, labels)
    loss.backward()
    with torch.no_grad():
        scores -= 2.0 * scores.grad  # one SGD step on the error-driven update
    after = average_precision(scores.detach(), labels)
    assert after > before + 0.01
    assert float(ap_loss(scores.detach(), labels)) < float(loss.detach())


def test_ap_loss_any_shape_and_grad_output_scaling():
    """[B, P, C] input (the criterion's class logits); backward multiplies the update by the incoming gradient."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 30, 4, generator=g)
    target = (torch.rand(2, 30, 4, generator=g) < 0.1).float()
    x1 = logits.clone().requires_grad_()
    ap_loss(x1, target).backward()
    x2 = logits.clone().requires_grad_()
    (3 * ap_loss(x2, target)).backward()
    assert x1.grad.shape == logits.shape
    torch.testing.assert_close(x2.grad, 3 * x1.grad)
    _, flat_update = ap_loss_and_update(logits.reshape(-1), target.reshape(-1) > 0)
    torch.testing.assert_close(x1.grad.reshape(-1), flat_update.float())


def test_ap_loss_soft_targets_count_as_positive():
    scores, labels = _toy(seed=6, n=50, num_pos=8)
    soft = labels * 0.37
    torch.testing.assert_close(ap_loss(scores, soft), ap_loss(scores, labels))


def test_ap_loss_bad_arguments():
    with pytest.raises(ValueError, match="delta"):
        ap_loss(torch.zeros(3), torch.ones(3), delta=0.0)
    with pytest.raises(ValueError, match="same shape"):
        ap_loss(torch.zeros(3), torch.ones(4))
    with pytest.raises(ValueError, match="reduction"):
        ap_loss(torch.zeros(3), torch.ones(3), reduction="avg")


# ============================================================================================ DR loss
DR_DEFAULTS = dict(margin=0.5, pos_lambda=1.0, neg_lambda=0.1 / math.log(3.5), L=6.0, tau=4.0)


def _dr_reference(logits, target, margin, pos_lambda, neg_lambda, L, tau):
    """The DR loss from its definition, with the closed-form distributions written as explicit weights."""
    p = torch.sigmoid(logits.double().reshape(-1))
    pos = target.reshape(-1) > 0
    pp, pn = p[pos], p[~pos]
    wn = torch.exp(pn / neg_lambda)
    p_neg = (wn * pn).sum() / wn.sum()
    if pp.numel():
        wp = torch.exp(-pp / pos_lambda)
        p_pos = (wp * pp).sum() / wp.sum()
    else:
        p_pos = torch.zeros((), dtype=torch.float64)
    return tau / L * torch.log(1 + torch.exp(L * (p_neg - p_pos + margin)))


def test_dr_hand_value_at_logits_zero():
    """All logits 0: every probability is 1/2, so both expected scores are 1/2 whatever the weights, and
    loss = tau / L * ln(1 + exp(L * margin)) = 4/6 * ln(1 + e^3)."""
    loss = dr_loss(torch.zeros(20), (torch.arange(20) < 5).float())
    assert math.isclose(float(loss), 4 / 6 * math.log(1 + math.exp(3)), rel_tol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_dr_matches_definition(seed):
    scores, labels = _toy(seed, n=200, num_pos=20)
    torch.testing.assert_close(dr_loss(scores, labels).double(), _dr_reference(scores, labels, **DR_DEFAULTS))
    params = dict(margin=0.3, pos_lambda=0.5, neg_lambda=0.2, L=4.0, tau=1.0)
    ours = dr_loss(scores, labels, margin=0.3, pos_lambda=0.5, neg_lambda=0.2, steepness=4.0, tau=1.0)
    torch.testing.assert_close(ours.double(), _dr_reference(scores, labels, **params))


def test_dr_distributions_solve_the_kl_regularised_problems():
    """q- = softmax(p / lambda) maximises sum q p - lambda KL(q || uniform) over the simplex."""
    g = torch.Generator().manual_seed(0)
    p = torch.rand(30, generator=g, dtype=torch.float64)
    lam = 0.1 / math.log(3.5)

    def objective(q):
        return (q * p).sum() - lam * (q * torch.log(q * q.numel())).sum()

    best = objective(torch.softmax(p / lam, 0))
    for _ in range(200):
        q = torch.distributions.Dirichlet(torch.full((30,), 0.5, dtype=torch.float64)).sample()
        q = q.clamp(min=1e-300) / q.sum()
        assert objective(q) <= best + 1e-12


def test_dr_reaches_its_minimum_when_positives_outrank_negatives():
    """Positives at probability 1 and negatives at 0: loss = tau / L * ln(1 + exp(L (margin - 1))), the
    smallest value of the loss (probabilities are in [0, 1]), with a vanishing gradient."""
    labels = (torch.arange(40) < 6).float()
    logits = torch.where(labels > 0, 30.0, -30.0).requires_grad_()
    loss = dr_loss(logits, labels)
    loss.backward()
    minimum = 4 / 6 * math.log(1 + math.exp(6 * (0.5 - 1)))
    assert math.isclose(float(loss.detach()), minimum, rel_tol=1e-5)
    assert float(logits.grad.abs().max()) < 1e-9
    scores, _ = _toy(seed=2, n=40, num_pos=6)
    assert float(dr_loss(scores, labels)) > minimum


def test_dr_without_positives_pushes_the_hardest_negatives_down():
    """With no positive, P_pos = 0 and the loss is a function of the negatives' soft maximum; its gradient
    q_j (1 + (p_j - P_neg) / lambda-) p_j (1 - p_j) is positive for every negative scored above
    P_neg - lambda-, in particular the highest one, and a step lowers the loss."""
    logits = torch.randn(25, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    target = torch.zeros(25, dtype=torch.float64)
    loss = dr_loss(logits, target)
    torch.testing.assert_close(loss, _dr_reference(logits.detach(), target, **DR_DEFAULTS))
    loss.backward()
    p = logits.detach().sigmoid()
    q = torch.softmax(p / DR_DEFAULTS["neg_lambda"], 0)
    p_neg = (q * p).sum()
    hard = p > p_neg - DR_DEFAULTS["neg_lambda"]
    assert bool(hard.any()) and torch.all(logits.grad[hard] > 0)
    assert float(logits.grad[logits.argmax()]) > 0
    assert float(dr_loss(logits.detach() - 5.0 * logits.grad, target)) < float(loss.detach())


def test_dr_gradcheck():
    scores, labels = _toy(seed=8, n=30, num_pos=5)
    x = scores.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda z: dr_loss(z, labels.double()), (x,))


def test_dr_step_improves_average_precision():
    scores, labels = _toy(seed=9)
    scores = scores.clone().requires_grad_()
    before = average_precision(scores.detach(), labels)
    loss = dr_loss(scores, labels)
    loss.backward()
    with torch.no_grad():
        scores -= 20.0 * scores.grad
    assert average_precision(scores.detach(), labels) > before + 0.01
    assert float(dr_loss(scores.detach(), labels)) < float(loss.detach())
