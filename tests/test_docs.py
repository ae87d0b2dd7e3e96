"""The documentation builds and reads well.

`nbdev_proc_nbs`, the first step of `nbdev_docs` and `nbdev_preview`, runs on a copy of nbs/ (every notebook) with no
error and no "Found cells containing imports and other code" warning: nbdev executes every cell with an import when it
builds the docs, so an import shares its cell with nothing else and building the docs runs nothing but imports (plus
the exported cells and `show_doc`). The processed pages document each entry once, give every entry a docstring and keep
Markdown links and LaTeX out of the signatures. `python3 tasks.py docs` without Quarto renders plain HTML pages.
nbdev's Quarto installer (sudo, then `pip install -e .[dev]` with the first pip on PATH) is switched off throughout."""
import collections, importlib.util, json, os, re, shutil, subprocess, sys, warnings
from pathlib import Path
import pytest
from conftest import ROOT

_spec = importlib.util.spec_from_file_location('tasks', ROOT/'tasks.py')
tasks = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(tasks)

WARNING = 'Found cells containing imports and other code'
NOTEBOOKS = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb'))
QUARTO_FILES = ('_quarto.yml', 'nbdev.yml', 'sidebar.yml', 'styles.css')

def copy_project(dest:Path, notebooks=None) -> Path:
    "settings.ini and nbs/ (every notebook, or only `notebooks`) in `dest`: nbdev finds its config from the cwd up"
    shutil.copy(ROOT/'settings.ini', dest)
    (dest/'nbs').mkdir()
    for name in notebooks or NOTEBOOKS: shutil.copy(ROOT/'nbs'/name, dest/'nbs')
    for name in QUARTO_FILES:
        if (ROOT/'nbs'/name).exists(): shutil.copy(ROOT/'nbs'/name, dest/'nbs')
    return dest

def no_quarto_env() -> dict:
    "The environment with the venv first on PATH and no folder that holds a `quarto`"
    path = [str(tasks.BIN)] + [d for d in os.environ.get('PATH', '').split(os.pathsep)
                               if d and not (Path(d)/'quarto').exists()]
    return {**os.environ, 'PATH': os.pathsep.join(path)}

def problems(output:str) -> list[str]:
    "Tracebacks, errors and nbdev's 'imports and other code' warnings (with the offending cell) in `output`"
    res = [f'warning, cell:\n{m}' for m in re.findall(WARNING + r'.*?\n---\n(.*?)\n---\n', output, re.S)]
    if WARNING in output and not res: res.append(WARNING)
    res += [l for l in output.splitlines() if re.match(r'(Traceback|\w*(Error|Exception)\b.*:|\[\w+\] (ERROR|CRITICAL))', l)]
    return res

def entries(nb:dict) -> list[tuple[str, str]]:
    "(name, markdown) of each `show_doc` entry in a processed notebook"
    res = []
    for c in nb['cells']:
        for o in c.get('outputs', []):
            md = ''.join(o.get('data', {}).get('text/markdown', ''))
            m = re.search(r'^#+ (.+)$', md, re.M)
            if m and '```python' in md: res.append((m.group(1).strip(), md))
    return res

def page_defects(nb:dict) -> list[str]:
    "Entries documented twice, without a docstring, or with a Markdown link or LaTeX in the signature"
    es = entries(nb)
    res = [f'{n} documented {k} times' for n, k in collections.Counter(n for n, _ in es).items() if k > 1]
    for name, md in es:
        sig = ''.join(re.findall(r'```python\n(.*?)```', md, re.S))
        if 'Call self as a function' in md: res.append(f'{name}: no docstring ("Call self as a function.")')
        if re.search(r'\]\(\S+\)', sig): res.append(f'{name}: a Markdown link in the signature')
        if re.search(r'\$[^$\n]+\$', sig): res.append(f'{name}: LaTeX in the signature')
    return res

def proc_nbs(root:Path, timeout=1800) -> str:
    "Run nbdev_proc_nbs (Quarto installer off) in `root`; its exit status must be 0. Returns stdout and stderr"
    r = subprocess.run([sys.executable, '-c', tasks.PROC_NBS], cwd=root, env=no_quarto_env(), capture_output=True,
                       text=True, timeout=timeout)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    return out

@pytest.mark.parametrize('name', NOTEBOOKS)
def test_import_cells_hold_only_imports(name):
    "nbdev's own rule (`_do_eval`), per notebook: a cell it runs for its imports holds nothing else (fast, names the cells)"
    from nbdev.process import NBProcessor
    from nbdev.processors import _do_eval
    bad = []
    for i, cell in enumerate(NBProcessor(ROOT/'nbs'/name, procs=[]).nb.cells):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always'); _do_eval(cell)
        if any(WARNING in str(x.message) for x in w): bad.append(f'cell {i}:\n{cell.source}')
    assert not bad, '\n\n'.join(bad)

@pytest.fixture(scope='module')
def processed(tmp_path_factory):
    "A copy of the project with every notebook of nbs/ processed for the docs (about a minute); and nbdev's output"
    root = copy_project(tmp_path_factory.mktemp('docs'))
    return root, proc_nbs(root)

def test_proc_nbs(processed):
    "Every notebook of nbs/ processes for the docs: exit status 0, no error, no 'imports and other code' warning"
    root, out = processed
    assert not problems(out), '\n\n'.join(problems(out))[-8000:]
    procd = {p.name for p in (root/'_proc').glob('*.ipynb')}
    assert procd == set(NOTEBOOKS), set(NOTEBOOKS) - procd

def test_pages_clean(processed):
    "Each entry documented once, with a docstring, and no Markdown link or LaTeX in a signature, on every page"
    root, _ = processed
    defects = {n: page_defects(json.loads((root/'_proc'/n).read_text())) for n in NOTEBOOKS}
    defects = {n: d for n, d in defects.items() if d}
    assert not defects, defects

# The pages the issue reads: the Learner's (patched methods, hooks, signature), SAM's (patched `@torch.no_grad()`
# methods) and the flatness measures' (signatures). The whole of nbs/ takes minutes; these three, well under one.
DOCS_NBS = ['01_learner.ipynb', '05_sam.ipynb', '13_flatness.ipynb']

def test_docs_without_quarto(tmp_path, capfd):
    "`tasks.py docs` with no Quarto on PATH: says so, never installs, renders one HTML page per notebook into _docs/"
    env = no_quarto_env()
    assert shutil.which('quarto', path=env['PATH']) is None
    pages = tasks.docs(env, root=copy_project(tmp_path, DOCS_NBS))
    out = capfd.readouterr(); out = out.out + out.err
    assert 'Quarto is not installed' in out and tasks.QUARTO_URL in out
    assert not problems(out), '\n\n'.join(problems(out))[-8000:]
    assert [p.name for p in pages] == [n.replace('.ipynb', '.html') for n in DOCS_NBS]
    assert not (tmp_path/'.installing').exists()                         # nbdev's installer did not start
    for n in DOCS_NBS:
        nb = json.loads((tmp_path/'_proc'/n).read_text())
        assert not page_defects(nb), (n, page_defects(nb))
    names = {n for name in DOCS_NBS for n, _ in entries(json.loads((tmp_path/'_proc'/name).read_text()))}
    assert {'SAM.first_step', 'SAM.restore', 'SAM.second_step', 'SAM.load_state_dict', 'SAM.step', 'Learner.fit',
            'Learner.evaluate', 'Learner.default_train_step', 'interpolate', 'loss_along'} <= names, names
    html = (tmp_path/'_docs'/'05_sam.html').read_text()
    assert 'SAM.first_step' in html and '<html' in html
