"Cross-cutting and failure tests of flatnb.flatness: exact Hessians, closed-form sharpness, restoration of the model"
import copy, json, math, os, subprocess, sys
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.func import functional_call
from flatnb.core import Data, cross_entropy, digits
from flatnb.learner import simple_cnn
from flatnb.flatness import (hessian_top_eig, hessian_vector_product, eps_sharpness, interpolate, random_direction,
                             loss_along, plot_landscape, loss_and_acc, measuring, hessian_trace, hessian_eigs, hessian_esd,
                             esd_density, plot_esd, loss_surface, plot_surface, pca_directions, plot_trajectory)

# ---------------------------------------------------------------- helpers (independent of the code under test)

def exact_hessian(model, loss_func, x, y):
    "Full Hessian of the eval-mode mean loss w.r.t. the flattened trainable parameters"
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    theta = torch.cat([p.detach().flatten() for _, p in named])
    buffers = dict(model.named_buffers())
    was = model.training; model.eval()
    def f(th):
        ps, i = {}, 0
        for n, p in named: ps[n] = th[i:i + p.numel()].view(p.shape); i += p.numel()
        return loss_func(functional_call(model, {**ps, **buffers}, (x,)), y)
    H = torch.autograd.functional.hessian(f, theta)
    model.train(was)
    return H

class Quad(nn.Module):
    def __init__(self, w): super().__init__(); self.w = nn.Parameter(w.clone())
    def forward(self, x): return self.w

def quad_loss(A, b): return lambda w, y: 0.5 * w @ A @ w + b @ w

DUMMY = (torch.zeros(3, 1), torch.zeros(3))

def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, {m: m.training for m in model.modules()}

def assert_untouched(model, snap):
    sd, modes = snap
    for k, v in model.state_dict().items(): assert torch.equal(v, sd[k]), f'{k} changed'
    for m, t in modes.items(): assert m.training == t
    assert all(p.grad is None for p in model.parameters()), 'a .grad was left behind'

@pytest.fixture
def tiny():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    x, y = torch.randn(37, 3, dtype=torch.float64), torch.randint(0, 4, (37,))
    return m, x, y

@pytest.fixture
def bn_cnn():
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.Tanh(), nn.Dropout(0.2),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3)).double()
    x, y = torch.randn(24, 1, 5, 5, dtype=torch.float64), torch.randint(0, 3, (24,))
    for _ in range(2): m(x * 1.5 + 0.3) # non-trivial running statistics
    return m, x, y

# ---------------------------------------------------------------- Hessian

@pytest.mark.parametrize('bs', [20, 60])
def test_top_eig_matches_exact_hessian_logistic(bs):
    "Logistic regression: the Hessian is X^T diag(p(1-p)) X / n, formed here from the formula"
    torch.manual_seed(3)
    x = torch.randn(60, 4, dtype=torch.float64); y = (torch.rand(60) < 0.5).long()
    lin = nn.Linear(4, 1, bias=False).double()
    loss = lambda z, t: nn.functional.binary_cross_entropy_with_logits(z[:, 0], t.double())
    p = torch.sigmoid(x @ lin.weight.detach()[0])
    H = (x.T * (p * (1 - p))) @ x / len(x)
    exact = torch.linalg.eigvalsh(H)[-1].item()
    est = hessian_top_eig(lin, loss, (x, y), n_iter=2000, tol=1e-14, bs=bs)
    assert est == pytest.approx(exact, rel=1e-9)

def test_top_eig_matches_exact_hessian_mlp(tiny):
    m, x, y = tiny
    ev = torch.linalg.eigvalsh(exact_hessian(m, cross_entropy, x, y))
    top = ev[ev.abs().argmax()].item()
    est = hessian_top_eig(m, cross_entropy, (x, y), n_iter=2000, tol=1e-13, bs=37)
    assert est == pytest.approx(top, rel=1e-8)

def test_top_eig_bn_eval_mode_and_restored(bn_cnn):
    m, x, y = bn_cnn
    snap = snapshot(m)
    ev = torch.linalg.eigvalsh(exact_hessian(m, cross_entropy, x, y))
    top = ev[ev.abs().argmax()].item()
    est = hessian_top_eig(m, cross_entropy, (x, y), n_iter=3000, tol=1e-13, bs=24)
    assert est == pytest.approx(top, rel=1e-7)
    assert_untouched(m, snap)

def test_hvp_matches_exact(bn_cnn):
    m, x, y = bn_cnn
    H = exact_hessian(m, cross_entropy, x, y)
    v = [torch.randn_like(p) for p in m.parameters()]
    hv = hessian_vector_product(m, cross_entropy, (x, y), v, bs=7)
    torch.testing.assert_close(torch.cat([t.flatten() for t in hv]), H @ torch.cat([t.flatten() for t in v]), rtol=1e-9, atol=1e-11)

def test_top_eig_subset_is_fixed_and_used(tiny):
    m, x, y = tiny
    a = hessian_top_eig(m, cross_entropy, (x, y), n_examples=20, seed=4, n_iter=500, tol=1e-12)
    idx = torch.randperm(37, generator=torch.Generator().manual_seed(4))[:20]
    ev = torch.linalg.eigvalsh(exact_hessian(m, cross_entropy, x[idx], y[idx]))
    assert a == pytest.approx(ev[ev.abs().argmax()].item(), rel=1e-8)
    assert hessian_top_eig(m, cross_entropy, (x, y), n_examples=20, seed=4, n_iter=500, tol=1e-12) == a

def test_top_eig_on_data_uses_training_set():
    d = digits(8, n_train=60)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    kw = dict(n_iter=5, tol=0., n_examples=None)
    on_data = hessian_top_eig(m, cross_entropy, d, **kw)
    assert on_data == hessian_top_eig(m, cross_entropy, (d.x_train, d.y_train), **kw)
    assert on_data != hessian_top_eig(m, cross_entropy, (d.x_test, d.y_test), **kw)

def test_top_eig_negative_dominant():
    Q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    A = Q @ torch.diag(torch.tensor([-4., 0.1, 1., 2., 3.], dtype=torch.float64)) @ Q.T
    est = hessian_top_eig(Quad(torch.randn(5, dtype=torch.float64)), quad_loss(A, torch.zeros(5, dtype=torch.float64)), DUMMY, n_iter=500, tol=1e-12)
    assert est == pytest.approx(-4., rel=1e-8)

def test_top_eig_leaves_existing_grads_alone(tiny):
    m, x, y = tiny
    cross_entropy(m(x), y).backward()
    grads = [p.grad.clone() for p in m.parameters()]
    hessian_top_eig(m, cross_entropy, (x, y), n_iter=3)
    eps_sharpness(m, cross_entropy, (x, y), n_steps=2)
    for p, g in zip(m.parameters(), grads): assert torch.equal(p.grad, g)

def test_top_eig_simple_cnn_runs_float32():
    torch.manual_seed(0)
    d = digits(16, n_train=64)
    m = simple_cnn(widths=(4, 8))
    snap = snapshot(m)
    lam = hessian_top_eig(m, cross_entropy, d, n_iter=5, n_examples=64, bs=32)
    assert isinstance(lam, float) and math.isfinite(lam)
    assert_untouched(m, snap)

# ---------------------------------------------------------------- Hessian spectrum: trace, top-k, density

def off_diagonal_se(M, n):
    "Standard error of the mean of n Rademacher quadratic forms v^T M v: sqrt(2 sum_{i!=j} M_ij^2 / n)"
    return math.sqrt(2 * ((M**2).sum() - (M.diag()**2).sum()).item() / n)

def test_trace_matches_exact_bn(bn_cnn):
    m, x, y = bn_cnn
    snap = snapshot(m)
    H = exact_hessian(m, cross_entropy, x, y)
    tr, se = hessian_trace(m, cross_entropy, (x, y), n_iter=400, bs=10)
    assert abs(tr - H.trace().item()) <= 3 * se
    assert se == pytest.approx(off_diagonal_se(H, 400), rel=0.25)
    assert_untouched(m, snap)
    assert hessian_trace(m, cross_entropy, (x, y), n_iter=10, bs=24) == pytest.approx(
        hessian_trace(m, cross_entropy, (x, y), n_iter=10, bs=5), rel=1e-10)

def test_trace_exact_for_diagonal_hessian():
    A = torch.diag(torch.tensor([2., -3., 0.25, 7.], dtype=torch.float64))
    assert hessian_trace(Quad(torch.randn(4, dtype=torch.float64)), quad_loss(A, torch.zeros(4, dtype=torch.float64)), DUMMY, n_iter=3) == (6.25, 0.)

def test_eigs_match_exact_bn(bn_cnn):
    m, x, y = bn_cnn
    snap = snapshot(m)
    H = exact_hessian(m, cross_entropy, x, y)
    ev = torch.linalg.eigvalsh(H); ex = ev[ev.abs().argsort(descending=True)[:3]].tolist()
    eigs, vecs = hessian_eigs(m, cross_entropy, (x, y), k=3, tol=1e-10, bs=7, return_vectors=True)
    assert eigs == pytest.approx(ex, rel=1e-8)
    for e, v in zip(eigs, vecs):
        vf = torch.cat([t.flatten() for t in v])
        torch.testing.assert_close(H @ vf, e * vf, rtol=0, atol=1e-6 * abs(eigs[0]))
    assert hessian_eigs(m, cross_entropy, (x, y), k=3, n_iter=25) == pytest.approx(ex, rel=1e-4)
    assert_untouched(m, snap)

def test_eigs_negative_dominant_and_double():
    torch.manual_seed(2)
    Q, _ = torch.linalg.qr(torch.randn(7, 7, dtype=torch.float64))
    A = Q @ torch.diag(torch.tensor([-6., 5., 5., 2., 1., 0., -0.5], dtype=torch.float64)) @ Q.T
    got = hessian_eigs(Quad(torch.randn(7, dtype=torch.float64)), quad_loss(A, torch.zeros(7, dtype=torch.float64)), DUMMY, k=4)
    assert got == pytest.approx([-6., 5., 5., 2.], rel=1e-10)

def test_esd_full_krylov_and_moments(bn_cnn):
    m, x, y = bn_cnn
    snap = snapshot(m)
    H = exact_hessian(m, cross_entropy, x, y); d = H.shape[0]
    ev = torch.linalg.eigvalsh(H)
    nodes, w = hessian_esd(m, cross_entropy, (x, y), n_iter=200, bs=24)
    assert len(nodes) == d and w.sum() == pytest.approx(1., abs=1e-12) and (np.diff(nodes) >= 0).all()
    assert nodes.max() == pytest.approx(ev[-1].item(), rel=1e-8) and nodes.min() == pytest.approx(ev[0].item(), rel=1e-7)
    nodes, w = hessian_esd(m, cross_entropy, (x, y), n_iter=5, n_v=80, bs=24)
    assert w.sum() == pytest.approx(1., abs=1e-12)
    for M, got in ((H, (w * nodes).sum()), (H @ H, (w * nodes**2).sum())):
        assert abs(got - M.trace().item() / d) <= 4 * off_diagonal_se(M, 80) / d
    assert_untouched(m, snap)

def test_esd_density_and_plot():
    import matplotlib; matplotlib.use('Agg')
    nodes, w = np.array([-1., 0.5, 3.]), np.array([0.2, 0.5, 0.3])
    grid, dens = esd_density(nodes, w)
    assert len(grid) == 10000 and grid[0] == -1.01 and grid[-1] == 3.01 and dens.sum() * (grid[1] - grid[0]) == pytest.approx(1.)
    grid, dens = esd_density(nodes, w, overhead=1.) # a margin wide enough to hold the outer peaks whole: the mean is kept
    assert (grid * dens).sum() * (grid[1] - grid[0]) == pytest.approx(w @ nodes, rel=1e-6)
    ax = plot_esd(nodes, w)
    assert ax.get_yscale() == 'log' and len(ax.lines) == 1
    with pytest.raises(ValueError, match='one length'): esd_density(nodes, w[:2])
    with pytest.raises(ValueError, match='sigma_squared'): esd_density(nodes, w, sigma_squared=0.)

def test_spectrum_float32_simple_cnn():
    torch.manual_seed(0)
    d = digits(16, n_train=64)
    m = simple_cnn(widths=(4, 8))
    snap = snapshot(m)
    tr, se = hessian_trace(m, cross_entropy, d, n_iter=4, n_examples=64, bs=32)
    eigs = hessian_eigs(m, cross_entropy, d, k=2, n_iter=8, n_examples=64, bs=32)
    nodes, w = hessian_esd(m, cross_entropy, d, n_iter=6, n_examples=64, bs=32)
    assert all(isinstance(t, float) and math.isfinite(t) for t in (tr, se, *eigs)) and abs(eigs[0]) >= abs(eigs[1])
    assert nodes.shape == w.shape == (6,) and w.sum() == pytest.approx(1., abs=1e-6) and nodes.max() <= eigs[0] * (1 + 1e-3)
    assert_untouched(m, snap)

# ---------------------------------------------------------------- eps-sharpness

def test_eps_sharpness_first_order_closed_form():
    torch.manual_seed(5)
    M = torch.randn(4, 4, dtype=torch.float64); A = M @ M.T; w = torch.randn(4, dtype=torch.float64); b = torch.randn(4, dtype=torch.float64)
    g = A @ w + b; gh = g / g.norm(); rho = 0.1
    expected = rho * g.norm() + rho ** 2 / 2 * gh @ A @ gh
    assert eps_sharpness(Quad(w), quad_loss(A, b), DUMMY, rho=rho) == pytest.approx(expected.item(), rel=1e-12)
    L0 = 0.5 * w @ A @ w + b @ w
    assert eps_sharpness(Quad(w), quad_loss(A, b), DUMMY, rho=rho, relative=True) == pytest.approx((expected / (1 + L0)).item(), rel=1e-12)

def test_eps_sharpness_isotropic_exact_max_and_ascent_does_not_lower():
    w = torch.randn(6, dtype=torch.float64); b = torch.randn(6, dtype=torch.float64); A = 2.5 * torch.eye(6, dtype=torch.float64)
    exact = (0.2 * (A @ w + b).norm() + 2.5 * 0.2 ** 2 / 2).item()
    for n in (0, 1, 7):
        assert eps_sharpness(Quad(w), quad_loss(A, b), DUMMY, rho=0.2, n_steps=n) == pytest.approx(exact, rel=1e-12)

def test_eps_sharpness_ascent_reaches_trust_region_max():
    "Anisotropic PSD quadratic: the max over the ball, by the secular equation solved with numpy (root of ||(mu-A)^-1 g|| = rho)"
    torch.manual_seed(6)
    A = torch.diag(torch.tensor([10., 1., 0.5, 0.], dtype=torch.float64)); w = torch.tensor([0.01, 1., -1., 0.5], dtype=torch.float64)
    b = torch.zeros(4, dtype=torch.float64); rho = 0.5
    g = (A @ w).numpy(); lam = np.diag(A.numpy())
    lo, hi = lam.max() + 1e-12, lam.max() + np.abs(g).sum() / rho + 1
    for _ in range(300):
        mu = (lo + hi) / 2
        lo, hi = (mu, hi) if np.linalg.norm(g / (mu - lam)) > rho else (lo, mu)
    e = g / (hi - lam); exact = e @ g + e @ A.numpy() @ e / 2
    first = eps_sharpness(Quad(w), quad_loss(A, b), DUMMY, rho=rho)
    ascent = eps_sharpness(Quad(w), quad_loss(A, b), DUMMY, rho=rho, n_steps=200, step_size=rho / 5)
    assert first < exact * 0.9 # the first-order step is far from the max here
    assert ascent == pytest.approx(exact, rel=1e-8)

def test_eps_sharpness_weights_bit_identical(bn_cnn):
    m, x, y = bn_cnn
    m = m.float(); x = x.float()
    snap = snapshot(m)
    s = eps_sharpness(m, cross_entropy, (x, y), rho=0.3, n_steps=4)
    assert s > 0
    assert_untouched(m, snap)

def test_eps_sharpness_restores_when_loss_raises(tiny):
    m, x, y = tiny
    snap = snapshot(m)
    calls = dict(n=0)
    def bad_loss(p, t):
        calls['n'] += 1
        if calls['n'] == 2: raise RuntimeError('boom') # the first call at the perturbed weights
        return cross_entropy(p, t)
    with pytest.raises(RuntimeError, match='boom'): eps_sharpness(m, bad_loss, (x, y), rho=1.0)
    assert_untouched(m, snap)

def test_eps_sharpness_stationary_point_is_zero():
    A = torch.eye(3, dtype=torch.float64)
    assert eps_sharpness(Quad(torch.zeros(3, dtype=torch.float64)), quad_loss(A, torch.zeros(3, dtype=torch.float64)), DUMMY) == 0.

# ---------------------------------------------------------------- interpolation and landscapes

def test_interpolate_endpoints_equal_model_losses(bn_cnn):
    m_a, x, y = bn_cnn
    torch.manual_seed(9)
    m_b = copy.deepcopy(m_a)
    with torch.no_grad():
        for p in m_b.parameters(): p.add_(torch.randn_like(p))
    m_b.train(); m_b(x * 0.5) # other running statistics
    snaps = snapshot(m_a), snapshot(m_b)
    cur = interpolate(m_a, m_b, cross_entropy, (x, y), alphas=[0., 0.25, 1.])
    for a, m in ((0., m_a), (1., m_b)):
        mm = copy.deepcopy(m).eval()
        with torch.no_grad(): p = mm(x)
        assert cur.loss[cur.alpha == a].item() == pytest.approx(cross_entropy(p, y).item(), rel=1e-12)
        assert cur.acc[cur.alpha == a].item() == pytest.approx((p.argmax(1) == y).double().mean().item())
    assert_untouched(m_a, snaps[0]); assert_untouched(m_b, snaps[1])
    assert list(cur.columns) == ['alpha', 'loss', 'acc']

def test_filter_normalisation():
    m = simple_cnn(widths=(4, 8))
    d = random_direction(m, seed=3)
    for name, p in m.named_parameters():
        if p.ndim <= 1: assert torch.equal(d[name], torch.zeros_like(p)); continue
        for j in range(p.shape[0]): # each filter (output channel / row)
            assert d[name][j].norm().item() == pytest.approx(p[j].norm().item(), rel=1e-5)
        assert not torch.allclose(d[name], p.detach()) # a random direction, not the weights
    d1 = random_direction(m, ignore_1d=False)
    for name, p in m.named_parameters():
        if p.ndim <= 1: assert torch.equal(d1[name], p.detach())

def test_loss_along_origin_and_restoration(bn_cnn):
    m, x, y = bn_cnn
    snap = snapshot(m)
    d = random_direction(m, seed=1)
    cur = loss_along(m, d, cross_entropy, (x, y), alphas=[0., 0.5])
    assert cur.loss[0] == pytest.approx(loss_and_acc(m, cross_entropy, (x, y))[0], rel=1e-12)
    assert_untouched(m, snap)
    mm = copy.deepcopy(m).eval()
    with torch.no_grad():
        for n, p in mm.named_parameters(): p.add_(0.5 * d[n])
        assert cur.loss[1] == pytest.approx(cross_entropy(mm(x), y).item(), rel=1e-10)

def test_plot_landscape_runs():
    import matplotlib; matplotlib.use('Agg')
    torch.manual_seed(0)
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    ms = {'a': nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)), 'b': nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))}
    ax = plot_landscape(ms, cross_entropy, (x, y), alphas=[-1, 0, 1])
    assert len(ax.lines) == 2
    with pytest.raises(ValueError, match='pass `data`'): plot_landscape(ms)
    with pytest.raises(ValueError, match='metric'): plot_landscape(ms, data=(x, y), metric='f1')

# ---------------------------------------------------------------- 2-D surfaces and trajectories

def test_surface_quadratic_closed_form():
    "f(α, β) = L(w) + α g·δ + β g·η + (α² δAδ + 2αβ δAη + β² ηAη)/2 on a quadratic, for every grid point"
    torch.manual_seed(11)
    w, b, M = (torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64),
               torch.randn(4, 4, dtype=torch.float64))
    A = M + M.T
    dl, et = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    al, be = [-2., -0.5, 0., 1.5], [-1., 0., 3.]
    s = loss_surface(Quad(w), quad_loss(A, b), DUMMY, ([dl], [et]), al, be)
    assert len(s) == len(al) * len(be) and list(s.columns) == ['alpha', 'beta', 'loss', 'acc']
    g, L = A @ w + b, (0.5 * w @ A @ w + b @ w).item()
    for a in al:
        for bb in be:
            exact = L + a * (g @ dl) + bb * (g @ et) + 0.5 * (a * a * dl @ A @ dl + 2 * a * bb * dl @ A @ et
                                                            + bb * bb * et @ A @ et)
            got = s.loss[(s.alpha == a) & (s.beta == bb)].item()
            assert got == pytest.approx(exact.item(), rel=1e-12, abs=1e-12)
    assert s.acc.isna().all() # not a classification

def test_surface_default_directions_grid_and_restoration(bn_cnn):
    m, x, y = bn_cnn
    snap = snapshot(m)
    s = loss_surface(m, cross_entropy, (x, y), seed=4, update_bn=True, bs=7)
    assert_untouched(m, snap) # weights, BatchNorm buffers and modes bit-identical, after update_bn too
    grid = [(i - 5) / 5 for i in range(11)]
    assert list(zip(s.alpha, s.beta)) == [(a, b) for a in grid for b in grid]
    s0 = loss_surface(m, cross_entropy, (x, y), seed=4, alphas=[0., -0.6], betas=[0., 0.8])
    assert s0.loss[0] == pytest.approx(loss_and_acc(m, cross_entropy, (x, y))[0], rel=1e-12)
    d1, d2 = random_direction(m, 4), random_direction(m, 5)
    mm = copy.deepcopy(m).eval()
    with torch.no_grad():
        for n, p in mm.named_parameters(): p.add_(-0.6 * d1[n] + 0.8 * d2[n])
        assert s0.loss[3] == pytest.approx(cross_entropy(mm(x), y).item(), rel=1e-10)

def test_surface_update_bn_is_one_batch_statistics(bn_cnn):
    "At a grid point: the loss of a copy moved there, its statistics recomputed by torch's update_bn on all of x"
    m, x, y = bn_cnn
    d1, d2 = random_direction(m, 1), random_direction(m, 2)
    s = loss_surface(m, cross_entropy, (x, y), (d1, d2), alphas=[0.3], betas=[-0.7], update_bn=True, bs=5)
    mm = copy.deepcopy(m)
    with torch.no_grad():
        for n, p in mm.named_parameters(): p.add_(0.3 * d1[n] - 0.7 * d2[n])
    mm[3].p = 0. # dropout off, as in eval mode, while update_bn runs the copy in train mode
    torch.optim.swa_utils.update_bn([(x,)], mm)
    with torch.no_grad(): ref = cross_entropy(mm.eval()(x), y).item()
    assert s.loss[0] == pytest.approx(ref, rel=1e-10)
    s_run = loss_surface(m, cross_entropy, (x, y), (d1, d2), alphas=[0.3], betas=[-0.7])
    assert abs(s_run.loss[0] - ref) > 1e-4 # the running statistics give another loss

def test_surface_on_endpoints(tiny):
    "With two networks as directions, (1, 0) and (0, 1) are those networks; state dicts need endpoints=True"
    m, x, y = tiny
    torch.manual_seed(5)
    m1, m2 = copy.deepcopy(m), copy.deepcopy(m)
    with torch.no_grad():
        for p in list(m1.parameters()) + list(m2.parameters()): p.add_(0.5 * torch.randn_like(p))
    s = loss_surface(m, cross_entropy, (x, y), (m1, m2), alphas=[0., 1.], betas=[0., 1.])
    own = [loss_and_acc(k, cross_entropy, (x, y))[0] for k in (m, m2, m1)]
    assert s.loss[:3].tolist() == pytest.approx(own, rel=1e-12)
    s_sd = loss_surface(m, cross_entropy, (x, y), (m1.state_dict(), m2.state_dict()), [0., 1.], [0., 1.],
                        endpoints=True)
    assert s_sd.loss.tolist() == s.loss.tolist()
    with pytest.raises(ValueError, match='every trainable parameter'):
        loss_surface(m, cross_entropy, (x, y), ({'0.weight': m1[0].weight}, m2), endpoints=True)

def orthonormal_trajectory(model, a, b, c, seed=0):
    "State dicts at θ + a_i u + b_i v + c_i w for orthonormal u, v, w (QR of a seeded Gaussian matrix), and u, v"
    names = [n for n, _ in model.named_parameters()]
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    Q, _ = torch.linalg.qr(torch.randn(len(theta), 3, dtype=theta.dtype, generator=torch.Generator().manual_seed(seed)))
    def unflat(v):
        return dict(zip(names, [t.view(p.shape) for t, p in zip(v.split([p.numel() for p in model.parameters()]),
                                                                  model.parameters())]))
    return [unflat(theta + ai * Q[:, 0] + bi * Q[:, 1] + ci * Q[:, 2]) for ai, bi, ci in zip(a, b, c)], Q

def test_pca_recovers_known_plane(tiny):
    "Offsets along orthonormal u, v, w with centred, orthogonal coefficients: PCA gives ±u, ±v, σ² ratios, (a, b)"
    m, x, y = tiny
    # coefficients: columns of a QR orthogonal to the constant (so centred and orthogonal once centred), scaled by
    # 3, 2, 0.5, then shifted so the final checkpoint's offset is zero; the centred sums of squares are 9, 4, 0.25
    G = torch.cat([torch.ones(7, 1), torch.randn(7, 3, generator=torch.Generator().manual_seed(1))], 1)
    B, _ = torch.linalg.qr(G.double())
    a, b, c = [(B[:, k] - B[-1, k]) * s for k, s in ((1, 3.), (2, 2.), (3, 0.5))]
    for u, v in ((a, b), (a, c), (b, c)): assert abs(((u - u.mean()) * (v - v.mean())).sum()) < 1e-12
    cks, Q = orthonormal_trajectory(m, a, b, c)
    va, vb, vc = 9., 4., 0.25
    (d1, d2), ratios, coords = pca_directions(cks)
    flat = lambda d: torch.cat([t.flatten() for t in d.values()])
    assert abs(flat(d1) @ Q[:, 0]).item() == pytest.approx(1., rel=1e-10)
    assert abs(flat(d2) @ Q[:, 1]).item() == pytest.approx(1., rel=1e-10)
    assert ratios == pytest.approx((va / (va + vb + vc), vb / (va + vb + vc)), rel=1e-10)
    s1, s2 = np.sign(coords[0])
    signs = [s1 * np.sign(a[0].item()), s2 * np.sign(b[0].item())] # one sign per direction
    np.testing.assert_allclose(coords * signs, torch.stack([a, b], 1).numpy(), atol=1e-10)
    assert list(d1) == [n for n, _ in m.named_parameters()]
    assert [t.shape for t in d1.values()] == [p.shape for p in m.parameters()]
    # models, tensor lists and state dicts with buffers (named by `model`) give the same answer
    mods = [copy.deepcopy(m) for _ in cks]
    for k, sd in zip(mods, cks): k.load_state_dict(sd)
    lists = [list(sd.values()) for sd in cks]
    for other in (pca_directions(mods), pca_directions(lists), pca_directions([m.state_dict() | sd for sd in cks], m)):
        np.testing.assert_allclose(other[2], coords, atol=1e-12)
    assert isinstance(pca_directions(lists)[0][0], list)

def test_pca_ignore_1d_and_surface_at_checkpoints(tiny):
    "ignore_1d leaves the biases out; on a planar trajectory the surface at (x_i, y_i) is checkpoint i's loss"
    m, x, y = tiny
    a, b = torch.tensor([[-2., 2., 1., -1., 0.], [1., 1., -1., -1., 0.]], dtype=torch.float64)
    cks, _ = orthonormal_trajectory(m, a, b, torch.zeros(5, dtype=torch.float64), seed=3)
    (d1, d2), _, coords = pca_directions(cks, ignore_1d=True)
    assert all(torch.equal(t, torch.zeros_like(t)) for d in (d1, d2) for n, t in d.items() if t.ndim == 1)
    (d1, d2), ratios, coords = pca_directions(cks)
    assert sum(ratios) == pytest.approx(1., rel=1e-10)
    m.load_state_dict(cks[-1])
    s = loss_surface(m, cross_entropy, (x, y), (d1, d2), alphas=coords[:, 0], betas=coords[:, 1])
    for i, sd in enumerate(cks):
        k = copy.deepcopy(m); k.load_state_dict(sd)
        got = s.loss[(s.alpha == coords[i, 0]) & (s.beta == coords[i, 1])].item()
        assert got == pytest.approx(loss_and_acc(k, cross_entropy, (x, y))[0], rel=1e-10)

def test_plot_surface_and_trajectory_artists(tiny):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.contour import ContourSet
    from matplotlib.collections import QuadMesh
    from matplotlib.quiver import Quiver
    m, x, y = tiny
    s = loss_surface(m, cross_entropy, (x, y), alphas=[-1, -0.5, 0, 0.5, 1], betas=[-1, 0, 1, 2])
    ax = plot_surface(s, levels=[1.2, 1.3, 1.4])
    cs = [c for c in ax.collections if isinstance(c, ContourSet)]
    assert len(cs) == 1 and list(cs[0].levels) == [1.2, 1.3, 1.4] and ax.get_xlabel() == 'α'
    ax = plot_surface(s, 'heatmap', metric='acc')
    mesh = [c for c in ax.collections if isinstance(c, QuadMesh)]
    z = np.array([[s.acc[4 * i + j] for i in range(5)] for j in range(4)]) # rows β, columns α
    assert len(mesh) == 1 and np.allclose(np.asarray(mesh[0].get_array()).reshape(4, 5), z)
    assert len(ax.figure.axes) == 2 # the colour bar
    coords = np.array([[-1., 1.5], [-0.5, 0.], [0., 0.]])
    ax = plot_trajectory(s, coords, ratios=(0.7, 0.2))
    q = [c for c in ax.collections if isinstance(c, Quiver)]
    assert len(q) == 1 and q[0].N == 2 and np.allclose(np.c_[q[0].U, q[0].V], np.diff(coords, axis=0))
    assert np.allclose(ax.lines[0].get_xydata(), coords) and ax.get_ylabel() == '2nd PCA direction: 20.0%'
    plt.close('all')

@pytest.mark.parametrize('call, msg', [
    (lambda m, d: loss_surface(m, cross_entropy, d, directions=[random_direction(m)]), 'pair'),
    (lambda m, d: loss_surface(m, cross_entropy, d, directions=([torch.zeros(1)], random_direction(m))),
     'each direction'),
    (lambda m, d: loss_surface(m, cross_entropy, d, alphas=[]), 'alphas'),
    (lambda m, d: loss_surface(m, cross_entropy, d, betas=[math.inf]), 'betas'),
    (lambda m, d: loss_surface(m, cross_entropy, digits(8, n_train=20), split='valid'), 'split'),
    (lambda m, d: plot_surface(loss_surface(m, cross_entropy, d, alphas=[0, 1], betas=[0, 1]), kind='3d'), 'kind'),
    (lambda m, d: plot_surface(loss_surface(m, cross_entropy, d, alphas=[0, 1], betas=[0, 1]).iloc[:3]), 'every point'),
    (lambda m, d: plot_surface({'alpha': [0]}), 'DataFrame'),
    (lambda m, d: plot_surface(pd.DataFrame(dict(alpha=[0, 0, 1, 1], beta=[0, 1, 0, 1], loss=[0., 1, 2, 3])), log=True),
     'positive'),
    (lambda m, d: pca_directions([m, m]), 'at least 3'),
    (lambda m, d: pca_directions([m, m, m]), 'do not move'),
    (lambda m, d: pca_directions([m, m, nn.Linear(2, 2)]), 'lacks parameters'),
    (lambda m, d: pca_directions([[torch.zeros(2)], [torch.zeros(3)], [torch.zeros(2)]]), 'same shapes'),
])
def test_surface_validation(tiny, call, msg):
    m, x, y = tiny
    with pytest.raises(ValueError, match=msg): call(m, (x, y))

# ---------------------------------------------------------------- validation

@pytest.mark.parametrize('call, msg', [
    (lambda m, d: hessian_top_eig(m, cross_entropy, d, n_iter=0), 'n_iter'),
    (lambda m, d: hessian_top_eig(m, cross_entropy, d, tol=-1.), 'tol'),
    (lambda m, d: hessian_top_eig(m, cross_entropy, d, n_examples=0), 'n_examples'),
    (lambda m, d: hessian_top_eig(m, cross_entropy, d, bs=0), 'bs must be'),
    (lambda m, d: hessian_top_eig(m, cross_entropy, d[0]), 'pair (x, y)'),
    (lambda m, d: hessian_top_eig(m, cross_entropy, (d[0], d[1][:3])), 'disagree'),
    (lambda m, d: hessian_top_eig(nn.ReLU(), cross_entropy, d), 'no trainable'),
    (lambda m, d: hessian_top_eig('model', cross_entropy, d), 'torch.nn.Module'),
    (lambda m, d: hessian_top_eig(m, lambda p, y: cross_entropy(p, y, reduction='none'), d), 'scalar'),
    (lambda m, d: eps_sharpness(m, cross_entropy, d, rho=0.), 'rho must be'),
    (lambda m, d: eps_sharpness(m, cross_entropy, d, rho=-0.1), 'rho must be'),
    (lambda m, d: eps_sharpness(m, cross_entropy, d, rho=math.inf), 'rho must be'),
    (lambda m, d: eps_sharpness(m, cross_entropy, d, n_steps=-1), 'n_steps'),
    (lambda m, d: eps_sharpness(m, cross_entropy, d, step_size=0.), 'step_size'),
    (lambda m, d: interpolate(m, nn.Linear(2, 2), cross_entropy, d), 'same architecture'),
    (lambda m, d: interpolate(m, m, cross_entropy, d, alphas=[]), 'alphas'),
    (lambda m, d: interpolate(m, m, cross_entropy, d, alphas=[0., math.nan]), 'alphas'),
    (lambda m, d: loss_along(m, [torch.zeros(1)], cross_entropy, d), 'direction'),
    (lambda m, d: loss_and_acc(m, cross_entropy, digits(8, n_train=20), split='valid'), 'split'),
    (lambda m, d: hessian_vector_product(m, cross_entropy, d, [torch.zeros(2)]), 'one tensor per trainable parameter'),
    (lambda m, d: hessian_trace(m, cross_entropy, d, n_iter=1), 'n_iter'),
    (lambda m, d: hessian_trace(m, cross_entropy, d, bs=0), 'bs must be'),
    (lambda m, d: hessian_eigs(m, cross_entropy, d, k=0), 'k must be'),
    (lambda m, d: hessian_eigs(m, cross_entropy, d, k=100), 'k must be'),
    (lambda m, d: hessian_eigs(m, cross_entropy, d, k=3, n_iter=2), 'n_iter'),
    (lambda m, d: hessian_eigs(m, cross_entropy, d, tol=-1.), 'tol'),
    (lambda m, d: hessian_esd(m, cross_entropy, d, n_iter=0), 'n_iter'),
    (lambda m, d: hessian_esd(m, cross_entropy, d, n_v=0), 'n_v'),
    (lambda m, d: hessian_esd(nn.ReLU(), cross_entropy, d), 'no trainable'),
])
def test_validation(tiny, call, msg):
    m, x, y = tiny
    with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace(')', r'\)')): call(m, (x, y))

def test_nonfinite_loss_is_an_error(tiny):
    m, x, y = tiny
    x = x.clone(); x[0, 0] = math.nan
    with pytest.raises(ValueError, match='loss of the model is nan'): hessian_top_eig(m, cross_entropy, (x, y))
    with pytest.raises(ValueError, match='loss of the model is nan'): eps_sharpness(m, cross_entropy, (x, y))
    for f in (hessian_trace, hessian_eigs, hessian_esd):
        with pytest.raises(ValueError, match='loss of the model is nan'): f(m, cross_entropy, (x, y))

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_model_with_cpu_data():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    x, y = torch.randn(37, 3, dtype=torch.float64), torch.randint(0, 4, (37,))
    cpu = hessian_top_eig(m, cross_entropy, (x, y), n_iter=200, tol=1e-12)
    gpu = hessian_top_eig(m.cuda(), cross_entropy, (x, y), n_iter=200, tol=1e-12)
    assert gpu == pytest.approx(cpu, rel=1e-8)
    d = random_direction(m)
    assert all(t.is_cuda for t in d.values())

# ---------------------------------------------------------------- memory: bounded by the chunk size, not the subset

PEAK_RSS = r'''
import json, re, sys, torch
from torch import nn
from flatnb.core import cross_entropy
from flatnb.flatness import hessian_top_eig, eps_sharpness
torch.set_num_threads(1); torch.manual_seed(0)
C = 8
m = nn.Sequential(*[mod for i in range(3) for mod in (nn.Conv2d(3 if i == 0 else C, C, 3, padding=1), nn.BatchNorm2d(C), nn.Tanh())],
                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, 10))
x, y = torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,))
f = dict(hessian_top_eig=lambda bs: hessian_top_eig(m, cross_entropy, (x, y), n_iter=2, tol=0., n_examples=None, bs=bs),
         eps_sharpness=lambda bs: eps_sharpness(m, cross_entropy, (x, y), n_steps=1, n_examples=None, bs=bs))[sys.argv[1]]
def peak(): # VmHWM: the peak resident set of this process image (ru_maxrss would carry the parent's peak over exec)
    return int(re.search(r'VmHWM:\s*(\d+) kB', open('/proc/self/status').read()).group(1)) / 1024
base = peak()
out = {}
for bs in (32, 256): # the small chunks first: the peak only grows, so the second reading is that of bs = n
    value = f(bs)
    out[bs] = dict(value=value, mib=peak() - base)
print(json.dumps(out))
'''

@pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='reads the peak RSS from /proc (Linux)')
@pytest.mark.parametrize('fn', ['hessian_top_eig', 'eps_sharpness'])
def test_peak_memory_bounded_by_chunk(fn):
    "Peak RSS over the process's baseline, 256 CIFAR-sized images through a 3-conv BatchNorm net: chunks of 32 vs one of 256"
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, '-c', PEAK_RSS, fn], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    small, full = out['32'], out['256']
    print(f"{fn}: peak RSS increase {small['mib']:.0f} MiB with bs=32, {full['mib']:.0f} MiB with bs=256")
    assert small['value'] == pytest.approx(full['value'], rel=1e-4)
    assert full['mib'] > 100 # the one-batch graph is large enough to measure (about 370 / 130 MiB)
    assert small['mib'] < 0.4 * full['mib'], out
