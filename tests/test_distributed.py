"torch.distributed with 2 CPU processes (gloo) under torchrun: same step as one process, files written once, clean errors"
import csv, subprocess, sys
from pathlib import Path
import pytest, torch
from conftest import ROOT, flatnb

SCRIPT = str(ROOT/'tests'/'ddp_train.py')

def torchrun(*args, n=2, timeout=300):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(n), '--rdzv-backend', 'c10d', '--rdzv-endpoint', 'localhost:0', *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

@pytest.mark.parametrize('opt', ['sgd', 'sam'])
def test_two_processes_match_one(tmp_path, opt):
    if opt == 'sam': pytest.importorskip('flatnb.sam')
    one = subprocess.run([sys.executable, SCRIPT, opt, str(tmp_path/'one.pt')], capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = torchrun(SCRIPT, opt, tmp_path/'two.pt'); assert two.returncode == 0, two.stderr[-3000:]
    a, b = torch.load(tmp_path/'one.pt'), torch.load(tmp_path/'two.pt')
    for k in a['weights']: torch.testing.assert_close(b['weights'][k], a['weights'][k], atol=1e-5, rtol=0)
    for ra, rb in zip(a['history'], b['history']):   # metrics reduced over ranks = the one-process metrics
        assert abs(ra['test_acc'] - rb['test_acc']) < 1e-6 and abs(ra['train_loss'] - rb['train_loss']) < 1e-4
        assert abs(ra['clean_train_acc'] - rb['clean_train_acc']) < 1e-6

def test_per_rank_sam_is_m_sharpness(tmp_path):
    "SAMCB(sync=False) on 2 ranks = one process that perturbs each half of every batch separately (m-sharpness, m = B/2)"
    pytest.importorskip('flatnb.sam')
    ref = subprocess.run([sys.executable, SCRIPT, 'msam-ref', str(tmp_path/'ref.pt')], capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    two = torchrun(SCRIPT, 'sam', tmp_path/'two.pt', '--sam-per-rank'); assert two.returncode == 0, two.stderr[-3000:]
    a, b = torch.load(tmp_path/'ref.pt'), torch.load(tmp_path/'two.pt')
    for k in a['weights']: torch.testing.assert_close(b['weights'][k], a['weights'][k], atol=1e-5, rtol=0)

def test_resume_under_torchrun(tmp_path):
    "A 2-process fit stopped after epoch 1 and resumed (every rank loads rank 0's checkpoint) ends like an uninterrupted one"
    ref = torchrun(SCRIPT, 'sgd', tmp_path/'ref.pt', '--epochs', '3'); assert ref.returncode == 0, ref.stderr[-3000:]
    ck = tmp_path/'ck.pt'
    first = torchrun(SCRIPT, 'sgd', tmp_path/'x.pt', '--epochs', '3', '--ckpt', ck, '--stop-after', '0'); assert first.returncode == 0, first.stderr[-3000:]
    second = torchrun(SCRIPT, 'sgd', tmp_path/'res.pt', '--epochs', '3', '--ckpt', ck); assert second.returncode == 0, second.stderr[-3000:]
    a, b = torch.load(tmp_path/'ref.pt'), torch.load(tmp_path/'res.pt')
    for k in a['weights']: torch.testing.assert_close(b['weights'][k], a['weights'][k], atol=0, rtol=0)
    assert [r['test_acc'] for r in a['history']] == [r['test_acc'] for r in b['history']]

def test_baseline_recipe_under_torchrun(tmp_path):
    args = ['run', 'baseline', '--epochs', '4', '--seeds', '1', '--device', 'cpu']
    one = flatnb(*args, '--out', tmp_path/'one'); assert one.returncode == 0, one.stderr
    two = torchrun('-m', 'flatnb', *args, '--backend', 'gloo', '--out', tmp_path/'two'); assert two.returncode == 0, two.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path/'two'/'results.csv')))
    assert len(rows) == 1 and two.stdout.count('[1/1]') == 1          # one writer, one log line
    ref = list(csv.DictReader(open(tmp_path/'one'/'results.csv')))[0]
    # BatchNorm sees 32 examples per rank instead of 64: close, not bit-equal (SyncBatchNorm is GPU-only in PyTorch)
    assert abs(float(rows[0]['test_acc']) - float(ref['test_acc'])) < 0.03, (rows, ref)

@pytest.mark.parametrize('args, n, msg', [
    (['--backend', 'smoke-signals'], 2, "unknown backend 'smoke-signals'"),
    ([], 3, 'batch size 64 is not divisible by the 3 processes'),
])
def test_bad_distributed_config_fails_on_every_rank(tmp_path, args, n, msg):
    r = torchrun('-m', 'flatnb', 'run', 'baseline', '--device', 'cpu', '--out', tmp_path/'o', *args, n=n, timeout=120)
    assert r.returncode != 0
    assert r.stderr.count(f'flatnb: error: ') == n and r.stderr.count(msg) == n, r.stderr[-2000:]   # one line from each rank
    assert 'exitcode  : 2' in r.stderr   # the ranks exit with status 2 (the traceback that follows is torchrun's own report)
    assert not (tmp_path/'o').exists()

def test_swa_batchnorm_statistics_pooled_across_ranks():
    r = torchrun(ROOT/'tests'/'ddp_bn.py', timeout=120)
    assert r.returncode == 0 and r.stdout.count('equal those of the union') == 2, r.stderr[-2000:]
