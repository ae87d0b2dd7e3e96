"Mixup, Cutout, label smoothing: against explicit loops / soft-target cross-entropy, validation, exact resume"
import math
from functools import partial
import pytest
import torch
import torch.nn.functional as F
from flatnb.mixup import mixup_batch, mix_loss, MixUp, cutout, Cutout, LabelSmoothing, EpochRNG
from flatnb.learner import Learner, Checkpoint, CancelFitException, Callback, OneCycle, simple_cnn
from flatnb.core import digits, cross_entropy, set_seed


def test_mixup_batch_and_loss_against_soft_targets():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 3, 4, 4, generator=g), torch.randint(0, 5, (9,), generator=g)
    perm = torch.randperm(9, generator=g)
    for lam in (0.0, 0.25, 1.0):
        xm, ya, yb = mixup_batch(x, y, lam, perm)
        for i in range(9):
            torch.testing.assert_close(xm[i], lam * x[i] + (1 - lam) * x[perm[i]])
        preds = torch.randn(9, 5, generator=g)
        soft = lam * F.one_hot(y, 5).float() + (1 - lam) * F.one_hot(y[perm], 5).float()
        torch.testing.assert_close(mix_loss(cross_entropy, preds, ya, yb, lam), F.cross_entropy(preds, soft))


@pytest.mark.parametrize('lam', [-0.1, 1.1, float('nan'), '0.5'])
def test_bad_lam(lam):
    with pytest.raises(ValueError, match='lam must be'):
        mixup_batch(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), lam, torch.arange(3))


@pytest.mark.parametrize('alpha', [0, -1, float('nan'), float('inf')])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match='alpha'): MixUp(alpha)


def test_cutout_against_loop_and_border():
    x = torch.randn(64, 1, 28, 28) + 5  # no natural zeros
    out = cutout(x, 10, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    cy, cx = torch.randint(0, 28, (64, 1), generator=g), torch.randint(0, 28, (64, 1), generator=g)
    for i in range(64):
        r0, c0 = int(cy[i]) - 5, int(cx[i]) - 5
        n = (min(r0 + 10, 28) - max(r0, 0)) * (min(c0 + 10, 28) - max(c0, 0))
        assert int((out[i] == 0).sum()) == n
        ref = x[i].clone(); ref[:, max(r0, 0):r0 + 10, max(c0, 0):c0 + 10] = 0
        assert torch.equal(out[i], ref)
    with pytest.raises(ValueError, match='cutout size'): cutout(x, 0)
    with pytest.raises(ValueError, match='cutout size'): Cutout(2.5)


def test_label_smoothing_validation():
    for eps in (-0.1, 1.0, float('nan')):
        with pytest.raises(ValueError, match='eps'): LabelSmoothing(eps)


def _fit(ckpt, n_epochs, cbs, stop_after=None):
    set_seed(1)
    class Stop(Callback):
        order = 200
        def after_epoch(self, learn):
            if learn.epoch == stop_after: raise CancelFitException()
    learn = Learner(simple_cnn(widths=(4, 8)), digits(8, n_train=60), opt=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
                    cbs=cbs() + [OneCycle(), Checkpoint(ckpt), Stop()], bs=20, progress=False)
    return learn.fit(n_epochs)


@pytest.mark.parametrize('cbs', [lambda: [MixUp(0.4)], lambda: [Cutout(3), MixUp(1.0), LabelSmoothing(0.1)]])
def test_resume_equals_uninterrupted(tmp_path, cbs):
    ref = _fit(tmp_path / 'a.pt', 4, cbs)
    _fit(tmp_path / 'b.pt', 4, cbs, stop_after=1)
    set_seed(99)
    res = _fit(tmp_path / 'b.pt', 4, cbs)
    for a, b in zip(ref.model.state_dict().values(), res.model.state_dict().values()): assert torch.equal(a, b)
    assert [r['train_loss'] for r in ref.history] == [r['train_loss'] for r in res.history]


def test_epoch_rng_depends_on_seed_salt_epoch():
    a = EpochRNG(0, 1).reset(0); b = EpochRNG(0, 1).reset(0); c = EpochRNG(0, 2).reset(0); d = EpochRNG(0, 1).reset(1)
    va, vb, vc, vd = (r.beta(1.0) for r in (a, b, c, d))
    assert va == vb and va != vc and va != vd
    assert torch.equal(a.perm(10), b.perm(10))
