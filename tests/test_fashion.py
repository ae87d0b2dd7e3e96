"""Fashion-MNIST: flatnb's tensors against an independent read of the Debian package's idx files
(`apt-get install dataset-fashion-mnist`; `.ci/run` installs it), one epoch of training on the real images, the one-line
error without the data, and the fabricated files that torchvision reads. The real-data tests skip where the package
is absent; the last two need nothing installed."""
import gzip, time
from pathlib import Path
import numpy as np
import pytest, torch
import flatnb.core as core
from flatnb.core import DataMissingError, Data, cached_dataset, fabricate_dataset, load_dataset, set_seed
from flatnb.learner import Learner, conv_bn
from torch import nn

PKG = Path('/usr/share/datasets/fashion-mnist')
FILES = dict(x_train='train-images-idx3-ubyte.gz', y_train='train-labels-idx1-ubyte.gz',
             x_test='t10k-images-idx3-ubyte.gz', y_test='t10k-labels-idx1-ubyte.gz')
needs_pkg = pytest.mark.skipif(not all((PKG/f).is_file() for f in FILES.values()),
                               reason=f"Debian package dataset-fashion-mnist not installed (no idx files in {PKG}); "
                                      "apt-get install dataset-fashion-mnist")

def read_pkg(key):
    "The package's file for `key`, read with gzip and numpy only: images (N, 1, 28, 28) after 16 header bytes, labels after 8"
    b = gzip.open(PKG/FILES[key], 'rb').read()
    a = np.frombuffer(b, np.uint8, offset=16 if key.startswith('x') else 8)
    return a.reshape(-1, 1, 28, 28) if key.startswith('x') else a

@pytest.fixture(scope='module')
def real(tmp_path_factory):
    "flatnb's tensors, read from the package into an empty --data-root (no download), and the time it took"
    root = tmp_path_factory.mktemp('data')
    t0 = time.perf_counter(); t = cached_dataset('fashion_mnist', root, download=False)
    return root, t, time.perf_counter() - t0

@needs_pkg
def test_tensors_equal_the_package_files(real):
    root, t, secs = real
    print(f"read from the package and cached in {secs:.1f}s")
    assert t['x_train'].shape == (60_000, 1, 28, 28) and t['x_test'].shape == (10_000, 1, 28, 28)
    assert t['y_train'].shape == (60_000,) and t['y_test'].shape == (10_000,)
    for k in FILES:
        assert t[k].dtype == (torch.uint8 if k.startswith('x') else torch.int64), k
        ref = read_pkg(k)
        assert np.array_equal(t[k].numpy(), ref.astype(t[k].numpy().dtype)), k
    assert np.array_equal(np.bincount(t['y_train'].numpy()), np.full(10, 6_000))   # 6,000 per class
    assert np.array_equal(np.bincount(t['y_test'].numpy()), np.full(10, 1_000))
    assert sorted(p.name for p in root.iterdir()) == ['fashion_mnist.pt']   # cached once, nothing else written
    again = cached_dataset('fashion_mnist', root, download=False)           # from the cache
    assert all(torch.equal(again[k], t[k]) for k in FILES)
    data = load_dataset('fashion_mnist', root)
    assert isinstance(data, Data) and data.n_classes == 10 and data.shape == (1, 28, 28)
    assert abs(data.x_train.mean().item()) < 1e-4 and abs(data.x_train.std().item() - 1) < 1e-3

@needs_pkg
def test_one_epoch_on_real_images(real):
    "One epoch of a small CNN (two stride-2 conv-BN-ReLU blocks, a linear head on the flattened map) on 4,000 real images"
    torch.set_num_threads(1); set_seed(0)
    full = load_dataset('fashion_mnist', real[0])
    data = Data(full.x_train[:4000], full.y_train[:4000], full.x_test[:2000], full.y_test[:2000], 10, 'fashion_mnist')
    model = nn.Sequential(conv_bn(1, 16, 2), conv_bn(16, 32, 2), nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
    opt = lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)
    learn = Learner(model, data, opt=opt, bs=64, device='cpu', clean_eval=False, progress=False)
    t0 = time.perf_counter(); learn.fit(1)
    acc, secs = learn.history[-1]['test_acc'], time.perf_counter() - t0
    print(f"one epoch on 4,000 real Fashion-MNIST images: test accuracy {acc:.3f} on 2,000 in {secs:.1f}s")
    assert acc > 0.7, acc   # chance is 0.1; seeds 0-2 give 0.80-0.81

def test_missing_names_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setattr(core, 'DEBIAN_FASHION', tmp_path/'no-package')
    with pytest.raises(DataMissingError) as e: cached_dataset('fashion_mnist', tmp_path/'data', download=False)
    msg = str(e.value)
    assert '\n' not in msg
    assert 'apt-get install dataset-fashion-mnist' in msg and str(tmp_path/'no-package') in msg
    assert f"{(tmp_path/'data').absolute()}/fashion_mnist/FashionMNIST/raw" in msg
    assert not (tmp_path/'data').exists()

def test_fabricated_files_load(tmp_path, monkeypatch):
    monkeypatch.setattr(core, 'DEBIAN_FASHION', tmp_path/'no-package')   # torchvision's files only
    raw = fabricate_dataset('fashion_mnist', tmp_path, n_train=200, n_test=50)
    assert raw == tmp_path/'fashion_mnist'/'FashionMNIST'/'raw'
    assert sorted(p.name for p in raw.iterdir()) == sorted(f.removesuffix('.gz') for f in FILES.values())
    data = load_dataset('fashion_mnist', tmp_path)
    assert data.x_train.shape == (200, 1, 28, 28) and data.x_test.shape == (50, 1, 28, 28) and data.n_classes == 10
    assert (tmp_path/'fashion_mnist.pt').is_file()
