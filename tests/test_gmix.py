"G-Mix / BG-Mix / DG-Mix against a reference written from the reconstruction of `004` (issue 3, steps 1-5)"
import copy, math
import pytest
import torch
from conftest import restore_and_sgd_step_
from torch import nn
import torch.nn.functional as F
from flatnb.sam import SAM, frozen_bn_stats
from functools import partial
from flatnb.gmix import gmix_step, GMix, GMixOut, GMixStep
from flatnb.mixup import MixUp
from flatnb.learner import Learner, OneCycle, simple_cnn
from flatnb.core import digits

B = 16


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 3, 8, 8, generator=g), torch.randint(0, 4, (B,), generator=g),
            torch.randperm(B, generator=g))


def make_opt(m, rho=0.1):
    return SAM(m.parameters(), torch.optim.SGD, rho=rho, lr=0.1, momentum=0.9, weight_decay=1e-3)


def reference_step(model, bufs, x, y, lam, perm, mode, ratio, beta, rho=0.1, lr=0.1, mom=0.9, wd=1e-3):
    "One step written out from the reconstruction, with per-parameter Python loops and a hand-written SGD"
    params = list(model.parameters())
    # 1. mix
    xm = lam * x + (1 - lam) * x[perm]
    ya, yb = y, y[perm]
    def per_example(inp, a, b):
        out = model(inp)
        return lam * F.cross_entropy(out, a, reduction='none') + (1 - lam) * F.cross_entropy(out, b, reduction='none')
    w = [p.detach().clone() for p in params]
    l0 = per_example(xm, ya, yb)                       # BN running stats updated here, and only here
    # 2. SAM ascent on the batch mean
    g = torch.autograd.grad(l0.mean(), params)
    norm = math.sqrt(sum(float((gi * gi).sum()) for gi in g))
    stats = {k: v.clone() for k, v in model.state_dict().items() if 'running' in k or 'num_batches' in k}
    with torch.no_grad():
        for p, wi, gi in zip(params, w, g): p.copy_(wi + rho * gi / (norm + 1e-12))
    # 3. sensitivity and split
    l1 = per_example(xm, ya, yb)
    s = (l1 - l0).detach()
    k = math.ceil(ratio * B)
    order = torch.argsort(s, descending=True)
    S, L = order[:k], order[k:]
    # 4. direction at w+e
    if mode == 'g':
        d = torch.autograd.grad(l1.mean(), params)
    elif mode == 'bg':
        d = torch.autograd.grad(per_example(xm[S], ya[S], yb[S]).mean(), params)
    else:
        gS = torch.autograd.grad(l1[S].mean(), params, retain_graph=True)
        gL = torch.autograd.grad(l1[L].mean(), params)
        dot = sum(float((a * b).sum()) for a, b in zip(gL, gS))
        nS = sum(float((a * a).sum()) for a in gS)
        d = [a + beta * (b - dot / nS * a) for a, b in zip(gS, gL)]
    # 5. restore w (and the BN statistics of the first pass), SGD with momentum and weight decay
    restore_and_sgd_step_(model, stats, params, w, d, bufs, lr, mom, wd)
    return s, S


@pytest.mark.parametrize('mode,ratio,beta', [('g', 0.5, 1.0), ('bg', 0.5, 1.0), ('bg', 0.3, 1.0),
                                             ('dg', 0.5, 1.0), ('dg', 0.25, 0.5)])
def test_steps_match_reference(mode, ratio, beta):
    ref, got = net(), net()
    bufs = [None] * len(list(ref.parameters()))
    opt = make_opt(got)
    for i, lam in enumerate((0.7, 0.35)):
        x, y, perm = batch(seed=i)
        s_ref, S_ref = reference_step(ref, bufs, x, y, lam, perm, mode, ratio, beta)
        out = gmix_step(got, opt, x, y, mode=mode, ratio=ratio, lam=lam, perm=perm, dg_weight=beta)
        torch.testing.assert_close(out.sensitivity, s_ref, atol=1e-5, rtol=1e-5)
        assert set(out.selected.nonzero().flatten().tolist()) == set(S_ref.tolist())
        for (k, a), b in zip(got.state_dict().items(), ref.state_dict().values()):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=k)


def test_lam_one_is_a_sam_step():
    x, y, perm = batch()
    m1, m2 = net(), net()
    o1, o2 = make_opt(m1), make_opt(m2)
    gmix_step(m1, o1, x, y, mode='g', lam=1.0, perm=perm)
    F.cross_entropy(m2(x), y).backward(); o2.first_step(zero_grad=True)
    with frozen_bn_stats(m2): F.cross_entropy(m2(x), y).backward()
    o2.second_step(zero_grad=True)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_bg_with_ratio_one_is_g():
    x, y, perm = batch()
    m1, m2 = net(), net()
    o1 = gmix_step(m1, make_opt(m1), x, y, mode='g', lam=0.6, perm=perm)
    o2 = gmix_step(m2, make_opt(m2), x, y, mode='bg', ratio=1.0, lam=0.6, perm=perm)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(o1.sensitivity, o2.sensitivity)


def test_dg_with_ratio_one_is_g():
    x, y, perm = batch()
    m1, m2 = net(), net()
    gmix_step(m1, make_opt(m1), x, y, mode='g', lam=0.6, perm=perm)
    gmix_step(m2, make_opt(m2), x, y, mode='dg', ratio=1.0, lam=0.6, perm=perm)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_output_fields_and_bn_updated_by_first_forward_only():
    x, y, perm = batch()
    m, ref = net(), net()
    out = gmix_step(m, make_opt(m), x, y, mode='bg', lam=0.4, perm=perm)
    assert isinstance(out, GMixOut)
    assert out.loss.ndim == 0 and out.sensitivity.shape == (B,) and out.selected.sum() == B // 2
    assert out.preds.shape == (B, 4) and out.lam == 0.4 and torch.equal(out.perm, perm)
    ref(0.4 * x + 0.6 * x[perm])  # one forward in training mode
    for k, v in ref.state_dict().items():
        if 'running' in k or 'num_batches' in k: torch.testing.assert_close(m.state_dict()[k], v, msg=k)
    assert all(p.grad is None for p in m.parameters())


def test_random_draws_when_not_given():
    x, y, _ = batch()
    m = net(); torch.manual_seed(3)
    out = gmix_step(m, make_opt(m), x, y, alpha=0.5)
    assert 0 <= out.lam <= 1 and sorted(out.perm.tolist()) == list(range(B))


@pytest.mark.parametrize('ratio', [0, 0.0, -0.1, 1.0001, 2, float('nan'), float('inf'), None, '0.5'])
def test_bad_ratio_raises(ratio):
    x, y, perm = batch(); m = net()
    with pytest.raises(ValueError, match=r'ratio must be a finite number in \(0, 1\]'):
        gmix_step(m, make_opt(m), x, y, mode='bg', ratio=ratio)
    with pytest.raises(ValueError, match='ratio'): GMix('bg', ratio=ratio)


def test_other_bad_arguments():
    x, y, perm = batch(); m = net(); o = make_opt(m)
    with pytest.raises(ValueError, match='mode'): gmix_step(m, o, x, y, mode='G')
    with pytest.raises(ValueError, match='SAM'): gmix_step(m, torch.optim.SGD(m.parameters(), lr=0.1), x, y)
    with pytest.raises(ValueError, match='alpha'): gmix_step(m, o, x, y, alpha=-1)
    with pytest.raises(ValueError, match='lam'): gmix_step(m, o, x, y, lam=-0.1, perm=perm)
    with pytest.raises(ValueError, match='dg_weight'): gmix_step(m, o, x, y, mode='dg', dg_weight=float('nan'))
    with pytest.raises(ValueError, match='rho'): GMix(rho=0)
    with pytest.raises(ValueError, match="unknown mode 'x'"): GMix('x')
    with pytest.raises(ValueError, match='alpha'): GMix(alpha=0)
    with pytest.raises(ValueError, match='dg_weight'): GMix('dg', dg_weight=-1)


def test_one_set_of_defaults():
    "gmix_step and GMix take their hyper-parameters' defaults from the step class, GMixStep"
    import inspect
    step = inspect.signature(GMixStep).parameters
    for f in (gmix_step, GMix):
        ps = inspect.signature(f).parameters
        assert {k: ps[k].default for k in step} == {k: v.default for k, v in step.items()}, f


def test_sensitivities_in_float64():
    "A float64 model gets float64 sensitivities, equal to a float64 brute-force computation to 1e-12"
    x, y, perm = batch(); x = x.double(); lam = 0.3
    m = net().double(); ref = copy.deepcopy(m)
    out = gmix_step(m, make_opt(m), x, y, mode='bg', lam=lam, perm=perm)
    assert out.sensitivity.dtype == torch.float64
    xm = lam * x + (1 - lam) * x[perm]
    def per_example(model):   # one example at a time from the batch's log-softmax (BatchNorm sees the batch)
        logp = model(xm).log_softmax(-1)
        return torch.stack([-(lam * logp[i, y[i]] + (1 - lam) * logp[i, y[perm[i]]]) for i in range(B)])
    l0 = per_example(ref); g = torch.autograd.grad(l0.mean(), list(ref.parameters()))
    norm = math.sqrt(sum(float((gi * gi).sum()) for gi in g))
    with torch.no_grad():
        for p, gi in zip(ref.parameters(), g): p += 0.1 * gi / norm
        l1 = per_example(ref)
    torch.testing.assert_close(out.sensitivity, l1 - l0.detach(), atol=1e-12, rtol=0)


def test_dg_replays_dropout_in_its_second_forward():
    "DG-Mix forwards twice at w+ε; with dropout both draw the same masks: the step of one forward backpropagated twice"
    def drop_net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4))
    x, y, perm = batch(); lam = 0.6
    m, ref = drop_net(), drop_net(); w = [p.detach().clone() for p in m.parameters()]
    torch.manual_seed(1)
    gmix_step(m, SAM(m.parameters(), torch.optim.SGD, rho=0.1, lr=1.0), x, y, mode='dg', lam=lam, perm=perm)
    torch.manual_seed(1)
    xm, ps = lam * x + (1 - lam) * x[perm], list(ref.parameters())
    def per_example():
        ce = partial(F.cross_entropy, ref(xm), reduction='none')
        return lam * ce(y) + (1 - lam) * ce(y[perm])
    l0 = per_example(); g = torch.autograd.grad(l0.mean(), ps)
    norm = math.sqrt(sum(float((gi * gi).sum()) for gi in g))
    with torch.no_grad():
        for p, gi in zip(ps, g): p += 0.1 * gi / norm
    l1 = per_example()
    S = torch.argsort((l1 - l0).detach(), descending=True)[:B // 2]; L = torch.ones(B, dtype=torch.bool); L[S] = False
    gS = torch.autograd.grad(l1[S].mean(), ps, retain_graph=True); gL = torch.autograd.grad(l1[L].mean(), ps)
    c = sum(float((a * b).sum()) for a, b in zip(gL, gS)) / sum(float((a * a).sum()) for a in gS)
    for wi, p, a, b in zip(w, m.parameters(), gS, gL):
        torch.testing.assert_close(wi - p.detach(), a + (b - c * a), atol=1e-6, rtol=1e-5)


def test_dg_trains_under_torch_compile():
    "DG-Mix with `Learner(compile=True)` (issue 11.4: no compiled graph is backpropagated twice) = the eager run"
    def run(compile):
        torch.manual_seed(0)
        return Learner(simple_cnn(widths=(4,)), digits(8, n_train=40), opt=partial(torch.optim.SGD, lr=0.1),
                       cbs=[GMix('dg', rho=0.05)], bs=20, compile=compile, progress=False).fit(2)
    compiled, eager = run(True), run(False)
    assert all(math.isfinite(r['train_loss']) for r in compiled.history)
    for a, b in zip(compiled.model.state_dict().values(), eager.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_failure_in_second_pass_restores_weights():
    x, y, perm = batch(); m = net(); o = make_opt(m)
    w = [p.detach().clone() for p in m.parameters()]
    calls = {'n': 0}
    def loss(preds, t, reduction='mean'):
        calls['n'] += 1
        if calls['n'] > 2: raise RuntimeError('boom')  # the first pass calls it twice (two labels), the second fails
        return F.cross_entropy(preds, t, reduction=reduction)
    with pytest.raises(RuntimeError, match='boom'): gmix_step(m, o, x, y, loss_func=loss, lam=0.5, perm=perm)
    for p, wi in zip(m.parameters(), w): assert torch.equal(p.detach(), wi)


@pytest.mark.parametrize('mode', ['g', 'bg', 'dg'])
def test_callback_trains_with_one_cycle(mode):
    data = digits(8, n_train=80)
    torch.manual_seed(0)
    learn = Learner(simple_cnn(widths=(4, 8)), data, opt=lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
                    cbs=[GMix(mode, ratio=0.5, alpha=1.0, rho=0.05), OneCycle()], bs=20, progress=False).fit(2)
    assert isinstance(learn.opt, SAM)
    assert learn.cb(OneCycle).sched.last_epoch == 8  # the schedule stepped once per batch (after_step fired)
    assert all(math.isfinite(r['train_loss']) for r in learn.history)
    assert learn.cb(GMix).out.selected.sum() == 10


def test_callback_refuses_mixup_beside_it():
    with pytest.raises(ValueError, match='MixUp'):
        Learner(simple_cnn(widths=(4,)), digits(8, n_train=40), cbs=[GMix(rho=0.05), MixUp()], progress=False).fit(1)
