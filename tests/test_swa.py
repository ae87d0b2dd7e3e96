"Tests of flatnb.swa against independent computations: the plain mean of weight snapshots, BatchNorm statistics by hand, the LR schedules"
import math
from functools import partial

import pytest
import torch
from torch import nn

from flatnb.core import digits, set_seed
from flatnb.learner import Learner, Callback, Checkpoint, CancelFitException, OneCycle, simple_cnn
from flatnb.swa import SWA, CyclicSWA, recompute_bn, evaluate


class _Rec(Callback):
    order = -30
    def __init__(self): self.snaps, self.lrs = {}, []
    def after_train(self, learn): self.snaps[learn.epoch] = [p.detach().clone() for p in learn.model.parameters()]
    def after_pred(self, learn): self.lrs.append(learn.opt.param_groups[0]['lr'])


class _Stop(Callback):
    order = 200
    def __init__(self, at): self.at = at
    def after_epoch(self, learn):
        if learn.epoch == self.at: raise CancelFitException()


def _fit(cbs, n=6, seed=0, onecycle=True):
    set_seed(seed)
    rec = _Rec()
    learn = Learner(simple_cnn(widths=(4, 8)), digits(8, n_train=100, label_noise=0.1), opt=partial(torch.optim.SGD, lr=0.2, momentum=0.9),
                    cbs=([OneCycle()] if onecycle else []) + [*cbs, rec], bs=25, progress=False)
    return learn.fit(n), rec


def test_average_is_mean_of_snapshots():
    learn, rec = _fit([SWA(start=3)])
    swa = learn.cb(SWA)
    assert swa.captures == [3, 4, 5] and swa.n_averaged == 3
    for i, p in enumerate(learn.model.parameters()):
        torch.testing.assert_close(p.detach(), sum(rec.snaps[e][i] for e in (3, 4, 5)) / 3, atol=1e-6, rtol=1e-6)


def test_default_start_is_75_percent():
    learn, _ = _fit([SWA()], n=8)
    assert learn.cb(SWA).captures == [6, 7]


def test_bn_recomputed_by_hand():
    learn, _ = _fit([SWA(start=4)])
    m = learn.model
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    means, vars_ = [[] for _ in bns], [[] for _ in bns]
    with torch.no_grad():
        for xb, _ in learn.train_dl:
            h = xb
            for j, blk in enumerate(m[:len(bns)]):
                conv, bn = blk[0], blk[1]
                h = conv(h)
                mu, vb = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False)
                means[j].append(mu); vars_[j].append(h.var((0, 2, 3), unbiased=True))
                h = torch.relu((h - mu[:, None, None]) / torch.sqrt(vb[:, None, None] + bn.eps) * bn.weight[:, None, None] + bn.bias[:, None, None])
    for bn, mu, v in zip(bns, means, vars_):
        torch.testing.assert_close(bn.running_mean, torch.stack(mu).mean(0), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bn.running_var, torch.stack(v).mean(0), atol=1e-5, rtol=1e-5)


def test_history_reports_swa_and_sgd():
    learn, _ = _fit([SWA(start=4)])
    d = learn.data
    def acc(model):
        model.eval()
        with torch.no_grad(): return (model(d.x_test).argmax(1) == d.y_test).float().mean().item()
    assert abs(learn.history[-1]['test_acc'] - acc(learn.model)) < 1e-6
    sgd = simple_cnn(widths=(4, 8)); sgd.load_state_dict(learn.cb(SWA).sgd_state)
    assert abs(learn.history[-1]['sgd_test_acc'] - acc(sgd)) < 1e-6
    assert abs(evaluate(learn)['test_acc'] - acc(learn.model)) < 1e-6


def test_lr_takes_over_from_onecycle():
    learn, rec = _fit([SWA(start=3, swa_lr=0.03, anneal_epochs=0)])
    oc_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2, momentum=0.9)
    sch = torch.optim.lr_scheduler.OneCycleLR(oc_opt, max_lr=0.2, total_steps=24, pct_start=0.25, div_factor=25., final_div_factor=1e4)
    oc = []
    for _ in range(24): oc.append(oc_opt.param_groups[0]['lr']); oc_opt.step(); sch.step()
    assert rec.lrs[:12] == pytest.approx(oc[:12], abs=1e-12)
    assert rec.lrs[12:] == pytest.approx([0.03] * 12, abs=1e-12)


def test_linear_anneal_without_onecycle():
    learn, rec = _fit([SWA(start=2, swa_lr=0.05, anneal_epochs=2, anneal_strategy='linear')], onecycle=False)
    K = 8
    assert rec.lrs[:8] == pytest.approx([0.2] * 8)
    assert rec.lrs[8:] == pytest.approx([0.2 + (0.05 - 0.2) * k / K for k in range(K + 1)] + [0.05] * 7)


def test_cyclical():
    learn, rec = _fit([CyclicSWA(start=2, cycle=2, max_lr=0.1, swa_lr=0.02)])
    c = 8
    assert rec.lrs[8:] == pytest.approx([(1 - t) * 0.1 + t * 0.02 for t in [((i - 1) % c + 1) / c for i in range(1, 17)]])
    assert learn.cb(SWA).captures == [3, 5]
    for i, p in enumerate(learn.model.parameters()):
        torch.testing.assert_close(p.detach(), (rec.snaps[3][i] + rec.snaps[5][i]) / 2, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("mk", [lambda: SWA(start=3, swa_lr=0.05, anneal_epochs=1), lambda: SWA(start=3),
                                lambda: CyclicSWA(start=2, cycle=2), lambda: CyclicSWA(start=2, cycle=1, max_lr=0.3)])
def test_resume_exact(tmp_path, mk):
    ref, _ = _fit([mk(), Checkpoint(tmp_path / 'a.pt')])
    _fit([mk(), Checkpoint(tmp_path / 'b.pt'), _Stop(3)])
    res, _ = _fit([mk(), Checkpoint(tmp_path / 'b.pt')], seed=42)
    for a, b in zip(ref.model.state_dict().values(), res.model.state_dict().values()): assert torch.equal(a, b)
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith('time_s')} for r in h]
    assert strip(ref.history) == strip(res.history)


def test_recompute_bn_on_given_batches():
    set_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    d = digits(8, n_train=100)
    learn = Learner(net, d, progress=False)
    xs = [d.x_train[:40], d.x_train[40:100]]
    recompute_bn(learn, [(x, None) for x in xs])
    with torch.no_grad(): hs = [net[0](x) for x in xs]
    torch.testing.assert_close(net[1].running_mean, torch.stack([h.mean((0, 2, 3)) for h in hs]).mean(0))
    torch.testing.assert_close(net[1].running_var, torch.stack([h.var((0, 2, 3)) for h in hs]).mean(0))


@pytest.mark.parametrize("kw", [dict(start=1.0), dict(start=0), dict(start=-0.5), dict(swa_lr=0.0), dict(swa_lr=float('inf')),
                                dict(anneal_epochs=-1), dict(anneal_strategy='exp')])
def test_bad_args(kw):
    with pytest.raises(ValueError, match=next(iter(kw))): SWA(**kw)


@pytest.mark.parametrize("kw", [dict(cycle=0), dict(cycle=2.0), dict(max_lr=0.0), dict(swa_lr=-1.0),
                                dict(start=1.5)])
def test_bad_cyclic_args(kw):
    with pytest.raises(ValueError, match=next(iter(kw))): CyclicSWA(**kw)


def test_cyclic_defaults_from_the_lr_at_the_start():
    "α1 = the LR when the SWA phase starts (OneCycle's), α2 = α1/10; captures after each cycle of one epoch"
    learn, rec = _fit([CyclicSWA(start=4)])
    oc_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2, momentum=0.9)
    sch = torch.optim.lr_scheduler.OneCycleLR(oc_opt, max_lr=0.2, total_steps=24, pct_start=0.25, div_factor=25.,
                                              final_div_factor=1e4)
    for _ in range(16): oc_opt.step(); sch.step()
    a1 = oc_opt.param_groups[0]['lr']   # OneCycle's LR after the 16 steps of 4 epochs
    ts = [((i - 1) % 4 + 1) / 4 for i in range(1, 9)]
    assert rec.lrs[16:] == pytest.approx([(1 - t) * a1 + t * a1 / 10 for t in ts])
    assert learn.cb(SWA).captures == [4, 5]


def test_start_too_late():
    with pytest.raises(ValueError, match='no SWA epoch'): _fit([SWA(start=6)])
