"The `flatnb` command as a user meets it: help, bad input, a full cpu run, and resume after SIGKILL"
import csv, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import FLATNB, ROOT, flatnb

def test_help_lists_recipes_and_presets():
    for args in (['--help'], ['run', '--help']):
        r = flatnb(*args)
        assert r.returncode == 0 and 'baseline' in r.stdout and 'cpu' in r.stdout and 'paper' in r.stdout

@pytest.mark.parametrize('args, msg', [
    (['run', 'nope'], "unknown recipe 'nope'"),
    (['run', 'baseline', '--preset', 'gpu'], "unknown preset 'gpu'"),
    (['run', 'baseline', '--seeds', '0'], '--seeds must be >= 1'),
    (['run', 'baseline', '--epochs', '0'], '--epochs must be >= 1'),
    (['run', 'baseline', '--arms', 'sam'], 'unknown arm(s) sam'),
    (['run', 'baseline', '--preset', 'paper'], "data set 'mnist' is missing"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, msg):
    out = tmp_path/'out'
    r = flatnb(*args, '--out', out, '--data-root', tmp_path/'data', cwd=tmp_path)
    assert r.returncode == 2, r
    assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == [], list(tmp_path.rglob('*'))

def test_unwritable_out(tmp_path):
    (tmp_path/'file').write_text('x')  # a folder can't be made under a file, even as root
    r = flatnb('run', 'baseline', '--out', tmp_path/'file'/'out')
    assert r.returncode == 2 and 'not a writable folder' in r.stderr and len(r.stderr.strip().splitlines()) == 1

def read_csv(path): return list(csv.DictReader(open(path)))

def test_kill_and_resume_equals_uninterrupted(tmp_path):
    args = ['run', 'baseline', '--epochs', '6', '--seeds', '2']
    ref = flatnb(*args, '--out', tmp_path/'ref'); assert ref.returncode == 0, ref.stderr
    out = tmp_path/'killed'
    p = subprocess.Popen([*FLATNB, *args, '--out', str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out/'runs'/'baseline-seed1'/'ckpt.pt'   # kill during the second run, after some of its epochs
    t0 = time.time()
    while not ckpt.exists() and time.time() - t0 < 300 and p.poll() is None: time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL); p.wait()
    assert not (out/'results.csv').exists()
    assert (out/'runs'/'baseline-seed0'/'result.json').exists()
    r = flatnb(*args, '--out', out); assert r.returncode == 0, r.stderr
    assert 'done before' in r.stdout
    a, b = read_csv(tmp_path/'ref'/'results.csv'), read_csv(out/'results.csv')
    for ra, rb in zip(a, b):
        for k in ('arm', 'seed', 'epochs', 'train_acc', 'test_acc', 'gap'): assert ra[k] == rb[k], (k, ra, rb)
    assert (out/'results.md').exists() and (out/'results.png').exists()

def test_import_without_network():
    code = ("import socket\n"
            "def no(*a, **k): raise OSError('network disabled in this test')\n"
            "socket.socket.connect = no; socket.create_connection = no; socket.getaddrinfo = no\n"
            "import flatnb, flatnb.core, flatnb.learner, flatnb.experiment\n"
            "flatnb.core.digits(8)\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
