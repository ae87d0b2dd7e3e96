"The repository is consistent: README from nbs/index.ipynb, notebooks small and clean"
import json, subprocess, sys
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
