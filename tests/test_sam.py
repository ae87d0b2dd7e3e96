"SAM / ASAM against a reference written from Algorithm 1 of `000` (and Kwon et al. for ASAM), with a per-parameter loop"
import copy, math, warnings
import pytest
import torch
from conftest import restore_and_sgd_step_
from torch import nn
import torch.nn.functional as F
from flatnb.sam import SAM, ASAM, SAMCB, frozen_bn_stats
from flatnb.learner import Learner, OneCycle, simple_cnn
from flatnb.core import digits


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def batches(n=4, bs=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(bs, 3, 8, 8, generator=g), torch.randint(0, 5, (bs,), generator=g)) for _ in range(n)]


def reference_sam(model, data, rho, lr, momentum, wd, adaptive=False):
    """Independent SAM: gradient at w, ε_i = ρ T_i² g_i / ||T g|| over all parameters (T = |w| for ASAM, 1 for SAM;
    `adaptive` may be one flag per parameter), gradient at w+ε with the BatchNorm running statistics of the second pass
    thrown away, SGD with momentum and weight decay (torch's convention: d = g + wd·w, b = μ b + d, w -= lr b),
    written out per parameter."""
    params = list(model.parameters())
    bufs = [None] * len(params)
    flags = adaptive if isinstance(adaptive, list) else [adaptive] * len(params)
    for x, y in data:
        w = [p.detach().clone() for p in params]
        g1 = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        t = [(wi.abs() if a else torch.ones_like(wi)) for wi, a in zip(w, flags)]
        norm = math.sqrt(sum(float(((ti * gi) ** 2).sum()) for ti, gi in zip(t, g1)))
        saved = {k: v.clone() for k, v in model.state_dict().items() if 'running' in k or 'num_batches' in k}
        with torch.no_grad():
            for p, wi, ti, gi in zip(params, w, t, g1): p.copy_(wi + rho * ti ** 2 * gi / (norm + 1e-12))
        g2 = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        restore_and_sgd_step_(model, saved, params, w, g2, bufs, lr, momentum, wd)
    return model


def run_sam(model, data, **kw): return _run(model, data, SAM(model.parameters(), torch.optim.SGD, **kw))


@pytest.mark.parametrize('adaptive,rho', [(False, 0.05), (False, 0.5), (True, 0.5)])
def test_weights_after_several_steps_match_reference(adaptive, rho):
    data = batches(5)
    ref = reference_sam(small_net(), data, rho=rho, lr=0.1, momentum=0.9, wd=5e-4, adaptive=adaptive)
    got = run_sam(small_net(), data, rho=rho, adaptive=adaptive, lr=0.1, momentum=0.9, weight_decay=5e-4)
    assert isinstance(got, nn.Module)
    for (k, a), b in zip(got.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=k)


def test_step_closure_equals_two_steps():
    data = batches(3)
    m1, m2 = small_net(), small_net()
    o1 = SAM(m1.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    for x, y in data:
        F.cross_entropy(m1(x), y).backward()
        def closure():
            with frozen_bn_stats(m1):
                loss = F.cross_entropy(m1(x), y); loss.backward()
            return loss
        out = o1.step(closure); o1.zero_grad()
        assert out.ndim == 0
    run_sam(m2, data, rho=0.1, lr=0.1, momentum=0.9)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()): torch.testing.assert_close(a, b)


def _run(model, data, opt):
    "SAM's two steps per batch, the second pass with frozen BatchNorm statistics"
    for x, y in data:
        F.cross_entropy(model(x), y).backward()
        opt.first_step(zero_grad=True)
        with frozen_bn_stats(model): F.cross_entropy(model(x), y).backward()
        opt.second_step(zero_grad=True)
    return model


@pytest.mark.parametrize('make', [lambda ps: ASAM(ps, torch.optim.SGD, lr=0.1),                 # ρ = 0.5 by default
                                  lambda ps: SAM(ps, torch.optim.SGD, 0.5, True, lr=0.1),       # davda54, positional
                                  lambda ps: SAM(ps, torch.optim.SGD, rho=0.5, adaptive=True, lr=0.1)])
def test_asam_and_the_adaptive_flag(make):
    data = batches(3)
    ref = reference_sam(small_net(), data, rho=0.5, lr=0.1, momentum=0., wd=0., adaptive=True)
    m = small_net(); opt = make(m.parameters())
    assert isinstance(opt, SAM) and all(g['adaptive'] and g['rho'] == 0.5 for g in opt.param_groups)
    for a, b in zip(_run(m, data, opt).state_dict().values(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_adaptive_flag_per_group():
    "davda54's flag is per group: T = |w| in the adaptive group only, the norm over both"
    data = batches(3)
    m = small_net(); ps = list(m.parameters())
    opt = SAM([{'params': ps[:3], 'adaptive': True}, {'params': ps[3:]}], torch.optim.SGD, rho=0.3, lr=0.1)
    flags = [i < 3 for i in range(len(ps))]
    ref = reference_sam(small_net(), data, rho=0.3, lr=0.1, momentum=0., wd=0., adaptive=flags)
    for a, b in zip(_run(m, data, opt).state_dict().values(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_step_with_model_and_before_step():
    "`step(closure, model, before_step)`: the second pass's BN statistics thrown away, the hook at w with its gradient"
    data = batches(3)
    m = small_net(); opt = SAM(m.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, weight_decay=5e-4)
    seen = []
    for x, y in data:
        F.cross_entropy(m(x), y).backward()
        w = [p.detach().clone() for p in m.parameters()]
        def hook():
            at_w = all(torch.equal(p.detach(), wi) for p, wi in zip(m.parameters(), w))
            seen.append((at_w, [p.grad.clone() for p in m.parameters()]))
        opt.step(lambda: F.cross_entropy(m(x), y).backward(), model=m, before_step=hook); opt.zero_grad()
    ref = reference_sam(small_net(), data, rho=0.05, lr=0.1, momentum=0.9, wd=5e-4)
    for a, b in zip(m.state_dict().values(), ref.state_dict().values()): torch.testing.assert_close(a, b)
    assert [s[0] for s in seen] == [True] * 3
    # the hook saw the gradient at w+ε of the last batch: recompute it from the weights before that step
    m2 = small_net(); o2 = SAM(m2.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, weight_decay=5e-4)
    _run(m2, data[:2], o2)
    x, y = data[2]
    F.cross_entropy(m2(x), y).backward(); o2.first_step(zero_grad=True)
    with frozen_bn_stats(m2): F.cross_entropy(m2(x), y).backward()
    for a, p in zip(seen[-1][1], m2.parameters()): torch.testing.assert_close(a, p.grad)


@pytest.mark.parametrize('rho', [0, 0., -0.05, float('nan'), float('inf'), -float('inf'), '0.05', None, True])
def test_bad_rho_raises(rho):
    with pytest.raises(ValueError, match='rho must be a finite number > 0'):
        SAM(small_net().parameters(), torch.optim.SGD, rho=rho, lr=0.1)
    with pytest.raises(ValueError, match='rho'):
        SAM([{'params': small_net().parameters(), 'rho': rho}], torch.optim.SGD, lr=0.1)


def test_base_optimizer_must_be_a_class():
    m = small_net()
    with pytest.raises(ValueError, match='optimizer class'):
        SAM(m.parameters(), torch.optim.SGD(m.parameters(), lr=0.1))


def test_norm_over_all_groups_and_every_param_restored():
    m = small_net()
    groups = [{'params': list(m[0].parameters()) + list(m[1].parameters())},
              {'params': [p for i in range(2, 9) for p in m[i].parameters()], 'rho': 0.05}]
    opt = SAM(groups, torch.optim.SGD, rho=0.05, lr=0.0)
    x, y = batches(1)[0]
    F.cross_entropy(m(x), y).backward()
    w = [p.detach().clone() for p in m.parameters()]
    g = [p.grad.clone() for p in m.parameters()]
    norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
    opt.first_step(zero_grad=True)
    for p, wi, gi in zip(m.parameters(), w, g): torch.testing.assert_close(p.detach(), wi + 0.05 * gi / norm)
    # second pass that reaches only the head: every other parameter has no gradient, all must be restored
    F.cross_entropy(m[8](torch.randn(4, 8)), y[:4]).backward()
    opt.second_step()
    for p, wi in zip(m.parameters(), w): assert torch.equal(p.detach(), wi)


def test_nonfinite_gradient_does_not_leave_weights_perturbed():
    m = small_net(); opt = SAM(m.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    w = [p.detach().clone() for p in m.parameters()]
    for p in m.parameters(): p.grad = torch.ones_like(p)
    next(m.parameters()).grad.view(-1)[0] = float('nan')
    opt.first_step(zero_grad=True)
    for p, wi in list(zip(m.parameters(), w))[1:]: assert torch.equal(p.detach(), wi)  # scale 0
    opt.restore()
    for p, wi in zip(m.parameters(), w): assert torch.equal(p.detach(), wi)
    # a failing second pass inside step() restores too
    for p in m.parameters(): p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match='boom'): opt.step(lambda: (_ for _ in ()).throw(RuntimeError('boom')))
    for p, wi in zip(m.parameters(), w): assert torch.equal(p.detach(), wi)


def test_state_dict_round_trip_resumes_exactly():
    data = batches(6)
    m1 = small_net(); o1 = SAM(m1.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    def train(m, o, bs):
        for x, y in bs:
            F.cross_entropy(m(x), y).backward(); o.first_step(zero_grad=True)
            with frozen_bn_stats(m): F.cross_entropy(m(x), y).backward()
            o.second_step(zero_grad=True)
    train(m1, o1, data[:3])
    sd_m, sd_o = copy.deepcopy(m1.state_dict()), copy.deepcopy(o1.state_dict())
    assert any('momentum_buffer' in s for s in sd_o['state'].values())  # the base optimizer's state is in SAM's
    train(m1, o1, data[3:])
    m2 = small_net(seed=5); m2.load_state_dict(sd_m)
    o2 = SAM(m2.parameters(), torch.optim.SGD, rho=0.9, lr=7.0, momentum=0.9); o2.load_state_dict(sd_o)
    assert o2.param_groups[0]['rho'] == 0.05 and o2.base_optimizer.param_groups[0]['lr'] == 0.1
    train(m2, o2, data[3:])
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()): torch.testing.assert_close(a, b)


def test_lr_scheduler_attaches_without_warning():
    m = small_net(); opt = SAM(m.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    x, y = batches(1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for _ in range(3):
            F.cross_entropy(m(x), y).backward(); opt.first_step(zero_grad=True)
            F.cross_entropy(m(x), y).backward(); opt.second_step(zero_grad=True); sched.step()
    assert opt.base_optimizer.param_groups[0]['lr'] == opt.param_groups[0]['lr'] == sched.get_last_lr()[0]
    assert opt.base_optimizer.param_groups[0]['momentum'] != 0.9  # momentum cycled too


def test_adam_base_optimizer():
    m = small_net(); opt = SAM(m.parameters(), torch.optim.Adam, rho=0.05, lr=1e-3)
    x, y = batches(1)[0]
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(m(x), y); loss.backward(); losses.append(loss.item())
        opt.step(lambda: F.cross_entropy(m(x), y).backward()); opt.zero_grad()
    assert losses[-1] < losses[0]
    assert 'exp_avg' in next(iter(opt.state_dict()['state'].values()))


def test_frozen_bn_stats_restores_everything():
    m = small_net(); m(torch.randn(4, 3, 8, 8))
    before = copy.deepcopy(m.state_dict())
    with frozen_bn_stats(m): m(torch.randn(4, 3, 8, 8) * 5)
    for k, v in m.state_dict().items(): assert torch.equal(v, before[k]), k
    with pytest.raises(KeyError):
        with frozen_bn_stats(m): m(torch.randn(4, 3, 8, 8)); raise KeyError
    for k, v in m.state_dict().items(): assert torch.equal(v, before[k]), k


def test_samcb_learner_runs_and_second_pass_does_not_touch_bn():
    data = digits(8, n_train=64)
    torch.manual_seed(0)
    opt = lambda ps: SAM(ps, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    class CountBN:  # BN counter advances once per batch (first pass only)
        order = 0
        def after_fit(self, learn): self.n = int(learn.model[0][1].num_batches_tracked)
    c = CountBN()
    learn = Learner(simple_cnn(widths=(4, 8)), data, opt=opt, cbs=[SAMCB(), OneCycle(), c], bs=16, progress=False)
    learn.fit(2)
    assert c.n == 2 * 4
    assert all(math.isfinite(r['train_loss']) for r in learn.history)


def test_samcb_rejects_bad_rho():
    with pytest.raises(ValueError, match='rho'): SAMCB(rho=-1)
