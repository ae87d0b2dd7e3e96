"""A gradient regulariser composes with the steps that compute their own direction (issue 13.4): the RBF distance
penalty (`08_distance`), added in the Learner event `before_step`, joins the descent of SAM, ASAM and every G-Mix
mode, at w, and stays out of the ascent. Each descent is checked in float64 against a direction written by hand."""
import copy, math
from functools import partial
import pytest
import torch
from torch import nn
import torch.nn.functional as F
from flatnb.core import Data, digits
from flatnb.learner import Learner, Callback
from flatnb.sam import SAMCB
from flatnb.gmix import GMix
from flatnb.distance import RBFDistance, rbf_penalty

LR, RHO, RHO_ASAM, BETA = 0.1, 0.05, 0.5, 1.0
CASES = {'sam': lambda: SAMCB(rho=RHO), 'asam': lambda: SAMCB(rho=RHO_ASAM, adaptive=True),
         'g': lambda: GMix('g', rho=RHO), 'bg': lambda: GMix('bg', rho=RHO),
         'dg': lambda: GMix('dg', rho=RHO, dg_weight=BETA)}


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 10)).double()


def data64():
    d = digits(8, n_train=64)
    return Data(d.x_train.double(), d.y_train, d.x_test.double(), d.y_test, d.n_classes)


class Record(Callback):
    "The state before the first step of the last epoch (weights, BN buffers, batch) and the weights after it"
    order = 50
    def before_batch(self, learn):
        self.on = learn.training and learn.epoch == learn.n_epochs - 1 and learn.iter == 0
        if self.on: self.state, self.xb, self.yb = copy.deepcopy(learn.model.state_dict()), learn.xb.clone(), learn.yb
    def after_step(self, learn):
        if not self.on: return
        self.w1 = [p.detach().clone() for p in learn.model.parameters()]
        g = learn.cb(GMix)
        if g is not None: self.lam, self.perm = g.out.lam, g.out.perm


def fit(case, penalty=True):
    "3 epochs of 2 batches; with `penalty`, one checkpoint after the first epoch (σ = 0.3)"
    rec = Record()
    cbs = [CASES[case](), rec] + ([RBFDistance(strength=1.0, sigma=0.3, start=1)] if penalty else [])
    learn = Learner(net(), data64(), opt=partial(torch.optim.SGD, lr=LR), cbs=cbs, bs=32, seed=0, progress=False).fit(3)
    return learn, rec


def reference_direction(case, rec, rbf, penalty_in_ascent=False):
    "The descent direction of the recorded step, by hand: the method's direction at w+ε plus ∇ of the penalty at w"
    m = net(); m.load_state_dict(rec.state); ps = list(m.parameters())
    w = [p.detach().clone() for p in ps]
    x, y = rec.xb, rec.yb
    mixed = case in ('g', 'bg', 'dg')
    if mixed: lam, perm = rec.lam, rec.perm; x = lam * x + (1 - lam) * x[perm]
    def ell(inp, idx=slice(None)):   # per-example (mixed) cross-entropy
        out = m(inp)
        if not mixed: return F.cross_entropy(out, y[idx], reduction='none')
        ce = partial(F.cross_entropy, out, reduction='none')
        return lam * ce(y[idx]) + (1 - lam) * ce(y[perm][idx])
    th = [wi.clone().requires_grad_() for wi in w]
    pen = torch.autograd.grad(rbf_penalty(th, rbf.checkpoints, rbf.sigmas, rbf.strength), th)
    ell_w = ell(x)
    g = torch.autograd.grad(ell_w.mean(), ps)
    if penalty_in_ascent: g = [a + b for a, b in zip(g, pen)]
    t = [wi.abs() if case == 'asam' else torch.ones_like(wi) for wi in w]
    rho = RHO_ASAM if case == 'asam' else RHO
    norm = math.sqrt(sum(float(((ti * gi) ** 2).sum()) for ti, gi in zip(t, g)))
    with torch.no_grad():
        for p, wi, ti, gi in zip(ps, w, t, g): p.copy_(wi + rho * ti ** 2 * gi / norm)
    ell_eps = ell(x)
    if case in ('sam', 'asam', 'g'): d = torch.autograd.grad(ell_eps.mean(), ps)
    else:
        s = (ell_eps - ell_w).detach()
        S = torch.argsort(s, descending=True)[:math.ceil(0.5 * len(s))]
        L = torch.ones(len(s), dtype=torch.bool); L[S] = False
        if case == 'bg': d = torch.autograd.grad(ell(x[S], S).mean(), ps)
        else:
            gS = torch.autograd.grad(ell_eps[S].mean(), ps, retain_graph=True)
            gL = torch.autograd.grad(ell_eps[L].mean(), ps)
            c = sum(float((a * b).sum()) for a, b in zip(gL, gS)) / sum(float((a * a).sum()) for a in gS)
            d = [a + BETA * (b - c * a) for a, b in zip(gS, gL)]
    return [a + b for a, b in zip(d, pen)], w


@pytest.mark.parametrize('case', list(CASES))
def test_penalty_joins_the_descent(case):
    learn, rec = fit(case)
    rbf = learn.cb(RBFDistance)
    assert len(rbf.checkpoints) == 1 and learn.history[-1]['rbf_penalty'] > 0.1
    ref, w = reference_direction(case, rec, rbf)
    got = [(wi - w1) / LR for wi, w1 in zip(w, rec.w1)]              # plain SGD: w1 = w - lr·d
    for a, b in zip(got, ref): torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)   # float64: ~1e-14 here
    # the check has teeth: the penalty also in the ascent gives another direction
    wrong, _ = reference_direction(case, rec, rbf, penalty_in_ascent=True)
    assert max(float((a - b).abs().max()) for a, b in zip(got, wrong)) > 1e-4


@pytest.mark.parametrize('case', list(CASES))
def test_penalty_changes_the_run(case):
    with_pen, _ = fit(case)
    without, _ = fit(case, penalty=False)
    pairs = zip(with_pen.model.state_dict().values(), without.model.state_dict().values())
    assert max(float((a - b).abs().max()) for a, b in pairs) > 1e-3   # 0.05 to 0.09 here
