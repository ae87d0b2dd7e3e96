"""`flatnb measure RUN_DIR` on a finished `flatnb run`: flatness.csv with one row per run, numbers that an independent
call on the stored final weights reproduces, results.md with the new columns, results.csv untouched, a second measure
that skips, bad input in one line with exit 2, and a crafted model.pt that runs nothing."""
import csv, json, math, shutil
from pathlib import Path
import pytest, torch
from fastcore.test import test_close as close
from conftest import BASELINE_RUN as ARGS, flatnb
from flatnb.core import cross_entropy, load_dataset
from flatnb.experiment import Run, classifier_model, load_weights
from flatnb.flatness import hessian_top_eig, loss_and_acc
from flatnb.recipes import RECIPES
from test_safe_ckpt import ShellPayload, WritePayload, craft

MEASURE = ['--metrics', 'top_eig,trace', '--n-examples', '64']

def read_csv(path): return list(csv.DictReader(open(path)))

def one_line_exit_2(r, msg):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr, r.stderr

@pytest.fixture(scope='module')
def trained(finished_baseline):
    "A finished `flatnb run`, never measured: tests copy it"
    return finished_baseline

@pytest.fixture(scope='module')
def measured(trained, tmp_path_factory):
    "The finished run measured once: (folder, the command's result, results.csv before measuring)"
    out = tmp_path_factory.mktemp('measured')/'out'; shutil.copytree(trained, out)
    before = (out/'results.csv').read_text()
    return out, flatnb('measure', out, *MEASURE), before

def test_measure_writes_flatness_csv(measured):
    out, r, before = measured
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith('[1/1] baseline/baseline seed 0: top_eig ') and ', trace ' in lines[0], lines
    assert 'flatness.csv' in lines[-1] and 'results.md' in lines[-1], lines
    rows = read_csv(out/'flatness.csv')
    assert [(row['arm'], row['seed']) for row in rows] == [(row['arm'], row['seed']) for row in read_csv(out/'results.csv')]
    for row in rows:
        assert list(row) == ['arm', 'seed', 'top_eig', 'trace', 'trace_se'], row
        assert all(math.isfinite(float(row[k])) for k in ('top_eig', 'trace', 'trace_se')), row
    assert (out/'results.csv').read_text() == before   # what training wrote
    md = (out/'results.md').read_text()
    assert 'top_eig' in md and 'trace_se' in md and (out/'results.png').exists()
    assert not list(out.glob('.measure-*'))

def test_top_eig_equals_an_independent_call(measured):
    "The stored final weights, rebuilt and measured again by hand on the same subset, give the same eigenvalue"
    out, r, _ = measured
    (d,) = (out/'runs').iterdir()
    cfg, recipe = json.loads((d/'config.json').read_text()), RECIPES['baseline']
    data = load_dataset(cfg['data'], 'data', **cfg['data_kw']).head(cfg['limit'])
    torch.set_num_threads(cfg['threads'])
    model = load_weights(d/'model.pt', classifier_model(Run(recipe, 'baseline', 0, cfg), data))
    eig = hessian_top_eig(model, cross_entropy, data, n_examples=64, bs=256, seed=0)
    close(float(read_csv(out/'flatness.csv')[0]['top_eig']), eig, eps=1e-6 * max(1, abs(eig)))
    assert json.loads((d/'flatness.json').read_text())['top_eig']['n_examples'] == 64

def test_surface_writes_the_grid_and_its_centre_loss(measured, tmp_path):
    "`--metrics surface`: the 11 x 11 grid to surface.json; its centre is the loss of the stored weights, by hand"
    out = tmp_path/'out'; shutil.copytree(measured[0], out)
    r = flatnb('measure', out, '--metrics', 'surface', '--n-examples', '64'); assert r.returncode == 0, r.stderr
    (d,) = (out/'runs').iterdir()
    grid = json.loads((d/'surface.json').read_text())
    assert len(grid['loss']) == 121 and sorted(set(grid['alpha'])) == [(i - 5) / 5 for i in range(11)]
    cfg = json.loads((d/'config.json').read_text())
    data = load_dataset(cfg['data'], 'data', **cfg['data_kw']).head(cfg['limit'])
    torch.set_num_threads(cfg['threads'])
    model = load_weights(d/'model.pt', classifier_model(Run(RECIPES['baseline'], 'baseline', 0, cfg), data))
    loss0 = loss_and_acc(model, cross_entropy, data, n_examples=64, seed=0)[0]
    row = read_csv(out/'flatness.csv')[0]
    close(float(row['surface_loss0']), loss0, eps=1e-5)
    close(float(row['surface_rise']), sum(grid['loss']) / 121 - loss0, eps=1e-5)
    assert float(row['surface_rise']) > 0   # a trained minimum: the plane around it lies higher on average

def test_second_measure_skips(measured, tmp_path):
    out, r, _ = measured
    flat = (out/'flatness.csv').read_text()
    again = flatnb('measure', out, *MEASURE); assert again.returncode == 0, again.stderr
    assert 'measured before' in again.stdout.splitlines()[0], again.stdout
    assert (out/'flatness.csv').read_text() == flat

def test_a_new_metric_is_added_to_the_old_row(measured, tmp_path):
    out = tmp_path/'out'; shutil.copytree(measured[0], out)
    r = flatnb('measure', out, '--metrics', 'eps', '--n-examples', '64'); assert r.returncode == 0, r.stderr
    row = read_csv(out/'flatness.csv')[0]
    assert list(row) == ['arm', 'seed', 'top_eig', 'trace', 'trace_se', 'eps_sharpness'], row
    assert row['top_eig'] == read_csv(measured[0]/'flatness.csv')[0]['top_eig']

@pytest.mark.parametrize('args, msg', [
    (['--metrics', 'top_eig,nope'], "unknown metric 'nope'"),
    (['--n-examples', '0'], '--n-examples must be an integer >= 1'),
])
def test_bad_arguments(trained, args, msg):
    one_line_exit_2(flatnb('measure', trained, *args), msg)
    assert not (trained/'flatness.csv').exists()

def test_bad_folders(tmp_path, trained):
    one_line_exit_2(flatnb('measure', tmp_path/'nowhere'), 'is not a folder')
    one_line_exit_2(flatnb('measure', tmp_path), f'no results.csv in {tmp_path}')
    out = tmp_path/'old'; shutil.copytree(trained, out); (out/'run.json').unlink()
    one_line_exit_2(flatnb('measure', out), 'rerun the same flatnb run command once')

@pytest.mark.parametrize('payload', [ShellPayload, WritePayload])
def test_crafted_model_pt_runs_nothing(tmp_path, trained, payload):
    out, marker = tmp_path/'out', tmp_path/'pwned'; shutil.copytree(trained, out)
    (d,) = (out/'runs').iterdir()
    craft(d/'model.pt', payload(marker), 'torch')
    r = flatnb('measure', out, *MEASURE)
    one_line_exit_2(r, f"{d/'model.pt'} is not a valid flatnb weights file")
    assert 'nothing ran' in r.stderr and not marker.exists(), 'the payload ran'

def test_model_pt_of_another_model(tmp_path, trained):
    out = tmp_path/'out'; shutil.copytree(trained, out)
    (d,) = (out/'runs').iterdir()
    torch.save(torch.nn.Linear(3, 2).state_dict(), d/'model.pt')
    one_line_exit_2(flatnb('measure', out, *MEASURE), "does not fit this run's model")
