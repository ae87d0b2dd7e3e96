"Parameter counts, forward passes and argument validation of flatnb.models, flatnb.blurpool and flatnb.se"
import math, copy
import numpy as np
import pytest
import torch
from torch import nn
from flatnb.models import *
from flatnb.models import PAPER_ARCHS
from flatnb.blurpool import BlurPool2d, MaxBlurPool2d, BlurConv2d, blurpool, blur_filter
from flatnb.se import SqueezeExcite, squeeze_excite, SEConv2d

# the counts printed in `001` Tables 1-2 (typed in here again, not read from the module)
PAPER = dict(mnist_25k=25_144, mnist_7k=7_767, mnist_7k_dw=7_611, mnist_5k=5_712, mnist_5k_dw=5_616,
             mnist_1k5_dw=1_560, cifar_143k=143_208, cifar_143k_dw=143_396)

def count(m): return sum(p.numel() for p in m.parameters())

@pytest.mark.parametrize('name', list(PAPER))
def test_paper_counts_and_forward(name):
    m = MODELS[name]()
    assert count(m) == PAPER[name]
    assert PAPER_ARCHS[name][0] == PAPER[name]
    x = torch.randn(3, 1, 28, 28) if name.startswith('mnist') else torch.randn(3, 3, 32, 32)
    m.train(); y = m(x)
    assert y.shape == (3, 10) and torch.isfinite(y).all()
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    with torch.no_grad(): assert m(x).shape == (3, 10)

@pytest.mark.parametrize('name', list(PAPER))
def test_paper_models_other_io(name):
    cin = 3 if name.startswith('mnist') else 1
    m = get_model(name, num_classes=7, in_channels=cin)
    assert m(torch.randn(2, cin, 28, 28)).shape == (2, 7)

def test_known_counts():
    assert count(resnet18()) == 11_173_962
    assert count(mobilenet_v1(num_classes=1000)) == 4_231_976
    assert round(count(wrn(16, 8)) / 1e6, 1) == 11.0
    assert round(count(wrn(28, 10)) / 1e6, 1) == 36.5
    assert round(count(resnet_cifar(20)) / 1e6, 2) == 0.27
    assert round(count(resnet_cifar(56)) / 1e6, 2) == 0.85
    import torchvision
    assert count(mobilenet_v2()) == count(torchvision.models.mobilenet_v2(weights=None, num_classes=10))
    assert count(efficientnet_b0(1000)) == 5_288_548

@pytest.mark.parametrize('name', ['wrn', 'resnet18', 'resnet20', 'mobilenet_v1', 'mobilenet_v2', 'efficientnet_b0'])
def test_large_models_forward(name):
    m = get_model(name, num_classes=5, in_channels=1).eval()
    with torch.no_grad(): assert m(torch.randn(2, 1, 32, 32)).shape == (2, 5)

@pytest.mark.parametrize('fn', [mnist_25k, mnist_1k5_dw, cifar_143k_dw, wrn, resnet18, resnet_cifar, mobilenet_v1, mobilenet_v2, efficientnet_b0])
@pytest.mark.parametrize('kw, msg', [(dict(num_classes=1), 'num_classes'), (dict(num_classes=2.5), 'num_classes'),
                                     (dict(in_channels=0), 'in_channels'), (dict(in_channels=True), 'in_channels')])
def test_io_validation(fn, kw, msg):
    with pytest.raises(ValueError, match=msg): fn(**kw)

def test_other_validation():
    with pytest.raises(ValueError, match='6n\\+4'): wrn(depth=17)
    with pytest.raises(ValueError, match='width'): wrn(width=0)
    with pytest.raises(ValueError, match='dropout'): wrn(dropout=1.0)
    with pytest.raises(ValueError, match='6n\\+2'): resnet_cifar(depth=18)
    with pytest.raises(ValueError, match='shortcut'): resnet_cifar(shortcut='C')
    with pytest.raises(ValueError, match='unknown model'): get_model('vgg')
    with pytest.raises(ValueError, match='odd'): depthwise_separable(4, 8, kernel_size=2)
    with pytest.raises(ValueError, match='cout'): depthwise_separable(4, 0)

def test_depthwise_separable_count():
    for cin, cout in [(1, 1), (8, 12), (64, 128)]:
        assert count(depthwise_separable(cin, cout)) == 9*cin + cin*cout
        assert count(depthwise_separable(cin, cout, bias=True)) == 9*cin + cin + cin*cout + cout

# ---- BlurPool: against an explicit reflect-padded binomial depthwise conv ----

def _ref_blur(x, m, s):
    b = np.array([math.comb(m - 1, k) for k in range(m)], float)
    K = np.outer(b, b) / b.sum()**2
    p = (m - 1) // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode='reflect')
    H, W = xp.shape[-2:]
    out = np.zeros(x.shape[:2] + ((H - m) // s + 1, (W - m) // s + 1))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]): out[..., i, j] = (xp[..., i*s:i*s+m, j*s:j*s+m] * K).sum((-1, -2))
    return out

@pytest.mark.parametrize('m', range(1, 8))
@pytest.mark.parametrize('s', [1, 2])
def test_blurpool_reference(m, s):
    x = torch.randn(2, 3, 13, 10, dtype=torch.float64)
    np.testing.assert_allclose(BlurPool2d(3, m, s).double()(x).numpy(), _ref_blur(x.numpy(), m, s), atol=1e-12)

def test_blurpool_validation():
    for bad in (0, 8, 2.0):
        with pytest.raises(ValueError, match='filt_size'): BlurPool2d(3, bad)
    with pytest.raises(ValueError, match='stride'): BlurPool2d(3, 3, 0)
    with pytest.raises(ValueError, match='channels'): BlurPool2d(0)
    with pytest.raises(ValueError, match='built for 3'): BlurPool2d(3)(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match='too small'): BlurPool2d(3, 5)(torch.randn(1, 3, 2, 2))

@pytest.mark.parametrize('name', list(PAPER) + ['resnet18', 'resnet20', 'mobilenet_v2'])
def test_blurpool_surgery_keeps_count_and_shape(name):
    m0 = get_model(name).eval()
    cin = 1 if name.startswith('mnist') else 3
    x = torch.randn(2, cin, 28 if name.startswith('mnist') else 32, 28 if name.startswith('mnist') else 32)
    m1 = blurpool(copy.deepcopy(m0))
    assert count(m1) == count(m0)
    assert any(isinstance(l, (MaxBlurPool2d, BlurConv2d)) for l in m1.modules())
    with torch.no_grad():
        assert m1(x).shape == m0(x).shape
        torch.testing.assert_close(blurpool(copy.deepcopy(m0), filt_size=1)(x), m0(x), atol=1e-4, rtol=1e-4)

# ---- SE ----

def test_se_gate_by_hand():
    torch.manual_seed(1)
    se = SqueezeExcite(12, reduction=4)
    x = torch.randn(4, 12, 7, 5)
    z = x.mean((2, 3))
    s = torch.sigmoid(torch.relu(z @ se.fc1.weight.T + se.fc1.bias) @ se.fc2.weight.T + se.fc2.bias)
    torch.testing.assert_close(se(x), x * s[:, :, None, None])
    g = se.gate(x)
    assert g.shape == (4, 12) and (g > 0).all() and (g < 1).all()
    assert count(se) == 2*12*3 + 3 + 12

def test_se_surgery():
    m = cifar_143k_dw()
    n0 = count(m)
    squeeze_excite(m, min_channels=128, latent_channels=64)
    added = [l for l in m.modules() if isinstance(l, SEConv2d)]
    # convs with >= 128 outputs: Conv7 pw (128), Conv8 dw (128) + pw (192), Conv9 dw (192) + pw (260)
    assert sorted(l[0].out_channels for l in added) == [128, 128, 192, 192, 260]
    assert count(m) - n0 == sum(2*c*64 + 64 + c for c in (128, 128, 192, 192, 260))
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match='latent_channels'): squeeze_excite(m, latent_channels=-1)
    with pytest.raises(ValueError, match='min_channels'): squeeze_excite(m, min_channels=0)

# ---- the registry ----

def test_registry_one_signature():
    "Every entry takes (num_classes, in_channels) by keyword, simple_cnn of the Learner included"
    import inspect
    from flatnb.learner import simple_cnn
    assert MODELS['simple_cnn'] is simple_cnn
    for name, f in MODELS.items(): inspect.signature(f).bind(num_classes=4, in_channels=2)
    m = get_model('simple_cnn', 4, 2, widths=(4, 8))
    assert m(torch.randn(3, 2, 16, 16)).shape == (3, 4) and count(m) == count(simple_cnn(4, 2, (4, 8)))
    assert get_model('mnist_5k')[0][0].in_channels == 1 and get_model('cifar_143k')[0][0].in_channels == 3
    with pytest.raises(ValueError, match="unknown model 'vgg'; choose from simple_cnn, mnist_25k"): get_model('vgg')
