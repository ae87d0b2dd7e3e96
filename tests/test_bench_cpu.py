"`benchmarks/bench_cpu.py`: its --tiny smoke test writes the four tables, with a number in every measured cell"
import re, subprocess, sys, time
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT/'benchmarks'))
import bench_cpu

SCRIPT = ROOT/'benchmarks'/'bench_cpu.py'
NUMBER = re.compile(r'^[\d,]+(\.\d+)?( %|×)?( \([\d.-]+\))?')

def table(md:str, title:str) -> list[dict]:
    "The rows of the Markdown table in section `## title`, as dicts keyed by the header"
    body = md.split(f'## {title}\n', 1)[1].split('\n## ', 1)[0]
    lines = [l for l in body.splitlines() if l.startswith('|')]
    cells = lambda l: [c.strip() for c in l.strip('|').split('|')]
    return [dict(zip(cells(lines[0]), cells(l))) for l in lines[2:]]

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench_cpu')/'cpu.md'
    t = time.monotonic()
    r = subprocess.run([sys.executable, str(SCRIPT), '--tiny', '--out', str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=240)
    return r, out.read_text() if out.exists() else '', time.monotonic() - t

def test_tiny_runs_without_error_within_two_minutes(tiny):
    r, md, s = tiny
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stdout[-2000:] + r.stderr[-3000:]
    assert s < 120, s   # ~40 s on 2 shared cores (the HVP rows start 4 fresh processes)
    assert '--tiny`: a smoke test' in md and '*not measured*' not in md and 'n/a' not in md
    assert md.startswith('# CPU training speed') and 'CPU capability' in md

def test_tiny_writes_the_four_tables_with_numbers(tiny):
    md = tiny[1]
    thr = table(md, bench_cpu.TITLES[0])
    assert [(r['model'], r['threads']) for r in thr] == [('mnist_1k5_dw', '1'), ('mnist_7k', '1')]
    assert thr[1]['MFLOP/image fwd / fwd+bwd'] == '3.07 / 9.09'   # counted, as the 9.09 MFLOP of mnist_7k
    ev = table(md, bench_cpu.TITLES[1])
    assert [r['model'] for r in ev] == ['mnist_1k5_dw', 'mnist_7k']
    tech = table(md, bench_cpu.TITLES[2])
    assert [r['technique'] for r in tech] == [*bench_cpu.TECHNIQUES, 'BG-Mix(0.5) / G-Mix']
    assert tech[0]['relative to SGD'].startswith('1.00×')
    hvp = table(md, bench_cpu.TITLES[3])
    assert [r['model'] for r in hvp] == list(bench_cpu.HVP_MODELS)
    for row in thr + ev + tech[:-1] + hvp:
        for k, v in row.items():
            if k not in ('model', 'technique', 'threads', 'MFLOP/image fwd / fwd+bwd'): assert NUMBER.match(v), (k, v)
    assert NUMBER.match(tech[-1]['relative to SGD'])

def test_tiny_sets_defaults_that_explicit_options_override():
    a = bench_cpu.parse(['--tiny', '--rounds', '2'])
    assert a.rounds == 2 and a.n == bench_cpu.TINY['n'] and a.threads == (1,) and a.models == ['mnist_1k5_dw', 'mnist_7k']
    assert bench_cpu.parse(['--threads', '1,2']).threads == (1, 2)
    with pytest.raises(SystemExit): bench_cpu.parse(['--n', '256', '--bs', '128'])   # 2 batches < warmup + steps
    with pytest.raises(SystemExit): bench_cpu.parse(['--models', 'mnist_7k,nope'])

def test_only_one_section_keeps_the_others(tmp_path):
    "--only hvp on an existing report replaces that section and keeps the others and the first run's account"
    out = tmp_path/'cpu.md'
    out.write_text('# CPU training speed\n\nBy an earlier run.\n\n## Training throughput\n\n| a |\n|---|\n| 1 |\n')
    bench_cpu.Report(out, '# CPU training speed\n\nSection `hvp` measured again by x.\n', bench_cpu.TITLES, keep=True).set(
        bench_cpu.TITLES[3], 'new')
    md = out.read_text()
    assert 'By an earlier run.' in md and 'measured again by x' in md and '| 1 |' in md and md.endswith('new\n')
    assert md.count('*not measured*') == 2   # the two sections neither run measured
    bench_cpu.Report(out, '# CPU training speed\n\nSection `hvp` measured again by y.\n', bench_cpu.TITLES, keep=True).save()
    md = out.read_text()
    assert 'By an earlier run.' in md and 'measured again by y' in md and 'measured again by x' not in md
