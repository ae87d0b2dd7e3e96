"Tests of flatnb.distance against independent computations written from `002` (eqs. 2.2-2.9 and the whole-vector gradient)"
import math
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from flatnb.core import digits, set_seed, cross_entropy
from flatnb.learner import Learner, Callback, Checkpoint, CancelFitException, OneCycle, simple_cnn
from flatnb.distance import rbf_penalty, add_rbf_grad_, RBFDistance


def _flat(ts): return torch.cat([t.detach().reshape(-1) for t in ts])


def _net():
    set_seed(3)
    return nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))


def _ckpts(net, scales=(0.02, 0.05, 0.1)):
    g = torch.Generator().manual_seed(7)
    return [[p.detach() + s * torch.randn(p.shape, generator=g) for p in net.parameters()] for s in scales]


def _brute_grad(params, checkpoints, sigmas, strength):
    "Float64, coordinate by coordinate: -s Σ_c exp(-‖θ-θ_c‖²/2σ_c²)(θ_i-θ_ci)/σ_c²"
    th = _flat(params).double().numpy()
    g = np.zeros_like(th)
    for ck, sg in zip(checkpoints, sigmas):
        c = _flat(ck).double().numpy()
        k = math.exp(-float(((th - c) ** 2).sum()) / (2 * sg * sg))
        for i in range(len(th)): g[i] += -strength * k * (th[i] - c[i]) / sg ** 2
    return g


@pytest.mark.parametrize("strength", [0.0, 0.4, 3.0])
def test_grad_matches_autograd_and_float64(strength):
    net = _net(); cks = _ckpts(net)
    d = [(_flat(net.parameters()) - _flat(ck)).norm().item() for ck in cks]
    sigmas = [d[0] * 0.9, d[1] * 1.2, d[2]]
    for p in net.parameters(): p.grad = None
    add_rbf_grad_(net.parameters(), cks, sigmas, strength)
    ours = _flat([p.grad for p in net.parameters()])
    net.zero_grad(set_to_none=True)
    rbf_penalty(net.parameters(), cks, sigmas, strength).backward()
    auto = _flat([p.grad for p in net.parameters()])
    torch.testing.assert_close(ours, auto, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(ours.double().numpy(), _brute_grad(list(net.parameters()), cks, sigmas, strength), atol=1e-5, rtol=1e-5)


def test_grad_adds_to_existing_grad_and_returns_penalty():
    net = _net(); cks = _ckpts(net)[:2]
    x, y = torch.randn(4, 2, 6, 6), torch.tensor([0, 1, 2, 3])
    cross_entropy(net(x), y).backward()
    g0 = _flat([p.grad for p in net.parameters()]).clone()
    val = add_rbf_grad_(net.parameters(), cks, 0.3, 2.0)
    g1 = _flat([p.grad for p in net.parameters()])
    np.testing.assert_allclose((g1 - g0).double().numpy(), _brute_grad(list(net.parameters()), cks, [0.3, 0.3], 2.0), atol=1e-5)
    th = _flat(net.parameters()).double()
    ref = 2.0 * sum(math.exp(-float(((th - _flat(ck).double()) ** 2).sum()) / (2 * 0.09)) for ck in cks)
    assert abs(val.item() - ref) < 1e-5
    assert val.ndim == 0 and not val.requires_grad


def test_penalty_closed_form():
    th = [torch.tensor([[1., -1.]]), torch.tensor([0.5])]
    ck = [[torch.tensor([[0., 0.]]), torch.tensor([0.])]]
    # d = 1 + 1 + 0.25
    assert abs(rbf_penalty(th, ck, 1.5, 0.7).item() - 0.7 * math.exp(-2.25 / (2 * 2.25))) < 1e-7


def test_gradient_direction_pushes_away():
    "Eq. 2.18's three cases: a descent step on the penalty increases the distance; zero gradient at the checkpoint"
    p = torch.tensor([0.3, -0.2, 0.0], requires_grad=True)
    c = [[torch.tensor([0.0, 0.0, 0.0])]]
    add_rbf_grad_([p], c, 0.5)
    assert p.grad[0] < 0 and p.grad[1] > 0 and p.grad[2] == 0
    q = torch.zeros(3, requires_grad=True)
    add_rbf_grad_([q], c, 0.5)
    assert torch.equal(q.grad, torch.zeros(3))


@pytest.mark.parametrize("sigma", [0.0, -1.0, float('nan'), float('inf'), None, 'x', True, [1.0, 2.0]])
def test_bad_sigma(sigma):
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match='sigma'): add_rbf_grad_([p], [[torch.ones(2)]], sigma)
    with pytest.raises(ValueError, match='sigma'): rbf_penalty([p], [[torch.ones(2)]], sigma)


@pytest.mark.parametrize("strength", [-1.0, float('nan'), float('inf'), 'a', None])
def test_bad_strength(strength):
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match='strength'): add_rbf_grad_([p], [[torch.ones(2)]], 1.0, strength)


def test_bad_checkpoints():
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match='non-empty'): add_rbf_grad_([p], [], 1.0)
    with pytest.raises(ValueError, match='non-empty'): rbf_penalty([p], None, 1.0)
    with pytest.raises(ValueError, match='list of 1 tensors'): add_rbf_grad_([p], [[torch.ones(2), torch.ones(2)]], 1.0)
    with pytest.raises(ValueError, match='does not match'): add_rbf_grad_([p], [[torch.ones(3)]], 1.0)
    with pytest.raises(ValueError, match='per checkpoint'): add_rbf_grad_([p], [[torch.ones(2)]], [1.0, 2.0])
    with pytest.raises(ValueError, match='params is empty'): add_rbf_grad_([], [[]], 1.0)


def test_underflow_with_fixed_sigma_is_finite():
    "Whole-network distances with a small fixed σ: the kernel underflows to 0, nothing becomes NaN"
    p = torch.full((10000,), 0.01, requires_grad=True)
    val = add_rbf_grad_([p], [[torch.zeros(10000)]], 0.01)
    assert val.item() == 0.0 and torch.isfinite(p.grad).all() and (p.grad == 0).all()


class _Stop(Callback):
    order = 200
    def __init__(self, at): self.at = at
    def after_epoch(self, learn):
        if learn.epoch == self.at: raise CancelFitException()


def _fit(cbs, n=4, seed=0):
    set_seed(seed)
    return Learner(simple_cnn(widths=(4, 8)), digits(8, n_train=100), opt=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
                   cbs=[OneCycle(), *cbs], bs=25, progress=False).fit(n)


def test_callback_resume_exact(tmp_path):
    mk = lambda: RBFDistance(strength=1.0, start=1, every=1, keep=2)
    ref = _fit([mk(), Checkpoint(tmp_path / 'a.pt')])
    _fit([mk(), Checkpoint(tmp_path / 'b.pt'), _Stop(1)])
    res = _fit([mk(), Checkpoint(tmp_path / 'b.pt')], seed=99)
    for a, b in zip(ref.model.state_dict().values(), res.model.state_dict().values()): assert torch.equal(a, b)
    ra, rb = ref.cb(RBFDistance), res.cb(RBFDistance)
    assert ra.sigmas == rb.sigmas and len(ra.checkpoints) == 2
    for ca, cb in zip(ra.checkpoints, rb.checkpoints):
        for a, b in zip(ca, cb): assert torch.equal(a, b)


def test_callback_fixed_sigma_and_zero_strength():
    l0 = _fit([])
    lz = _fit([RBFDistance(strength=0.0, start=1, every=1)])   # s = 0: identical to no penalty
    for a, b in zip(l0.model.parameters(), lz.model.parameters()): assert torch.equal(a, b)
    lf = _fit([RBFDistance(sigma=0.7, start=0.5)])
    rbf = lf.cb(RBFDistance)
    assert rbf.sigmas == [0.7] and [l['epoch'] for l in rbf.log] == [1]
    assert lf.history[-1]['rbf_penalty'] > 0 and math.isnan(lf.history[0]['rbf_dist'])


@pytest.mark.parametrize("kw", [dict(sigma=0.0), dict(sigma=-2.0), dict(strength=-1.0), dict(start=0), dict(start=1.0),
                                dict(every=0), dict(at=[]), dict(at=[0]), dict(keep=0), dict(sigma_scale=-1.0)])
def test_callback_bad_args(kw):
    with pytest.raises(ValueError): RBFDistance(**kw)


def test_callback_schedule_checked_at_fit():
    with pytest.raises(ValueError, match='no epoch'): _fit([RBFDistance(start=4)], n=4)


def test_penalty_added_right_before_the_step():
    "The gradient is added in `before_step`: `after_backward` still sees the loss's gradient alone, `before_step` both"
    class Spy(Callback):
        order = 5   # after RBFDistance (0)
        def __init__(self): self.rows = []
        def after_backward(self, learn): self.g = [p.grad.clone() for p in learn.model.parameters()]
        def before_step(self, learn):
            rbf = learn.cb(RBFDistance)
            if not rbf.checkpoints: return
            th = [p.detach().clone().requires_grad_() for p in learn.model.parameters()]
            pen = torch.autograd.grad(rbf_penalty(th, rbf.checkpoints, rbf.sigmas, rbf.strength), th)
            ps = learn.model.parameters()
            self.rows.append(max(float((p.grad - g - q).abs().max()) for p, g, q in zip(ps, self.g, pen)))
    spy = Spy()
    _fit([RBFDistance(strength=1.0, sigma=0.5, start=2), spy])
    assert len(spy.rows) == 8 and max(spy.rows) < 1e-6
