"The repository is consistent: README from nbs/index.ipynb, notebooks small and clean"
import json, re, subprocess, sys
import pytest
from pathlib import Path
from conftest import ROOT

def test_readme_matches_index(tmp_path):
    subprocess.run([sys.executable, '-m', 'jupyter', 'nbconvert', '--to', 'markdown', '--log-level', 'WARN',
                    '--TemplateExporter.exclude_input_prompt=True', '--output-dir', str(tmp_path), '--output', 'README',
                    str(ROOT/'nbs'/'index.ipynb')], check=True)
    assert (tmp_path/'README.md').read_text() == (ROOT/'README.md').read_text(), \
        "README.md is out of date: run `python3 tasks.py readme`"

def test_notebooks_small():
    for nb in (ROOT/'nbs').glob('*.ipynb'): assert nb.stat().st_size < 1_000_000, nb

def test_readme_commands_are_the_ci_commands():
    readme, ci = (ROOT/'README.md').read_text(), (ROOT/'.ci'/'run').read_text()
    assert 'python3 tasks.py run' in readme and 'python3 tasks.py test' in readme and 'python3 tasks.py test' in ci

import ast
MODULES = sorted(p for p in (ROOT/'flatnb').glob('*.py') if p.name != '_modidx.py')

def test_lines_at_most_120():
    "`__all__` is written by nbdev_export, which wraps its list (not the `__all__ = ` prefix) at 120"
    long = [f'{p.name}:{i}' for p in MODULES for i, l in enumerate(p.read_text().splitlines(), 1)
            if len(l) > 120 and not l.startswith('__all__ = ')]
    assert not long, long

def imports(p):
    "The flatnb modules `p` imports, and the private names it takes from them"
    mods, private = set(), []
    for node in ast.walk(ast.parse(p.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and (node.level or node.module.startswith('flatnb')):
            m = node.module.split('.')[-1] if node.module != 'flatnb' else None
            if m: mods.add(m)
            private += [f'{m}.{a.name}' for a in node.names if a.name.startswith('_') and a.name != '__version__']
        elif isinstance(node, ast.Import):
            mods |= {a.name.split('.')[1] for a in node.names if a.name.startswith('flatnb.')}
    return mods, private

def test_modules_import_one_way_and_nothing_private():
    graph = {p.stem: imports(p)[0] for p in MODULES}
    assert not [(p.stem, imports(p)[1]) for p in MODULES if imports(p)[1]]
    seen, done = set(), set()
    def visit(m, path):
        assert m not in seen or m in done, f"import cycle: {' -> '.join(path + [m])}"
        if m in done: return
        seen.add(m)
        for n in graph.get(m, ()): visit(n, path + [m])
        done.add(m)
    for m in graph: visit(m, [])
    assert graph['experiment'] & {'recipes', 'cli'} == set() and 'cli' not in graph['recipes']

def test_one_way_to_validate():
    "Numeric settings are checked one way (`core.check_num`): a bool, NaN or inf is refused with the same message"
    from flatnb.gmix import GMix
    from flatnb.learner import Learner, cosine_restarts
    from flatnb.mixup import Cutout, LabelSmoothing, MixUp
    from flatnb.models import wrn
    from flatnb.sam import SAMCB
    from flatnb.swa import SWA
    makers = dict(rho=lambda v: SAMCB(rho=v), ratio=lambda v: GMix('bg', ratio=v), alpha=lambda v: MixUp(alpha=v),
                  eps=lambda v: LabelSmoothing(eps=v), swa_lr=lambda v: SWA(swa_lr=v), width=lambda v: wrn(width=v),
                  cycles=lambda v: cosine_restarts(cycles=v), size=lambda v: Cutout(size=v))
    for name, make in makers.items():
        for bad in (True, float('nan'), float('inf')):
            with pytest.raises(ValueError) as e: make(bad)
            assert re.fullmatch(rf"([a-z]+ )*{name} must be (a finite number|an integer)\b.*, got {re.escape(repr(bad))}",
                                str(e.value)), (name, bad, str(e.value))

def index_tables():
    "The README's results tables as the stored results give them: results.md of the native path, and both paths compared"
    from flatnb.experiment import FP_PATHS, stored_dir
    from flatnb.results import load_results, paths_table
    root = ROOT/'results'
    paths = {p: load_results(stored_dir('gmix', path=p, root=root)) for p in FP_PATHS}
    return (stored_dir('gmix', root=root)/'results.md').read_text().strip(), paths_table(paths).strip()

def test_index_tables_are_the_stored_results():
    "The results tables in the README are those of `results/gmix-cpu/`, not a hand copy that went stale"
    cells = [''.join(c['source']).strip() for c in json.load(open(ROOT/'nbs'/'index.ipynb'))['cells']]
    md, both = index_tables()
    assert md in cells and any(both in c for c in cells)
