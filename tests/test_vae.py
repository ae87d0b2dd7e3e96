"Cross-cutting tests of flatnb.vae (kNN error, SWWAE / β-SWWDirVAE training, two-stage classifier, the recipe entry point) and of the soft pooling it rests on"
import json, math
import pytest
import torch
import torch.nn.functional as F
from flatnb.core import Data, digits
from flatnb.softpool import soft_pool2d, soft_unpool2d
from flatnb.vae import (SWWAE, BetaSWWDirVAE, SWWGaussVAE, knn_error, fit_vae, train_two_stage, train_swwdirvae,
                        SWWDIRVAE_PRESETS, swwdirvae_config, kl_anneal, beta_vae_loss)

@pytest.fixture(scope='module')
def small():
    return digits(16, n_train=200)

def test_soft_pool_and_unpool_gradcheck():
    x = torch.randn(1, 2, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_pool2d(t, 2, 1.3), (x,))
    w = torch.randn(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    p = (torch.rand(1, 2, 2, 3, 2, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()  # away from the kinks at cell centres
    assert torch.autograd.gradcheck(lambda a, b: soft_unpool2d(a, b, 2), (w, p))

def test_soft_pool_limits_on_random_batches():
    x = torch.randn(3, 4, 12, 12, dtype=torch.float64)
    for k in (2, 3, 4):
        what, where = soft_pool2d(x, k, math.inf)
        mx, idx = F.max_pool2d(x, k, return_indices=True)
        assert torch.equal(what, mx)
        assert torch.allclose(where[..., 0], ((idx % 12 % k) * (2 / (k - 1)) - 1.).double(), atol=1e-12)
        assert torch.allclose(where[..., 1], ((idx // 12 % k) * (2 / (k - 1)) - 1.).double(), atol=1e-12)
        assert torch.equal(soft_unpool2d(what, where, k), F.max_unpool2d(mx, idx, k, output_size=(12, 12)))
        what, where = soft_pool2d(x, k, 1e-12)
        assert torch.allclose(what, F.avg_pool2d(x, k), atol=1e-9) and where.abs().max() < 1e-9
    for bad in (0, -2., math.nan):
        with pytest.raises(ValueError, match='beta'): soft_pool2d(x, 2, bad)
    with pytest.raises(ValueError, match='divide'): soft_pool2d(x, 5)

@pytest.mark.parametrize('k', [1, 3, 5, 10])
def test_knn_error_matches_sklearn(k, small):
    from sklearn.neighbors import KNeighborsClassifier
    a, b = small.x_train.flatten(1), small.x_test.flatten(1)
    sk = 1 - KNeighborsClassifier(k).fit(a.numpy(), small.y_train.numpy()).score(b.numpy(), small.y_test.numpy())
    assert knn_error(a, small.y_train, b, small.y_test, k, chunk=97) == pytest.approx(sk, abs=1e-12)

def test_knn_error_rejects_bad_input():
    z, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    with pytest.raises(ValueError, match='k must be'): knn_error(z, y, z, y, 11)
    with pytest.raises(ValueError, match='disagree'): knn_error(z, y[:5], z, y, 3)

def test_swwae_supervised_training_lowers_all_terms(small):
    m = SWWAE(1, 16, (8, 16), n_classes=10)
    h = fit_vae(m, small, epochs=6, lr=3e-3, supervised=True, device='cpu')
    assert set(h[0]) >= {'loss', 'rec', 'mid', 'nll'}
    for key in ('loss', 'rec', 'nll'): assert h[-1][key] < h[0][key], (key, h)

@pytest.mark.parametrize('cls', [BetaSWWDirVAE, SWWGaussVAE])
def test_vae_training_is_finite_and_reproducible(cls, small):
    def run():
        torch.manual_seed(0); m = cls(1, 16, (8, 16), latent_dim=8)
        return m, fit_vae(m, small, epochs=3, warmup_epochs=1, seed=1, device='cpu')
    (m1, h1), (m2, h2) = run(), run()
    assert all(math.isfinite(v) for r in h1 for v in r.values())
    assert [r['loss'] for r in h1] == [r['loss'] for r in h2]
    assert h1[-1]['rec'] < h1[0]['rec']
    z = m1.represent(small.x_test)
    assert z.shape == (len(small.x_test), 8) and torch.isfinite(z).all()

def test_dirvae_implicit_method_trains(small):
    m = BetaSWWDirVAE(1, 16, (8, 16), latent_dim=8, method='implicit')
    h = fit_vae(m, small, epochs=2, device='cpu')
    assert all(math.isfinite(r['loss']) for r in h)

@pytest.mark.parametrize('rho', [None, 0.05])
def test_two_stage_keeps_encoder_frozen(rho, small):
    torch.manual_seed(0)
    m = BetaSWWDirVAE(1, 16, (8, 16), latent_dim=8)
    fit_vae(m, small, epochs=1, device='cpu')
    before = {k: v.clone() for k, v in m.state_dict().items()}
    learn = train_two_stage(m, small, epochs=3, rho=rho, device='cpu')
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    r = learn.history[-1]
    assert 0 <= r['test_acc'] <= 1 and r['gap'] == pytest.approx(r['test_acc'] - r['train_acc'])

def test_train_swwdirvae_end_to_end(tmp_path, small):
    cfg = {**SWWDIRVAE_PRESETS['cpu'], 'epochs': 2, 'warmup_epochs': 1, 'clf_epochs': 3, 'widths': (8, 16), 'latent_dim': 8}
    res = train_swwdirvae(cfg, small, seed=0, out_dir=tmp_path, device='cpu')
    for k in (3, 5, 10):
        for suf in ('', '_raw', '_gauss'): assert 0 <= res[f'knn{k}{suf}_err'] <= 1
    for key in ('test_acc', 'train_acc', 'gap', 'time_s'): assert key in res
    hist = res.pop('history')
    assert all(isinstance(v, float) and math.isfinite(v) for v in res.values())
    assert [r['epoch'] for r in hist] == list(range(2 + 3)) and [r['stage'] for r in hist] == ['vae'] * 2 + ['classifier'] * 3
    assert all(0 <= r['test_acc'] <= 1 for r in hist) and hist[-1]['test_acc'] == res['test_acc']
    assert all({'loss', 'rec', 'mid', 'kl', 'gauss_loss', 'gauss_kl'} <= set(r) for r in hist[:2])
    json.dumps(hist) # the runner stores it in result.json
    assert (tmp_path/'recon.png').stat().st_size > 0 and (tmp_path/'latent.png').stat().st_size > 0

def test_train_swwdirvae_stage_lengths_come_from_the_configuration(tmp_path, small):
    "epochs and clf_epochs set the two stages; warmup_epochs is epochs, a fraction of them, or 0, and never more"
    cfg = {**SWWDIRVAE_PRESETS['cpu'], 'epochs': 1, 'clf_epochs': 2, 'warmup_epochs': 0.5, 'widths': (4,), 'latent_dim': 4}
    hist = train_swwdirvae(cfg, small, seed=0, out_dir=tmp_path, device='cpu')['history']
    assert [r['stage'] for r in hist] == ['vae', 'classifier', 'classifier']
    for bad, msg in ((dict(epochs=0), 'epochs must be'), (dict(clf_epochs=1.5), 'clf_epochs must be'),
                     (dict(epochs=3, warmup_epochs=4), 'warmup_epochs \\(4\\) exceeds epochs \\(3\\)'),
                     (dict(warmup_epochs=1.5), 'warmup_epochs as a fraction')):
        with pytest.raises(ValueError, match=msg): train_swwdirvae({**cfg, **bad}, small, seed=0, out_dir=tmp_path)
    assert swwdirvae_config({**SWWDIRVAE_PRESETS['paper'], 'epochs': 3})['warmup_epochs'] == 1 # 0.1 of the epochs, >= 1
    assert swwdirvae_config(SWWDIRVAE_PRESETS['cpu'])['warmup_epochs'] == 5

def test_paper_preset_code_path_on_fabricated_cifar100(tmp_path):
    "The paper preset as shipped (EfficientNet-B0 head, widths 64-256, K = 50) on 64 + 32 CIFAR-100-shaped images, CPU"
    g = torch.Generator().manual_seed(0)
    d = Data(torch.randn(64, 3, 32, 32, generator=g), torch.arange(64) % 100, torch.randn(32, 3, 32, 32, generator=g),
             torch.arange(32) * 3 % 100, 100, 'fake-cifar100')
    cfg = {**SWWDIRVAE_PRESETS['paper'], 'epochs': 1, 'clf_epochs': 1, 'clf_bs': 16} # 4 steps: one-cycle needs 4
    res = train_swwdirvae(cfg, d, seed=0, out_dir=tmp_path, device='cpu')
    assert [r['stage'] for r in res['history']] == ['vae', 'classifier'] and 0 <= res['test_acc'] <= 1
    assert (tmp_path/'latent.png').stat().st_size > 0

def test_presets_and_helpers():
    assert set(SWWDIRVAE_PRESETS) == {'cpu', 'paper'}
    assert SWWDIRVAE_PRESETS['cpu']['dataset'] == 'digits' and SWWDIRVAE_PRESETS['paper']['clf_head'] == 'efficientnet_b0'
    assert kl_anneal(5, 2., 10) == 1.
    assert beta_vae_loss(torch.tensor([1.]), torch.tensor([1.]), 0.).item() == 1.
