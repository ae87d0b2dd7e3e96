"""The stored results of the experiment notebooks (`results/RECIPE-PRESET/PATH/`) are data written by the code: each
run's configuration must be the one the code would run now (else the results are stale: regenerate them with the
notebook's `#| slow` cell, `store_results`), and a cheap rerun of one arm and one seed on this machine must land near
the stored row of the same floating-point path."""
import json
from pathlib import Path
import pytest, torch
from conftest import ROOT, flatnb
from flatnb.experiment import FP_PATHS, plan_runs, resolve, stored_dir
from flatnb.recipes import RECIPES
from flatnb.results import load_results

# the experiment notebooks' recipes, each with the arm a cheap rerun trains: one that ends somewhere stable (the
# constant-LR baselines of efficient and distance differ by up to 55 and 11 points between the two stored paths)
STORED = dict(efficient='swa', gmix='vanilla', swwdirvae='invcdf', distance='cosine_restarts')
# how far a rerun on another CPU may land from the stored row, in test accuracy. Between the two stored paths these arms
# differ by at most 2.0 (gmix/vanilla), 1.3 (efficient/swa), 1.2 (distance/cosine_restarts) and 0.5 (swwdirvae/invcdf)
# points over all their seeds: rounding alone moves them that far, and this allows 2.5 times the largest
TOLERANCE = 0.05
ROOT_RESULTS = ROOT/'results'
FASHION = ('baseline', 'gmix', 'distance')   # the recipes whose fashion preset is stored (on this machine's path only: 25-45 min each)
STORED_RUNS = [(r, 'cpu', p) for r in STORED for p in FP_PATHS] + [(r, 'fashion', 'native') for r in FASHION]

def test_every_experiment_is_stored_on_every_path():
    folders = {p.relative_to(ROOT_RESULTS).as_posix() for p in ROOT_RESULTS.glob('*/*') if p.is_dir()}
    assert folders == {f'{r}-{preset}/{p}' for r, preset, p in STORED_RUNS}, folders

@pytest.mark.parametrize('recipe, preset, path', STORED_RUNS)
def test_stored_results_are_not_stale(recipe, preset, path):
    "Each stored run is one the code would run now, with its configuration; results.csv lists exactly them"
    out = stored_dir(recipe, preset, path, ROOT_RESULTS)
    cfg, arm_cfgs = resolve(RECIPES[recipe], preset)
    planned = plan_runs(RECIPES[recipe], arm_cfgs, cfg['seeds'], out)
    same = lambda c: {k: v for k, v in json.loads(json.dumps(c, default=str)).items() if k != 'seeds'}   # as `run_key`
    stale = [j.dir.name for j in planned if not (j.dir/'result.json').exists()
             or same(json.loads((j.dir/'config.json').read_text())) != same(j.cfg)]
    assert not stale, f"stale or missing stored runs in {out} (rerun store_results({recipe!r})): {stale}"
    stored = {d.name for d in (out/'runs').iterdir()}
    assert stored == {j.dir.name for j in planned}, stored ^ {j.dir.name for j in planned}
    assert [(r['arm'], r['seed']) for r in load_results(out)] == [(j.arm, j.seed) for j in planned]
    machine = json.loads((out/'machine.json').read_text())
    assert machine['fp_path'] == path and all(machine[k] == v for k, v in FP_PATHS[path].items())

def _this_path():
    "The stored path this process computes on: 'default' when forced onto the portable kernels, else 'native'"
    return 'default' if torch.backends.cpu.get_cpu_capability() == 'DEFAULT' else 'native'

@pytest.mark.parametrize('recipe', STORED)
def test_cheap_rerun_lands_near_the_stored_row(tmp_path, recipe):
    path = _this_path(); arm = STORED[recipe]
    stored = stored_dir(recipe, 'cpu', path, ROOT_RESULTS)
    r = flatnb('run', recipe, '--arms', arm, '--seeds', '1', '--out', tmp_path, '--data-root', tmp_path/'data')
    assert r.returncode == 0, r.stderr[-3000:]
    new = load_results(tmp_path)[0]
    old = next(row for row in load_results(stored) if row['arm'] == arm and row['seed'] == 0)
    same_machine = json.loads((stored/'machine.json').read_text())['cpu_capability'] == torch.backends.cpu.get_cpu_capability()
    print(f"{recipe}/{arm} seed 0 on the {path} path: test_acc {new['test_acc']:.4f}, stored {old['test_acc']:.4f}"
          f" ({'same' if same_machine else 'another'} CPU capability)")
    assert abs(new['test_acc'] - old['test_acc']) <= TOLERANCE, (new, old)
