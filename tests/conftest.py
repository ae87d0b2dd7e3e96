import os, subprocess, sys
from pathlib import Path
import pytest, torch
from flatnb.learner import Callback, CancelFitException

ROOT = Path(__file__).resolve().parents[1]
FLATNB = [sys.executable, '-m', 'flatnb']

def flatnb(*args, cwd=None, timeout=600, **kw):
    "Run the `flatnb` command in a subprocess; return the CompletedProcess"
    return subprocess.run([*FLATNB, *map(str, args)], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout, **kw)

@pytest.fixture
def run_flatnb(): return flatnb

# a cheap finished run: the safe-checkpoint and measure tests start from it (each copies it before changing anything)
BASELINE_RUN = ['run', 'baseline', '--preset', 'cpu', '--epochs', '2', '--seeds', '1', '--limit', '256']

@pytest.fixture(scope='session')
def finished_baseline(tmp_path_factory):
    "The output folder of `flatnb BASELINE_RUN`, trained once per test session"
    out = tmp_path_factory.mktemp('baseline-run')
    r = flatnb(*BASELINE_RUN, '--out', out); assert r.returncode == 0, r.stderr
    return out

def restore_and_sgd_step_(model, stats, params, w, d, bufs, lr, momentum, wd):
    "Reference step of the SAM-family tests: put back BatchNorm `stats` and weights `w`, then SGD (momentum, weight decay) with direction `d`"
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in stats.items(): sd[k].copy_(v)
        for i, (p, wi, di) in enumerate(zip(params, w, d)):
            di = di + wd * wi
            bufs[i] = di.clone() if bufs[i] is None else momentum * bufs[i] + di
            p.copy_(wi - lr * bufs[i])

class StopAfter(Callback):
    "Simulate a crash: end the fit after epoch `n` (the checkpoint of that epoch is written)"
    order = 200
    def __init__(self, n): self.n = n
    def after_epoch(self, learn):
        if learn.epoch == self.n: raise CancelFitException()
