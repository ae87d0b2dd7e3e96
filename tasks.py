#!/usr/bin/env python3
"""The two commands of the README, and the chores behind them. Needs only Python 3.11+ and pip.

    python3 tasks.py run      # the main job: `flatnb run gmix --preset cpu` on the embedded digits data
    python3 tasks.py test     # the whole test suite: nbdev_test, then pytest

Each creates (or reuses) .venv/ and installs exactly what it needs: the runtime requirements of settings.ini for
`run`, plus the development ones for `test`. Also:

    python3 tasks.py readme   # regenerate README.md from nbs/index.ipynb (Quarto-free)
    python3 tasks.py lab      # open the notebooks in JupyterLab
"""
import configparser, hashlib, os, shlex, subprocess, sys, venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT/'.venv'
BIN = VENV/('Scripts' if os.name == 'nt' else 'bin')
MAIN_JOB = ['flatnb', 'run', 'gmix', '--preset', 'cpu', '--out', 'runs/gmix-cpu']

def sh(*cmd, **kw):
    print('+', ' '.join(map(str, cmd)), flush=True)
    r = subprocess.run([str(c) for c in cmd], cwd=ROOT, **kw)
    if r.returncode: sys.exit(r.returncode)

def ensure_venv(dev:bool):
    "Create .venv if needed; install flatnb (editable) with its runtime (and, for `dev`, development) requirements"
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    reqs = shlex.split(cfg['DEFAULT']['requirements']) + (shlex.split(cfg['DEFAULT']['dev_requirements']) if dev else [])
    key = ' '.join(reqs).encode() + (ROOT/'setup.py').read_bytes() + (ROOT/'settings.ini').read_bytes()  # entry points too
    stamp = VENV/('.installed-' + hashlib.sha1(key).hexdigest()[:12])
    if stamp.exists(): return
    if not (BIN/'python').exists():
        print(f'creating {VENV}', flush=True); venv.create(VENV, with_pip=True)
    sh(BIN/'python', '-m', 'pip', 'install', '-q', '-e', '.[dev]' if dev else '.')
    for old in VENV.glob('.installed-*'): old.unlink()
    stamp.touch()

def readme():
    "README.md from nbs/index.ipynb, without Quarto"
    sh(BIN/'jupyter', 'nbconvert', '--to', 'markdown', '--log-level', 'WARN', '--TemplateExporter.exclude_input_prompt=True',
       '--output-dir', '.', '--output', 'README', 'nbs/index.ipynb')

def main(argv):
    cmd = argv[1] if len(argv) > 1 else ''
    env = {**os.environ, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if cmd == 'run':
        ensure_venv(dev=False); sh(*MAIN_JOB, *argv[2:], env=env)
    elif cmd == 'test':
        ensure_venv(dev=True)
        sh(BIN/'nbdev_test', '--n_workers', '2', '--timing', env={**env, 'OMP_NUM_THREADS': '1'})   # 2 notebooks at once, 1 thread each: no oversubscription
        sh(BIN/'python', '-m', 'pytest', '-q', 'tests', *argv[2:], env=env)
    elif cmd == 'readme': ensure_venv(dev=True); readme()
    elif cmd == 'lab': ensure_venv(dev=True); sh(BIN/'jupyter', 'lab', 'nbs', env=env)
    else: print(__doc__); sys.exit(2)

if __name__ == '__main__': main(sys.argv)
