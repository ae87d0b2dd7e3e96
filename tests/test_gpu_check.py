"`benchmarks/gpu_check.py`: its CPU smoke test writes every section within its budget; a cut-off check still reports"
import dataclasses, json, os, signal, subprocess, sys, time
import pytest, torch
from conftest import ROOT

sys.path.insert(0, str(ROOT/'benchmarks'))
import bench_loader, gpu_check
from flatnb.core import random_crop

SCRIPT = ROOT/'benchmarks'/'gpu_check.py'
PARTS = ['env', 'loader', 'wrn16_8', 'compile', 'models', 'cli', 'projection', 'targets']
TITLES = ['## Device', '## Data loading', '## WRN-16-8 training throughput per method',
          '## WRN-16-8 with torch.compile', '## Other models', '## flatnb run gmix --preset paper',
          '## Projected wall time', '## Speed targets']

def run_check(out, *args, timeout=170):
    "The check on the CPU in a subprocess with one OpenMP thread; return (CompletedProcess, json, md, seconds)"
    t = time.monotonic()
    r = subprocess.run([sys.executable, str(SCRIPT), '--device', 'cpu', '--tiny', '--out', str(out), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    s = time.monotonic() - t
    return r, json.loads((out/'gpu_check.json').read_text()), (out/'gpu_check.md').read_text(), s

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return run_check(tmp_path_factory.mktemp('gpu_check'), '--profile', 'always')

def test_tiny_runs_every_part_within_a_minute(tiny):
    r, js, md, s = tiny
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    st = {k: p['status'] for k, p in js['parts'].items()}
    assert list(st) == PARTS and all(v == 'ok' for k, v in st.items() if k != 'compile'), st
    assert st['compile'].startswith('skipped')   # inductor's compilation alone would take minutes on a CPU
    assert all(t in md for t in TITLES) and '--tiny: a smoke test' in md
    assert js['meta']['elapsed_s'] < 60 and s < 90, (js['meta']['elapsed_s'], s)   # aim: ~10-30 s on 2 shared cores

def test_tiny_measures_every_method_model_and_loader(tiny):
    parts = tiny[1]['parts']
    w = parts['wrn16_8']['data']
    assert list(w['methods']) == ['SGD', 'SAM', 'ASAM', 'G-Mix', 'BG-Mix', 'DG-Mix']
    for m in w['methods'].values():   # images/s and the 50,000-image epoch follow from ms/step and the batch of 4
        assert len(m['ms_rounds']) == 2 and m['img_s'] == pytest.approx(4e3 / m['ms'])
        assert m['epoch_s'] == pytest.approx(50_000 / 4 * m['ms'] / 1e3)
    assert w['methods']['SGD']['vs_base']['median'] == 1 and w['eval']['images'] == 8
    assert set(parts['models']['data']['models']) == {'cifar_143k_dw cifar10', 'cifar_143k cifar10',
                                                      'efficientnet_b0 cifar10', 'mnist_1k5_dw mnist'}
    ld = parts['loader']['data']['loaders']
    assert len(ld) == 4 and ld['DeviceLoader']['ratio'] == 1 and all(v['rounds'] == 2 for v in ld.values())

def test_tiny_cli_writes_outputs_and_resumes(tiny):
    c = tiny[1]['parts']['cli']['data']
    assert c['ok'] and c['outputs']['runs_expected'] == 2 and c['rerun']['done_before'] == 2, c
    assert '--limit 32 --epochs 2 --seeds 1' in c['command']

def test_tiny_projection_and_targets(tiny):
    parts = tiny[1]['parts']
    rows = {(r['recipe'], r['preset']): r for r in parts['projection']['data']['presets']}
    g = rows[('gmix', 'paper')]
    assert g['arms'] == 14 and g['epochs'] == 200 and g['seeds'] == 3 and g['hours'] > 0
    assert 'hours' not in rows[('swwdirvae', 'paper')]   # not a classifier recipe
    t = parts['targets']['data']
    assert {v['status'] for v in t['targets'].values()} <= {'met', 'missed', 'not measured'}
    assert t['targets']['compile / eager']['status'] == 'not measured'
    w = parts['wrn16_8']['data']['methods']
    assert t['targets']['SAM / SGD epoch']['value'] == w['SAM']['vs_base']['median']
    assert 'wrn16_8 SAM' in t['profiles'] and len(t['profiles']['wrn16_8 SAM']) == 10

def check(tmp_path, budget_s=0.3, total_s=60):
    "A CPU check whose `models` part has `budget_s` seconds and whose total budget ends in `total_s` seconds"
    cfg = dataclasses.replace(gpu_check.TINY, budgets={**gpu_check.TINY.budgets, 'models': budget_s})
    ck = gpu_check.Check(cfg, torch.device('cpu'), tmp_path, time.monotonic() + total_s, 'never')
    ck.parts = {k: dict(status='not run yet', budget_s=cfg.budgets[k], data={}) for k in ('models', 'projection')}
    return ck

def slow_part(ck, d):
    "Measure something, save, then take 10 s"
    d['methods'] = {'SGD': 1.0}; ck.save(); time.sleep(10)

def test_a_part_past_its_budget_is_cut_off_and_keeps_what_it_measured(tmp_path):
    ck, old = check(tmp_path), signal.signal(signal.SIGALRM, gpu_check.on_signal)
    try: gpu_check.run_part(ck, 'models', slow_part)
    finally: signal.signal(signal.SIGALRM, old)
    p = json.loads((tmp_path/'gpu_check.json').read_text())['parts']['models']
    assert p['status'].startswith('cut off') and 0.3 <= p['seconds'] < 3 and p['data'] == {'methods': {'SGD': 1.0}}
    assert '*cut off after' in (tmp_path/'gpu_check.md').read_text()

def test_when_the_total_budget_is_spent_only_the_computing_parts_run(tmp_path):
    ck = check(tmp_path, total_s=-1)
    gpu_check.run_part(ck, 'models', slow_part)
    gpu_check.run_part(ck, 'projection', gpu_check.part_projection)
    st = {k: p['status'] for k, p in json.loads((tmp_path/'gpu_check.json').read_text())['parts'].items()}
    assert st == {'models': 'not run: the total budget is spent', 'projection': 'ok'}

@pytest.mark.parametrize('padding', [0, 1, 4])
def test_pixel_crop_is_random_crop(padding):
    "The benchmark's before-crop gives each image its own window of the zero-padded image, drawn as random_crop draws"
    x = torch.randn(5, 3, 6, 7)
    out = bench_loader.pixel_crop(x, padding, torch.Generator().manual_seed(3))
    if padding == 0: assert out is x; return
    dy, dx = torch.randint(0, 2*padding+1, (2, 5, 1), generator=torch.Generator().manual_seed(3))
    xp = torch.zeros(5, 3, 6 + 2*padding, 7 + 2*padding); xp[:, :, padding:-padding, padding:-padding] = x
    for i in range(5): assert torch.equal(out[i], xp[i, :, dy[i]:dy[i]+6, dx[i]:dx[i]+7])
    assert torch.equal(out, random_crop(x, padding, torch.Generator().manual_seed(3)))
