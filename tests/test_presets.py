"""Every recipe × paper and fashion preset as shipped, on fabricated data of the real shapes (MNIST through torchvision's raw files,
the others as caches), on CPU: one short fit each, with every output written. `--limit` keeps it to a few batches;
`--epochs` is the least each recipe's arms accept (SWA, the distance penalty and 6 snapshot cycles need several)."""
import csv, resource, subprocess, sys
import pytest
from conftest import FLATNB, ROOT
from flatnb.core import fabricate_dataset, DATASETS
from flatnb.recipes import RECIPES

# (recipe, preset, epochs, extra args): every paper preset; the WRN presets run two arms (the model is the cost)
CASES = [('baseline', 'paper', 1, ['--set', 'bs=8']),   # 32 examples: 4 steps, what one-cycle needs
         ('gmix', 'paper', 1, ['--arms', 'vanilla,dgmix']),
         ('gmix', 'paper-cifar100', 1, ['--arms', 'bgmix']),
         ('gmix', 'paper-cifar100-resnet18', 1, ['--arms', 'sam']),
         ('gmix', 'paper-stl10', 1, ['--arms', 'gmix', '--limit', '16']),
         ('gmix', 'paper-svhn', 1, []),
         ('gmix', 'paper-fashion', 1, ['--arms', 'foret-sam+cutout', '--limit', '16']),   # WRN-28-10: 36M parameters
         ('efficient', 'paper', 4, []),
         ('efficient', 'paper-cifar10', 4, []),
         ('distance', 'paper', 6, []),
         ('distance', 'paper-mobilenet_v2', 6, ['--arms', 'distance-3,snapshot']),
         ('swwdirvae', 'paper', 1, ['--set', 'clf_epochs=1', '--set', 'clf_bs=8']),
         ('swwdirvae', 'paper-cifar100', 1, ['--set', 'clf_epochs=1', '--set', 'clf_bs=8', '--arms', 'implicit'])]
SHARP = ['--set', 'hessian_examples=32', '--set', 'hessian_bs=16', '--set', 'hessian_iters=2']
SHARP_CASES = {('gmix', 'paper-svhn'), ('efficient', 'paper'), ('distance', 'paper')}   # the Hessian metric, as shipped;
# the other presets skip it: it is the same code on a bigger model (on WRN-16-8 at 96×96 it took two thirds of the case)

def test_every_paper_preset_is_covered():
    covered = {(r, p) for r, p, *_ in CASES}
    assert covered == {(r.name, p) for r in RECIPES.values() for p in r.presets if p.startswith('paper')}

def test_fashion_presets_check(tmp_path):
    "Every fashion preset as shipped, on fabricated Fashion-MNIST of the real shape: data, settings and every arm against the fit"
    from flatnb.experiment import run
    fabricate_dataset('fashion_mnist', tmp_path, n_train=512, n_test=64)   # 4 batches: what one-cycle schedules need
    for r in RECIPES.values():
        assert run(r, 'fashion', data_root=tmp_path, dry_run=True, log=None, device='cpu') == []

@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    for name in DATASETS: fabricate_dataset(name, root, n_train=64, n_test=32)
    return root

@pytest.mark.parametrize('recipe, preset, epochs, extra', CASES, ids=[f'{r}-{p}' for r, p, *_ in CASES])
def test_paper_preset_runs(tmp_path, data_root, recipe, preset, epochs, extra):
    out = tmp_path/'out'
    args = ['run', recipe, '--preset', preset, '--epochs', epochs, '--seeds', '1', '--device', 'cpu', '--limit', '32',
            '--data-root', data_root, '--out', out, *extra]
    if recipe != 'swwdirvae': args += SHARP if (recipe, preset) in SHARP_CASES else ['--no-sharpness']
    # peak memory of the run itself: RUSAGE_CHILDREN of a wrapper that runs only it
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print('maxrss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")
    r = subprocess.run([sys.executable, '-c', code, *FLATNB, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    for f in ('results.csv', 'results.md', 'results.png'): assert (out/f).stat().st_size > 0, f
    rows = list(csv.DictReader(open(out/'results.csv')))
    assert rows and all(0 <= float(row['test_acc']) <= 1 for row in rows)
    if 'hessian_top_eig' in rows[0]: assert all(float(row['hessian_top_eig']) == float(row['hessian_top_eig']) for row in rows)
    rss_gb = int(r.stderr.rsplit('maxrss_kb', 1)[1].split()[0]) / 2**20
    assert rss_gb < 4, rss_gb
