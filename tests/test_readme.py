"""Every code block of README.md (made from nbs/index.ipynb) runs as written.

Python blocks run in order, as one script, in a fresh folder. Shell blocks run line by line: `flatnb ... run` commands
with `--dry-run` appended (every setting, the data and every arm are checked, nothing trains: the same commands train in
the final notebooks), other `flatnb` commands as written. `python3 tasks.py test` is CI itself and `torchrun` needs
several processes (tests/test_distributed.py runs it): those two are only checked to be well-formed."""
import json, re, shlex, subprocess, sys, time
from pathlib import Path
import pytest, torch
from conftest import FLATNB, ROOT
from flatnb.core import fabricate_dataset, DATASETS

README = (ROOT/'README.md').read_text()
BLOCKS = re.findall(r'^```(\w*)\n(.*?)^```', README, flags=re.M | re.S)

def shell_lines():
    return [l.split('  #')[0].strip() for lang, b in BLOCKS if lang == 'sh' for l in b.splitlines() if l.strip()]

def test_readme_has_code():
    assert any(lang in ('python', '') for lang, _ in BLOCKS) and shell_lines()

def test_python_blocks_run(tmp_path):
    code = '\n'.join(b for lang, b in BLOCKS if lang in ('python', ''))
    (tmp_path/'readme.py').write_text(code)
    r = subprocess.run([sys.executable, 'readme.py'], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]

@pytest.fixture(scope='module')
def cwd(tmp_path_factory):
    d = tmp_path_factory.mktemp('user')
    for name in DATASETS: fabricate_dataset(name, d/'data', 64, 32)
    return d

@pytest.mark.parametrize('line', shell_lines())
def test_shell_lines_run(cwd, line):
    args = shlex.split(line)
    if args[:2] == ['python3', 'tasks.py']:
        assert args[2] in ('run', 'test', 'readme', 'docs', 'lab'); return
    if args[0] == 'torchrun':
        assert args[args.index('-m') + 1] == 'flatnb' and 'run' in args; return
    if args[0] in ('python', 'python3') and args[1] == '-c':
        r = subprocess.run([sys.executable, *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr; return
    if args[0] == 'flatnb': args = args[1:]
    elif args[:3] == ['python', '-m', 'flatnb']: args = args[3:]
    else: pytest.fail(f'unexpected command in README: {line}')
    if 'run' in args: args += ['--dry-run']
    r = subprocess.run([*FLATNB, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    if '--device' in args and args[args.index('--device') + 1].startswith('cuda') and not torch.cuda.is_available():
        assert r.returncode == 2 and 'CUDA is not available' in r.stderr, r.stderr; return
    assert r.returncode == 0, r.stderr

def test_smoke_test_runs_as_shipped(tmp_path):
    "The README's smoke test of a paper preset, trained for real (not --dry-run), in a fresh folder; `--limit` also bounds the Hessian metric"
    lines = [shlex.split(l) for l in shell_lines() if 'smoke-data' in l]
    assert [a[0] for a in lines] == ['python', 'flatnb'], lines
    t0 = time.time()
    for args in lines:
        cmd = [sys.executable, *args[1:]] if args[0] == 'python' else [*FLATNB, *args[1:]]
        r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    print(f"README smoke test: {time.time() - t0:.0f}s")
    configs = [json.loads(f.read_text()) for f in tmp_path.glob('runs/smoke/runs/*/config.json')]
    assert len(configs) == 2 and all(c['hessian_examples'] <= 16 and c['hessian_iters'] <= 2 for c in configs)
    assert (tmp_path/'runs'/'smoke'/'results.md').exists()
