#!/usr/bin/env python3
"""The two commands of the README, and the chores behind them. Needs only Python 3.11+ and pip.

    python3 tasks.py run      # the main job: `flatnb run gmix --preset cpu` on the embedded digits data
    python3 tasks.py test     # the whole test suite: nbdev_test, then pytest (both run; a summary at the end)

Each creates (or reuses) .venv/ and installs exactly what it needs: the runtime requirements of settings.ini for
`run`, plus the development ones for `test`. Also:

    python3 tasks.py readme   # regenerate README.md from nbs/index.ipynb (Quarto-free)
    python3 tasks.py docs     # the documentation: the site with Quarto (nbdev_docs), else plain HTML pages in _docs/
    python3 tasks.py lab      # open the notebooks in JupyterLab (with --allow-root when run as root)

`docs` never lets nbdev install Quarto: without it, nbdev_docs and nbdev_proc_nbs would run `sudo` and
`pip install -e ".[dev]"` with whatever pip comes first on PATH. Quarto: https://quarto.org/docs/get-started/
"""
import configparser, hashlib, json, os, re, shlex, shutil, subprocess, sys, time, venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT/'.venv'
BIN = VENV/('Scripts' if os.name == 'nt' else 'bin')
MAIN_JOB = ['flatnb', 'run', 'gmix', '--preset', 'cpu', '--out', 'runs/gmix-cpu']

def sh(*cmd, cwd=ROOT, **kw):
    print('+', ' '.join(map(str, cmd)), flush=True)
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, **kw)
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

def step(name, *cmd, env):
    "One step of the test command, its output shown as it comes; return (name, exit status, seconds, output lines)"
    print('+', ' '.join(map(str, cmd)), flush=True); t0 = time.time()
    p = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, bufsize=1)
    lines = []
    for line in p.stdout: sys.stdout.write(line); sys.stdout.flush(); lines.append(line.rstrip('\n'))
    return name, p.wait(), time.time() - t0, lines

def slowest(lines, n=8):
    "The slowest notebooks (nbdev_test --timing) and tests (pytest --durations) named in a step's output"
    nbs = [l for l in lines if re.fullmatch(r'\S+\.ipynb: \d+ secs', l)][:n]
    i = next((k for k, l in enumerate(lines) if 'slowest' in l and 'durations' in l), None)
    tests = [l for l in lines[i + 1:] if re.match(r'\d+\.\d+s ', l)][:n] if i is not None else []
    return nbs + tests

def test(args, env):
    "Every step, even after a failure; then the slowest notebooks and tests, which steps failed, and the exit status"
    t0 = time.time(); ensure_venv(dev=True); install_s = time.time() - t0
    steps = [step('nbdev_test', BIN/'nbdev_test', '--n_workers', '2', '--timing', env={**env, 'OMP_NUM_THREADS': '1'}),
             step('pytest', BIN/'python', '-m', 'pytest', '-q', '--durations', '10', 'tests', *args, env=env)]
    print(f"\n=== slowest notebooks and tests ===", *(f'  {l}' for s in steps for l in slowest(s[3])), sep='\n')
    print(f"=== summary (install {install_s:.0f}s) ===")
    for name, rc, secs, _ in steps: print(f"  {name}: {'passed' if rc == 0 else f'FAILED (exit {rc})'} in {secs:.0f}s")
    failed = [name for name, rc, *_ in steps if rc]
    print(f"  {'failed: ' + ', '.join(failed) if failed else 'all passed'}, {time.time() - t0:.0f}s in all", flush=True)
    sys.exit(1 if failed else 0)

def readme():
    "README.md from nbs/index.ipynb, without Quarto"
    sh(BIN/'jupyter', 'nbconvert', '--to', 'markdown', '--log-level', 'WARN', '--TemplateExporter.exclude_input_prompt=True',
       '--output-dir', '.', '--output', 'README', 'nbs/index.ipynb')

QUARTO_URL = 'https://quarto.org/docs/get-started/'
# nbdev_proc_nbs with nbdev's Quarto installer switched off (it would run sudo and pip install when Quarto is missing)
PROC_NBS = "import nbdev.quarto as q; q._ensure_quarto = lambda: None; q.nbdev_proc_nbs.__wrapped__()"

def docs_html(root:Path=ROOT, env=None) -> list[Path]:
    "Without Quarto: the notebooks of `root` processed into _proc/ (nbdev_proc_nbs), then each as plain HTML in _docs/"
    sh(BIN/'python', '-c', PROC_NBS, cwd=root, env=env)
    proc, out = root/'_proc', root/'_docs'
    for p in proc.rglob('*.ipynb'):   # nbdev marks the show_doc cells it adds with `has_sd`, which nbformat rejects
        nb = json.loads(p.read_text(encoding='utf-8'))
        if any('has_sd' in c for c in nb['cells']):
            for c in nb['cells']: c.pop('has_sd', None)
            p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    for folder in sorted({p.parent for p in proc.rglob('*.ipynb')}):
        sh(BIN/'jupyter', 'nbconvert', '--to', 'html', '--log-level', 'WARN', '--output-dir', out/folder.relative_to(proc),
           *sorted(folder.glob('*.ipynb')), cwd=root, env=env)
    pages = sorted(out.rglob('*.html'))
    print(f'{len(pages)} pages in {out}', flush=True)
    return pages

def docs(env, root:Path=ROOT):
    "The documentation site with Quarto (nbdev_docs); without Quarto, plain HTML pages (`docs_html`)"
    if shutil.which('quarto', path=env.get('PATH')): return sh(BIN/'nbdev_docs', cwd=root, env=env)
    print(f"Quarto is not installed, so the site cannot be built: get it from {QUARTO_URL} (then run this again).\n"
          "Meanwhile, plain HTML pages, rendered with nbconvert from _proc/ into _docs/ (nbdev's installer is not run).",
          flush=True)
    return docs_html(root, env)

def main(argv):
    cmd = argv[1] if len(argv) > 1 else ''
    env = {**os.environ, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if cmd == 'run':
        ensure_venv(dev=False); sh(*MAIN_JOB, *argv[2:], env=env)
    elif cmd == 'test': test(argv[2:], env)   # nbdev_test: 2 notebooks at once, 1 thread each (no oversubscription)
    elif cmd == 'readme': ensure_venv(dev=True); readme()
    elif cmd == 'docs': ensure_venv(dev=True); docs(env)
    elif cmd == 'lab':   # Jupyter refuses to start as root without --allow-root
        ensure_venv(dev=True); root = hasattr(os, 'geteuid') and os.geteuid() == 0
        sh(BIN/'jupyter', 'lab', 'nbs', *(['--allow-root'] if root else []), env=env)
    else: print(__doc__); sys.exit(2)

if __name__ == '__main__': main(sys.argv)
