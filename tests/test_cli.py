"The `flatnb` command as a user meets it: help, bad input, bad files, progress in a terminal and in a pipe, Ctrl-C, resume"
import csv, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from conftest import FLATNB, ROOT, flatnb
from flatnb.core import fabricate_dataset

def test_help_lists_recipes_and_presets():
    for args in (['--help'], ['run', '--help']):
        r = flatnb(*args)
        assert r.returncode == 0 and 'baseline' in r.stdout and 'cpu' in r.stdout and 'paper' in r.stdout

def one_line_exit_2(r, msg):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr, r.stderr

@pytest.mark.parametrize('args, msg', [
    (['run', 'nope'], "unknown recipe 'nope'"),
    (['run', 'baseline', '--preset', 'gpu'], "unknown preset 'gpu'"),
    (['run', 'baseline', '--seeds', '0'], '--seeds must be an integer >= 1'),
    (['run', 'baseline', '--epochs', '0'], '--epochs must be an integer >= 1'),
    (['run', 'baseline', '--epochs', 'x'], "invalid int value: 'x'"),
    (['run', 'baseline', '--limit', '0'], '--limit must be an integer >= 1'),
    (['run', 'baseline', '--arms', 'sam'], 'unknown arm(s) sam'),
    (['run', 'baseline', '--set', 'lrr=1'], '--set lrr: no such setting'),
    (['run', 'baseline', '--set', 'lr=fast'], "--set lr='fast': expected a value like 0.1"),
    (['run', 'baseline', '--set', 'lr'], 'expects key=value'),
    (['run', 'baseline', '--device', 'mps'], 'MPS is not available'),
    (['run', 'baseline', '--device', 'banana'], "unknown device 'banana'"),
    (['run', 'baseline', '--device', 'meta'], "unsupported device 'meta'"),
    (['run', 'baseline', '--device', 'cuda:0'], 'CUDA is not available'),
    (['run', 'baseline', '--preset', 'paper'], "data set 'mnist' is missing"),
    (['run', 'baseline', '--backend', 'mpi'], "unknown backend 'mpi'"),
    (['run', 'baseline', '--epochs', '1', '--limit', '64'], 'arm baseline: one-cycle needs at least 4 optimizer steps'),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, msg):
    if 'cuda' in ' '.join(args) and torch.cuda.is_available(): pytest.skip('CUDA is available here')
    r = flatnb(*args, '--out', tmp_path/'out', '--data-root', tmp_path/'data', cwd=tmp_path)
    one_line_exit_2(r, msg)
    assert list(tmp_path.iterdir()) == [], list(tmp_path.rglob('*'))

def test_unwritable_out(tmp_path):
    (tmp_path/'file').write_text('x')  # a folder can't be made under a file, even as root
    one_line_exit_2(flatnb('run', 'baseline', '--out', tmp_path/'file'/'out'), 'not a writable folder')

def test_arms_with_spaces(tmp_path):
    r = flatnb('run', 'gmix', '--arms', ' vanilla , sam,', '--epochs', '1', '--seeds', '1', '--limit', '256',
               '--no-sharpness', '--out', tmp_path/'o')
    assert r.returncode == 0, r.stderr
    assert [l['arm'] for l in read_csv(tmp_path/'o'/'results.csv')] == ['vanilla', 'sam']

@pytest.mark.parametrize('recipe, epochs, msg', [
    ('efficient', 1, 'arm swa: SWA'), ('distance', 1, 'arm distance:'), ('distance', 5, 'arm snapshot:')])
def test_paper_presets_validate_every_arm_up_front(tmp_path, recipe, epochs, msg):
    "An arm that cannot train in `--epochs` stops the whole plan within seconds, before anything is trained or written"
    for name in ('mnist', 'cifar10'): fabricate_dataset(name, tmp_path/'data', 512, 32)
    t0 = time.time()
    r = flatnb('run', recipe, '--preset', 'paper', '--epochs', epochs, '--data-root', tmp_path/'data', '--out', tmp_path/'out')
    one_line_exit_2(r, msg)
    assert time.time() - t0 < 60 and not (tmp_path/'out').exists()

@pytest.mark.parametrize('damage, msg', [
    (lambda f: f.write_bytes(f.read_bytes()[:300]), 'is not a readable cifar10 cache'),
    (lambda f: f.write_bytes(b''), 'is not a readable cifar10 cache'),
    (lambda f: f.write_bytes(b'not a torch file'), 'delete it and run again'),
    (lambda f: torch.save({k: v for k, v in torch.load(f).items() if k != 'y_test'}, f), 'no y_test'),
    (lambda f: torch.save({**torch.load(f), 'y_train': torch.load(f)['y_train'] + 10}, f), 'labels outside [0, 10)'),
])
def test_bad_cache_file_one_line(tmp_path, damage, msg):
    f = fabricate_dataset('cifar10', tmp_path/'data', 64, 32); damage(f)
    r = flatnb('run', 'gmix', '--preset', 'paper', '--data-root', tmp_path/'data', '--out', tmp_path/'out')
    one_line_exit_2(r, msg); assert str(f) in r.stderr and not (tmp_path/'out').exists()

def read_csv(path): return list(csv.DictReader(open(path)))

ARGS = ['run', 'baseline', '--epochs', '6', '--seeds', '2']
@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "The uninterrupted run that interrupted ones must reproduce"
    out = tmp_path_factory.mktemp('ref')
    r = flatnb(*ARGS, '--out', out); assert r.returncode == 0, r.stderr
    return read_csv(out/'results.csv')

def same_numbers(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for k in ('arm', 'seed', 'epochs', 'train_acc', 'clean_train_acc', 'test_acc', 'gap', 'clean_gap'):
            assert ra[k] == rb[k], (k, ra, rb)

def files_and_times(folder): return {f: f.stat().st_mtime_ns for f in folder.rglob('*') if f.is_file()}

@pytest.mark.parametrize('sig, jobs', [(signal.SIGKILL, 1), (signal.SIGINT, 1), (signal.SIGKILL, 2), (signal.SIGINT, 2)])
def test_interrupt_and_resume_equals_uninterrupted(tmp_path, reference, sig, jobs):
    "One job: interrupted during the second run. Two jobs: both runs in their worker processes, which stop with the parent"
    out = tmp_path/'out'
    # a shell's background job inherits SIGINT ignored, and Python keeps it so: restore the default, as a terminal has it
    p = subprocess.Popen([*FLATNB, *ARGS, '--jobs', str(jobs), '--out', str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ckpts = lambda: list((out/'runs').glob('baseline-seed1-*/ckpt.pt')) if (out/'runs').exists() else []
    t0 = time.time()   # interrupt during the second run, after some of its epochs
    while not ckpts() and time.time() - t0 < 300 and p.poll() is None: time.sleep(0.02)
    assert p.poll() is None, 'the run ended before it could be interrupted'
    p.send_signal(sig); _, err = p.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert p.returncode == 130, (p.returncode, err)
        assert err.strip() == 'flatnb: interrupted; run the same command again to resume', err
    assert not (out/'results.csv').exists()
    if jobs == 1: assert list((out/'runs').glob('baseline-seed0-*/result.json'))
    before = files_and_times(out); time.sleep(3)
    assert files_and_times(out) == before, 'a worker process went on training after the parent stopped'
    r = flatnb(*ARGS, '--jobs', str(jobs), '--out', out); assert r.returncode == 0, r.stderr
    assert jobs == 2 or 'done before' in r.stdout
    same_numbers(reference, read_csv(out/'results.csv'))
    assert (out/'results.md').exists() and (out/'results.png').exists()

def test_jobs_1_and_2_write_the_same_results_and_record_threads(tmp_path):
    "Every number but the times is the same whether the runs train one after the other or two at once"
    args = ['run', 'gmix', '--epochs', '3', '--seeds', '2', '--arms', 'vanilla,sam,dgmix', '--limit', '300']
    one, two = (flatnb(*args, '--jobs', j, '--out', tmp_path/j) for j in ('1', '2'))
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert '6 runs to train, 2 at once in worker processes' in two.stdout, two.stdout
    a, b = read_csv(tmp_path/'1'/'results.csv'), read_csv(tmp_path/'2'/'results.csv')
    assert [r['arm'] for r in a] == ['vanilla'] * 2 + ['sam'] * 2 + ['dgmix'] * 2
    for ra, rb in zip(a, b): assert {k: v for k, v in ra.items() if not k.endswith('_s')} == \
                                    {k: v for k, v in rb.items() if not k.endswith('_s')}
    configs = [json.loads(f.read_text()) for f in (tmp_path/'2'/'runs').glob('*/config.json')]
    assert len(configs) == 3 * 2 and all(c['threads'] == 1 for c in configs)
    r = flatnb(*args, '--seeds', '1', '--arms', 'vanilla', '--threads', '2', '--out', tmp_path/'t2')
    assert r.returncode == 0 and [json.loads(f.read_text())['threads'] for f in (tmp_path/'t2').rglob('config.json')] == [2]

@pytest.mark.parametrize('args, msg', [(['--jobs', '0'], '--jobs must be an integer >= 1'),
                                       (['--threads', '0'], '--threads must be an integer >= 1')])
def test_bad_jobs_and_threads(tmp_path, args, msg):
    one_line_exit_2(flatnb('run', 'baseline', *args, '--out', tmp_path/'o'), msg); assert not (tmp_path/'o').exists()

def test_rerun_with_other_settings_never_relabels(tmp_path, reference):
    out = tmp_path/'out'
    assert flatnb('run', 'baseline', '--epochs', '4', '--seeds', '1', '--out', out).returncode == 0
    r = flatnb(*ARGS, '--out', out); assert r.returncode == 0, r.stderr
    assert 'done before' not in r.stdout   # 6-epoch runs are new runs, not the 4-epoch results relabelled
    same_numbers(reference, read_csv(out/'results.csv'))

def test_progress_in_a_terminal_and_quiet_in_a_pipe(tmp_path):
    "Defaults as shipped: a live bar under a TTY (`script` gives the command a real terminal); piped, plain lines"
    if not shutil.which('script'): pytest.skip('needs `script` (util-linux)')
    cmd = ' '.join([sys.executable, '-m', 'flatnb', 'run', 'baseline', '--epochs', '2', '--seeds', '1', '--out', str(tmp_path/'tty')])
    r = subprocess.run(['script', '-qec', cmd, '/dev/null'], cwd=ROOT, capture_output=True, timeout=600)
    out = r.stdout.decode()   # bytes: text mode would turn the bar's carriage returns into newlines
    assert r.returncode == 0 and 'Traceback' not in out, out
    assert '[1/1] baseline/baseline seed 0' in out and 'epoch 2/2 batch' in out and 'results:' in out, out
    assert '\r' in out.replace('\r\n', '')   # the live bar redraws its line
    p = flatnb('run', 'baseline', '--epochs', '2', '--seeds', '1', '--out', tmp_path/'pipe')
    assert p.returncode == 0 and '\r' not in p.stdout + p.stderr and '\x1b' not in p.stdout + p.stderr, p.stdout
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith('[1/1] baseline/baseline seed 0: test_acc') and 'results.csv' in lines[1]

def test_import_without_network():
    code = ("import socket\n"
            "def no(*a, **k): raise OSError('network disabled in this test')\n"
            "socket.socket.connect = no; socket.create_connection = no; socket.getaddrinfo = no\n"
            "import flatnb, flatnb.core, flatnb.learner, flatnb.experiment, flatnb.recipes, flatnb.cli\n"
            "flatnb.core.digits(8)\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_dgmix_trains_under_compile(tmp_path):
    "DG-Mix back-propagates two forwards at w+ε; under torch.compile that must not reuse a compiled graph's buffers"
    r = flatnb('run', 'gmix', '--arms', 'dgmix', '--compile', '--epochs', '1', '--seeds', '1', '--limit', '256',
               '--no-sharpness', '--out', tmp_path/'o')
    assert r.returncode == 0, r.stderr[-3000:]
    row = read_csv(tmp_path/'o'/'results.csv')[0]
    assert row['arm'] == 'dgmix' and 0 <= float(row['test_acc']) <= 1 and 'hessian_top_eig' not in row
    assert '"compile": true' in next((tmp_path/'o'/'runs').glob('dgmix-seed0-*/config.json')).read_text()
