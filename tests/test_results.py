"Tests of flatnb.results on fabricated runs: the files of a run, the intervals in results.md against a hand computation"
import csv
import math
import re

import matplotlib.pyplot as plt
import pytest

from flatnb.results import BASE_COLS, plot_results, show_results, write_results

T975 = {2: 4.302653, 4: 2.776445}  # textbook quantiles t(0.975, df)


def _hist(acc, n):
    return [dict(epoch=e, test_acc=acc * (e + 1) / n, train_acc=min(1., acc + 0.1)) for e in range(n)]


def _run(arm, seed, acc, epochs=4, **kw):
    return dict(arm=arm, seed=seed, epochs=epochs, train_acc=acc + 0.1, clean_train_acc=acc + 0.05, test_acc=acc,
                gap=-0.1, clean_gap=-0.05, train_s=1.5 + seed, eval_s=0.2, n_params=1500, hessian_top_eig=10. + seed,
                history=_hist(acc, epochs), **kw)


# arm 'sam' gains ~+2.3 points on every seed (significant), 'mixup' gains nothing systematic (not significant),
# 'swa' ran other seeds with the baseline's spread shifted by +1 point (Welch, df = 4 exactly)
BASE = [0.80, 0.74, 0.77]
ROWS = ([_run('baseline', s, v) for s, v in enumerate(BASE)]
        + [_run('sam', s, v + d) for s, (v, d) in enumerate(zip(BASE, (0.02, 0.03, 0.02)))]
        + [_run('mixup', s, v + d) for s, (v, d) in enumerate(zip(BASE, (0.02, -0.03, 0.01)))]
        + [_run('swa', s + 10, v + 0.01) for s, v in enumerate(BASE)])


def _read_csv(path):
    return list(csv.DictReader(open(path)))


def _md_row(md, arm):
    "The cells of `arm`'s row in the first table of results.md"
    line = next(l for l in md.splitlines() if l.startswith(f'| {arm} |'))
    return [c.strip() for c in line.strip('|').split('|')]


def _interval(cell):
    "(diff, lo, hi, significant) from a cell like '+2.33* [+1.40, +3.27]'"
    m = re.fullmatch(r'([+-]\d+\.\d\d)(\*?) \[([+-]\d+\.\d\d), ([+-]\d+\.\d\d)\]', cell)
    assert m, cell
    return float(m[1]), float(m[3]), float(m[4]), m[2] == '*'


def _mean_sd(xs):
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def test_files_and_intervals(tmp_path):
    write_results(ROWS, tmp_path, 'fabricated runs', paper=dict(source='004 Table I', baseline=88.61), data_name='digits')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['results.csv', 'results.md', 'results.png']  # no temp files
    assert (tmp_path / 'results.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert plt.get_fignums() == []
    rows = _read_csv(tmp_path / 'results.csv')
    assert list(rows[0])[:len(BASE_COLS)] == list(BASE_COLS) and list(rows[0])[len(BASE_COLS):] == ['n_params', 'hessian_top_eig']
    acc = lambda arm: [float(r['test_acc']) for r in rows if r['arm'] == arm]
    md = (tmp_path / 'results.md').read_text()
    assert md.startswith('**fabricated runs**') and not any(l.startswith('#') for l in md.splitlines())
    assert '± is the standard deviation over 3 seeds' in md and 'clean gap = test accuracy' in md
    # paired t by hand from the csv: mean and sd of the differences, t(0.975, 2)
    for arm, significant in (('sam', True), ('mixup', False)):
        m, s = _mean_sd([a - b for a, b in zip(acc(arm), acc('baseline'))])
        h = T975[2] * s / math.sqrt(3)
        cells = _md_row(md, arm)
        assert cells[-2] == 'paired t'   # columns: ..., Δ, interval, paper
        d, lo, hi, sig = _interval(cells[-3])
        assert (d, lo, hi) == pytest.approx((100 * m, 100 * (m - h), 100 * (m + h)), abs=0.006)
        assert sig == significant and (lo > 0) == significant
    # Welch by hand: equal spreads and sizes give df = 2 (n - 1) = 4
    (mx, sx), (my, sy) = _mean_sd(acc('swa')), _mean_sd(acc('baseline'))
    se = math.sqrt(sx ** 2 / 3 + sy ** 2 / 3)
    assert ((sx**2 / 3 + sy**2 / 3) ** 2 / ((sx**2 / 3) ** 2 / 2 + (sy**2 / 3) ** 2 / 2)) == pytest.approx(4)
    cells = _md_row(md, 'swa')
    assert cells[-2] == 'Welch'
    assert _interval(cells[-3])[:3] == pytest.approx((100 * (mx - my), 100 * (mx - my - T975[4] * se),
                                                      100 * (mx - my + T975[4] * se)), abs=0.006)
    assert '`sam` +2.33 points' in md.split('Significantly different')[1].split('Not significantly')[0]  # the summary
    assert '| arm | train | clean train | test | gap | clean gap | Δ test vs baseline [95% CI] | interval | paper test |' in md
    assert 'every run trained 4 epochs' in md and '| 88.61 |' in md  # same epochs and seeds: no columns for them
    assert '| baseline | 1500 |' in md  # integers stay integers, no ±


def test_one_seed_and_one_epoch(tmp_path):
    rows = [_run('baseline', 0, 0.5, epochs=1), _run('sam', 0, 0.6, epochs=1)]
    write_results(rows, tmp_path, 'one seed, one epoch', paper=dict(source='004', epochs=200, sam=89.89))
    md = (tmp_path / 'results.md').read_text()
    assert not any('±' in l for l in md.splitlines() if l.startswith('|'))  # one seed: no ± in any table
    assert '| +10.00 | 89.89 |' in md and 'one seed per arm: no ± and no intervals' in md  # no interval column
    assert '**These runs trained only 1 epoch: not comparable.**' in md
    assert '| sam | 60.00 |' not in md and plt.get_fignums() == []
    fig = plot_results(rows)
    curves = fig.axes[0].get_lines()
    assert [len(l.get_xdata()) for l in curves] == [1, 1] and all(l.get_marker() == 'o' for l in curves)


def test_twelve_arms_distinct_colours(tmp_path):
    rows = [_run(f'arm-{i:02d}', s, 0.7 + 0.01 * i + 0.005 * s) for i in range(12) for s in range(2)]
    write_results(rows, tmp_path, 'twelve arms', ref='arm-05')
    assert (tmp_path / 'results.png').stat().st_size > 0 and plt.get_fignums() == []
    fig = plot_results(rows, ref='arm-05')
    colours = [tuple(l.get_color()) for l in fig.axes[0].get_lines()]
    assert len(colours) == 12 and len(set(colours)) == 12
    assert [t.get_text() for t in fig.axes[2].get_yticklabels()] == [f'arm-{i:02d}' for i in range(12) if i != 5]
    md = (tmp_path / 'results.md').read_text()
    assert 'here every one is *paired t*' in md and 'reference' in _md_row(md, 'arm-05')


def test_show_results_displays_each_once(tmp_path, monkeypatch):
    import IPython.display
    shown = []
    monkeypatch.setattr(IPython.display, 'display', lambda *objs: shown.extend(type(o).__name__ for o in objs))
    with pytest.raises(FileNotFoundError, match='results.md'): show_results(tmp_path)
    write_results(ROWS[:6], tmp_path, 'two arms')
    show_results(tmp_path)
    assert shown == ['Markdown', 'Image']


@pytest.fixture(autouse=True)
def _no_stray_figures():
    "Other tests in this process may leave figures open: these tests count only their own"
    import matplotlib.pyplot as plt
    plt.close('all'); yield
