"The Learner's default progress output: a live bar in a real terminal and in a Jupyter kernel, silence in a pipe"
import os, shlex, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
# a 2-epoch fit with the DEFAULT settings (no `progress=` argument)
CODE = ('from flatnb.core import digits; from flatnb.learner import Learner, simple_cnn; '
        'Learner(simple_cnn(), digits(8)).fit(2)')
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}

def run(cmd:list) -> tuple[int, str, str]:
    "Exit code, stdout and stderr of `cmd`, decoded without translating '\\r' (text mode would turn it into '\\n')"
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout.decode(errors='replace'), r.stderr.decode(errors='replace')

@pytest.mark.skipif(shutil.which('script') is None, reason="needs util-linux `script` for a pseudo-terminal")
def test_default_bar_in_a_terminal():
    rc, out, err = run(['script', '-qec', f'{shlex.quote(sys.executable)} -c {shlex.quote(CODE)}', '/dev/null'])
    out += err
    assert rc == 0 and 'Traceback' not in out, out[-3000:]
    for s in ('epoch 1/2 batch 1/10 loss ', 'epoch 2/2 batch 10/10', ' acc ', ' left', '\r',
              'epoch train_loss train_acc test_loss test_acc', 'clean_gap'):
        assert s in out, (s, out[-3000:])
    rows = [l.split() for l in out.replace('\r', '\n').splitlines()]
    assert [r[0] for r in rows if len(r) == 8 and r[0].isdigit()] == ['0', '1'], out[-3000:]  # one row per epoch

def test_default_bar_in_a_jupyter_kernel(monkeypatch):
    nbformat, nbclient = pytest.importorskip('nbformat'), pytest.importorskip('nbclient')
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CODE.replace('; ', '\n'))])
    run_in = dict(metadata=dict(path=str(ROOT)))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name='python3', resources=run_in)
    client.execute()
    outs = nb.cells[0].outputs
    assert not [o for o in outs if o.output_type == 'error'], outs
    assert not any('Traceback' in o.get('text', '') for o in outs), outs
    shown = [o for o in outs if o.output_type == 'display_data']   # the bar, updated in place (one display)
    assert len(shown) == 1, outs
    text = shown[0].data['text/plain'].splitlines()
    assert text[0].split()[:3] == ['epoch', 'train_loss', 'train_acc'] and 'clean_gap' in text[0], text
    assert [l.split()[0] for l in text[1:]] == ['0', '1'], text   # the live line is gone once the fit ends

def test_silent_in_a_pipe():
    rc, out, err = run([sys.executable, '-c', CODE])
    assert rc == 0 and out == '', (out, err[-3000:])
    assert not any(c in err for c in '\r\x1b'), err[-3000:]
    rc, out, err = run([sys.executable, '-c', CODE.replace('digits(8))', 'digits(8), progress=True)')])
    assert rc == 0, err[-3000:]
    lines = out.split('\n')            # forced on in a pipe: the table rows only, no live line, no control characters
    assert len(lines) == 4 and lines[0].split()[0] == 'epoch' and lines[-1] == '', lines
    assert not any(c in out + err for c in '\r\x1b'), (out, err[-3000:])
