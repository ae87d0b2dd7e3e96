"""CPU training speed: the hand-written loop against the default Learner, against the fp32 matmul peak; technique costs.

Data: scikit-learn's digits at 28x28 (`digits(28)`), its 1,198 training images repeated to `--n` (12,800), so an
epoch is as long as that of the issue's Fashion-MNIST-shaped measurement; its 599 test images as they are; batch
`--bs` (128); fp32. Everything is measured in one run, per thread count (`torch.set_num_threads`), in interleaved
rounds (A B C, C B A, ...; `--rounds`): a change in the machine's load hits every contender alike. Reported: medians
over rounds; ratios are the median (min-max) of the per-round ratios.

Numbers (`benchmarks/results/cpu.md`):
  MFLOP/image       FLOPs of one image, forward and forward+backward, counted by `torch.utils.flop_counter.FlopCounterMode`
                    on one batch (matmuls and convolutions only: BatchNorm, ReLU and the optimizer are not counted)
  matmul peak       GFLOP/s of a square fp32 `torch.mm` (`--mm` = n: 2n^3 FLOPs), median of 5, in every round
  plain images/s    one training epoch of the loop a user writes: `DataLoader(TensorDataset(x, y), bs, shuffle=True)`,
                    `zero_grad`, `cross_entropy`, `backward`, SGD step (lr 0.1, momentum 0.9)
  Learner images/s  the training pass (`history[-1]['train_time_s']`) of `Learner(model, data, bs=bs,
                    progress=False, device='cpu').fit(1)`, every other setting as shipped (SGD lr 0.1, momentum 0.9)
  Learner / plain   images/s of the Learner over those of the plain loop (> 1: the Learner is faster)
  GFLOP/s, % peak   images/s x forward+backward FLOPs per image, and that over the matmul peak of the same round
  evaluation share  of the Learner's epoch: `eval_time_s` / (`train_time_s` + `eval_time_s`); `eval_time_s` is the
                    test pass plus the default clean pass: a fixed subset of CLEAN_EVAL_N training images
  step cost         ms per training step of mnist_7k through `Learner.fit` with SGD and with each technique's callback
                    (the recipes' settings), over SGD's; `--steps` steps after `--warmup`, at the first thread count.
                    RBF starts from one checkpoint and SWA is in its SWA phase, as in the later epochs of a fit
  HVP               seconds per Hessian-vector product of `13_flatness` (`hessian_trace` with `--hvps` probes, so
                    exactly that many HVPs) on `--hvp-n` training images, at the first thread count, in chunks of
                    `--hvp-chunk` images and as one batch, after one warm-up HVP; and the peak memory it adds: the
                    process's peak resident set (VmHWM, reset before) minus its resident set before the HVPs, each
                    measurement in a fresh process.
                    One batch builds the gradient graph once and differentiates it again per HVP; chunks rebuild it
                    per chunk and HVP, in the memory of one chunk

    python benchmarks/bench_cpu.py                         # the full tables, on an idle machine (an estimated 10-15 min on 2 cores)
    python benchmarks/bench_cpu.py --threads 1 --models mnist_7k --rounds 5
    python benchmarks/bench_cpu.py --tiny --out /tmp/cpu.md   # smoke test of every part, seconds: not results

    python benchmarks/bench_cpu.py --only hvp              # one section (throughput, techniques or hvp)

The file is rewritten atomically after every round and section, so a run that is cut off still reports.
"""
import argparse, datetime, os, platform, statistics, sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp
from pathlib import Path
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode
from flatnb.core import Data, atomic_write_text, digits
from flatnb.learner import Callback, CancelEpochException, CancelFitException, Learner, clean_subset
from flatnb.models import MODELS, get_model
from flatnb.sam import SAMCB
from flatnb.mixup import MixUp
from flatnb.gmix import GMix
from flatnb.distance import RBFDistance
from flatnb.swa import SWA
from flatnb.flatness import hessian_trace

DEFAULT_MODELS = 'mnist_1k5_dw,mnist_7k,mnist_25k,simple_cnn'
TINY = dict(models='mnist_1k5_dw,mnist_7k', n=512, rounds=1, threads=(1,), steps=2, warmup=1, mm=256, hvp_n=256,
            hvp_chunk=64, hvps=2)
HVP_MODELS = ('mnist_7k', 'simple_cnn')
TECHNIQUE_MODEL = 'mnist_7k'
TITLES = ('Training throughput', 'Evaluation share of an epoch', 'Technique step cost relative to SGD',
          'Hessian-vector products: time and memory, chunked against one batch')


# ---- data, FLOPs, the matmul peak ----
def bench_data(n:int) -> Data:
    "digits at 28x28: the 1,198 training images repeated to `n`, the 599 test images as they are"
    d = digits(28)
    i = torch.arange(n) % len(d.y_train)
    return Data(d.x_train[i].contiguous(), d.y_train[i], d.x_test, d.y_test, d.n_classes, f'digits28 x{n}')

def mflop_per_image(name:str, xb, yb) -> tuple[float, float]:
    "MFLOP per image of `name` on the batch `xb`: (forward, forward+backward), as FlopCounterMode counts them"
    torch.manual_seed(0); model = get_model(name).train()
    with FlopCounterMode(display=False) as fc: model(xb)
    fwd = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc: F.cross_entropy(model(xb), yb).backward()
    return fwd / len(xb) / 1e6, fc.get_total_flops() / len(xb) / 1e6

def matmul_gflops(n:int, reps:int=5) -> float:
    "GFLOP/s of an n x n fp32 `torch.mm` (2n^3 FLOPs): the median of `reps` after one warm-up"
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); torch.mm(a, b); ts.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(ts) / 1e9


# ---- the contenders ----
def sgd_steps(model, opt, batches):
    "The hand-written training step on each (x, y) of `batches`"
    for xb, yb in batches:
        opt.zero_grad(); loss = F.cross_entropy(model(xb), yb); loss.backward(); opt.step()

def plain_epoch(name:str, data:Data, bs:int, n_batches:int|None=None) -> float:
    "Seconds of one training epoch (or its first `n_batches`) of the plain loop over `DataLoader(TensorDataset)`"
    torch.manual_seed(0); model = get_model(name).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dl = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=bs, shuffle=True)
    t = time.perf_counter()
    sgd_steps(model, opt, (b for i, b in zip(range(n_batches or len(dl)), dl)))
    return time.perf_counter() - t

class TestPassTimer(Callback):
    "Seconds of the test pass alone (MetricsCB's `after_validate`, which runs the clean evaluation, comes after)"
    order = -20
    def before_validate(self, learn): self.t0 = time.perf_counter()
    def after_validate(self, learn): self.s = time.perf_counter() - self.t0

def learner_epoch(name:str, data:Data, bs:int) -> dict:
    "One epoch of the default Learner: seconds of the training pass, of the evaluation and of its test pass"
    torch.manual_seed(0); tp = TestPassTimer()
    learn = Learner(get_model(name), data, cbs=[tp], bs=bs, progress=False, device='cpu').fit(1)
    r = learn.history[-1]
    return dict(train_s=r['train_time_s'], eval_s=r['eval_time_s'], test_s=tp.s)


# ---- the techniques ----
class RBFResumed(Callback):
    "Give RBFDistance one checkpoint (the weights at the start) as if resumed after its first checkpoint epoch"
    order = 100   # after RBFDistance's `before_fit`, which clears its checkpoints
    def before_fit(self, learn):
        rbf = learn.cb(RBFDistance)
        rbf.load_state_dict(dict(checkpoints=[[p.detach().clone() for p in rbf.params]], sigmas=[1.0], log=[]))

TECHNIQUES = {   # name -> the callbacks, with the settings of flatnb/recipes.py (SWA: starts after the skipped epoch)
    'SGD': lambda: [], 'SAM': lambda: [SAMCB(rho=0.05)], 'ASAM': lambda: [SAMCB(rho=0.5, adaptive=True)],
    'Mixup': lambda: [MixUp(alpha=1.0)], 'G-Mix': lambda: [GMix('g', ratio=0.5, alpha=1.0, rho=0.05)],
    'BG-Mix(0.5)': lambda: [GMix('bg', ratio=0.5, alpha=1.0, rho=0.05)],
    'DG-Mix': lambda: [GMix('dg', ratio=0.5, alpha=1.0, rho=0.05)],
    'RBF': lambda: [RBFDistance(strength=1.0, sigma_scale=1.0, start=0.25, every=1, keep=1), RBFResumed()],
    'SWA': lambda: [SWA(start=1)]}

class StepTimer(Callback):
    "Skip every epoch but the last; in it, time training steps `warmup` to `warmup + steps`, then stop the fit"
    order = -100   # before every other `before_batch`: a skipped batch costs nothing, a timed step is whole
    def __init__(self, warmup:int, steps:int): self.warmup, self.steps = warmup, steps
    def before_fit(self, learn): self.i, self.marks = 0, []
    def before_batch(self, learn):
        if not learn.training: return
        if learn.epoch < learn.n_epochs - 1: raise CancelEpochException()
        if self.i in (self.warmup, self.warmup + self.steps): self.marks.append(time.perf_counter())
        if self.i == self.warmup + self.steps: raise CancelFitException()
        self.i += 1
    @property
    def ms(self) -> float: return (self.marks[1] - self.marks[0]) * 1e3 / self.steps

def step_ms(technique:str, data:Data, bs:int, warmup:int, steps:int) -> float:
    "ms per training step of the technique model through `Learner.fit(2)`, timed in the second epoch"
    torch.manual_seed(0); timer = StepTimer(warmup, steps)
    Learner(get_model(TECHNIQUE_MODEL), data, cbs=[*TECHNIQUES[technique](), timer], bs=bs, progress=False,
            device='cpu').fit(2)
    return timer.ms


# ---- Hessian-vector products ----
def rss_mb(field:str) -> float:
    "VmRSS (now) or VmHWM (the peak since the last reset) of this process, in MB, from /proc/self/status"
    line = next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith(field + ':'))
    return int(line.split()[1]) / 1024

def reset_peak():
    "Reset this process's peak resident set (VmHWM) to its current size (Linux >= 4.0: clear_refs 5)"
    Path('/proc/self/clear_refs').write_text('5')

def hvp_cost(name:str, n:int, bs:int, hvps:int, threads:int) -> dict:
    "In this (fresh) process: seconds per HVP of `name` on `n` images in chunks of `bs`, and the peak memory it adds"
    torch.set_num_threads(threads)
    data = bench_data(n); torch.manual_seed(0); model = get_model(name)
    trace = lambda k: hessian_trace(model, F.cross_entropy, data, n_examples=n, bs=bs, n_iter=k, seed=0)
    trace(2)                                                    # warm-up: lazy initialisation, allocator pools
    reset_peak(); rss0, t = rss_mb('VmRSS'), time.perf_counter()
    trace(hvps)
    return dict(s=(time.perf_counter() - t) / hvps, mb=rss_mb('VmHWM') - rss0)

def fresh(f, *args):
    "`f(*args)` in a new spawned process (its own peak memory)"
    with ProcessPoolExecutor(1, mp_context=mp.get_context('spawn')) as ex: return ex.submit(f, *args).result()

def measure_hvp(a, report) -> dict:
    "(model, bs) -> [dict(s, mb)], one per round, chunked and one batch interleaved"
    jobs = [(m, b) for m in HVP_MODELS for b in (a.hvp_chunk, a.hvp_n)]
    res = {j: [] for j in jobs}
    for r in range(a.rounds):
        for m, b in (jobs if r % 2 == 0 else jobs[::-1]):
            res[m, b].append(v := fresh(hvp_cost, m, a.hvp_n, b, a.hvps, a.threads[0]))
            print(f"{a.threads[0]} thread(s), round {r + 1}/{a.rounds}: {m} HVP, chunks of {b}: {v['s']:.3f} s, "
                  f"+{v['mb']:.0f} MB", flush=True)
        report.set(TITLES[3], hvp_table(res, a))
    return res


# ---- measuring, interleaved ----
def run_job(kind:str, model:str|None, data:Data, a) -> float|dict:
    "One measurement: the matmul peak (GFLOP/s), a plain epoch (s) or a Learner epoch (a dict of seconds)"
    if kind == 'peak': return matmul_gflops(a.mm)
    return plain_epoch(model, data, a.bs) if kind == 'plain' else learner_epoch(model, data, a.bs)

def show(kind:str, model:str|None, v, n:int) -> str:
    "A progress line's account of one measurement"
    if kind == 'peak': return f"matmul peak {v:.1f} GFLOP/s"
    if kind == 'plain': return f"{model} plain loop {n / v:,.0f} images/s"
    return f"{model} Learner {n / v['train_s']:,.0f} images/s, evaluation {v['eval_s']:.2f}s"

def measure_throughput(a, data:Data, flops:dict, report) -> dict:
    "threads -> dict(peak=[GFLOP/s], plain={model: [s]}, learner={model: [dict]}), one entry per round"
    res, jobs = {}, [('peak', None)] + [(k, m) for m in a.models for k in ('plain', 'learner')]
    for t in a.threads:
        torch.set_num_threads(t)
        for m in a.models: plain_epoch(m, data, a.bs, n_batches=2)   # warm-up at this thread count and shape
        rt = res[t] = dict(peak=[], plain={m: [] for m in a.models}, learner={m: [] for m in a.models})
        for r in range(a.rounds):
            for kind, m in (jobs if r % 2 == 0 else jobs[::-1]):
                v = run_job(kind, m, data, a)
                (rt['peak'] if m is None else rt[kind][m]).append(v)
                print(f"{t} thread(s), round {r + 1}/{a.rounds}: {show(kind, m, v, a.n)}", flush=True)
            report.set(TITLES[0], throughput_table(res, flops, a.n))
            report.set(TITLES[1], eval_table(res, data))
    return res

def measure_techniques(a, data:Data, report) -> dict:
    "technique -> ms per step, one per round, the techniques interleaved, at the first thread count"
    torch.set_num_threads(a.threads[0])
    names = list(TECHNIQUES)
    ms = {k: [] for k in names}
    for r in range(a.rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            ms[k].append(step_ms(k, data, a.bs, a.warmup, a.steps))
            print(f"{a.threads[0]} thread(s), round {r + 1}/{a.rounds}: {k} {ms[k][-1]:.1f} ms/step", flush=True)
        report.set(TITLES[2], technique_table(ms, a))
    return ms


# ---- the report ----
def ratio(num:list, den:list) -> str:
    "Median (min-max) of the per-round ratios num/den"
    r = [x / y for x, y in zip(num, den)]
    if not r: return 'n/a'
    return f"{statistics.median(r):.2f}× ({min(r):.2f}-{max(r):.2f})"

def md_table(head:list, rows:list) -> str:
    "A Markdown table"
    line = lambda cells: '| ' + ' | '.join(map(str, cells)) + ' |'
    return '\n'.join([line(head), '|' + '---|' * len(head)] + [line(r) for r in rows])

def throughput_table(res:dict, flops:dict, n:int) -> str:
    "Table 1: per model and thread count, images/s, GFLOP/s and share of the matmul peak of both loops"
    head = ['model', 'threads', 'MFLOP/image fwd / fwd+bwd', 'matmul peak GFLOP/s', 'plain images/s',
            'Learner images/s', 'Learner / plain', 'plain GFLOP/s', 'Learner GFLOP/s', 'plain % of peak',
            'Learner % of peak']
    rows = []
    for t, rt in res.items():
        for m, ps in rt['plain'].items():
            ls = [d['train_s'] for d in rt['learner'][m]]
            if not ps or not ls: continue
            peak, (f, fb) = statistics.median(rt['peak']), flops[m]
            ip, il = n / statistics.median(ps), n / statistics.median(ls)
            gp, gl = ip * fb / 1e3, il * fb / 1e3
            rows.append([m, t, f'{f:.2f} / {fb:.2f}', f'{peak:.1f}', f'{ip:,.0f}', f'{il:,.0f}', ratio(ps, ls),
                         f'{gp:.2f}', f'{gl:.2f}', f'{100 * gp / peak:.0f} %', f'{100 * gl / peak:.0f} %'])
    return md_table(head, rows)

def eval_table(res:dict, data:Data) -> str:
    "Table 2: per model and thread count, the Learner's training pass, its evaluation and the evaluation's share"
    nt, nc = len(data.y_test), len(clean_subset(data)[1])   # the default clean pass: a fixed subset (CLEAN_EVAL_N)
    head = ['model', 'threads', 'training pass (s)', f'test pass, {nt:,} images (s)',
            f'clean training set, {nc:,} images (s)', 'evaluation share of the epoch']
    rows = []
    for t, rt in res.items():
        for m, ds in rt['learner'].items():
            if not ds: continue
            med = lambda f: statistics.median(f(d) for d in ds)
            share = [d['eval_s'] / (d['train_s'] + d['eval_s']) for d in ds]
            rows.append([m, t, f"{med(lambda d: d['train_s']):.2f}", f"{med(lambda d: d['test_s']):.2f}",
                         f"{med(lambda d: d['eval_s'] - d['test_s']):.2f}",
                         f"{100 * statistics.median(share):.0f} % ({100 * min(share):.0f}-{100 * max(share):.0f})"])
    return md_table(head, rows)

def technique_table(ms:dict, a) -> str:
    "Table 3: ms per step of each technique and its cost relative to SGD; BG-Mix(0.5) against G-Mix"
    rows = [[k, f'{statistics.median(v):.1f}', f'{a.bs * 1e3 / statistics.median(v):,.0f}', ratio(v, ms['SGD'])]
            for k, v in ms.items() if v]
    rows.append(['BG-Mix(0.5) / G-Mix', '', '', ratio(ms['BG-Mix(0.5)'], ms['G-Mix']) + ' (004 Table III: a saving, < 1)'])
    return (f"{TECHNIQUE_MODEL}, {a.threads[0]} thread(s), batch {a.bs}: {a.steps} timed steps after {a.warmup} "
            f"per technique and round.\n\n" + md_table(['technique', 'ms/step', 'images/s', 'relative to SGD'], rows))

def hvp_table(res:dict, a) -> str:
    "Table 4: seconds per HVP and added peak memory, per model, chunked and as one batch"
    rows = []
    for m in HVP_MODELS:
        c, o = res[m, a.hvp_chunk], res[m, a.hvp_n]
        if not c or not o: continue
        med = lambda vs, k: statistics.median(v[k] for v in vs)
        rows.append([m, f"{med(c, 's'):.3f}", f"{med(o, 's'):.3f}", ratio([v['s'] for v in c], [v['s'] for v in o]),
                     f"{med(c, 'mb'):.0f}", f"{med(o, 'mb'):.0f}"])
    head = ['model', f's/HVP, chunks of {a.hvp_chunk}', f's/HVP, one batch of {a.hvp_n:,}', 'chunked / one batch (time)',
            f'peak MB added, chunks of {a.hvp_chunk}', 'peak MB added, one batch']
    return (f"{a.hvp_n:,} training images, {a.hvps} HVPs per measurement (`hessian_trace`), {a.threads[0]} thread(s), "
            f"fp32, eval mode.\n\n" + md_table(head, rows))

def cpu_model() -> str:
    "The CPU's model name from /proc/cpuinfo, else what `platform` knows"
    try: lines = Path('/proc/cpuinfo').read_text().splitlines()
    except OSError: lines = []
    return next((l.split(':', 1)[1].strip() for l in lines if l.startswith('model name')),
                platform.processor() or platform.machine())

def header(a, argv:list) -> str:
    "The report's title and what it was measured on, with which settings"
    tiny = '\n**`--tiny`: a smoke test of every part, not results.**\n' if a.tiny else ''
    what = f"Section `{a.only}` measured again by" if a.only else 'By'
    return (f"# CPU training speed\n\n{what} `python benchmarks/bench_cpu.py {' '.join(argv)}`, "
            f"{datetime.datetime.now().isoformat(timespec='minutes')}: {cpu_model()}, {os.cpu_count()} logical CPUs, "
            f"load average {os.getloadavg()[0]:.2f} at the start; torch {torch.__version__}, CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}; fp32. Data: digits 28×28, {a.n:,} training images (the 1,198 "
            f"repeated), 599 test images; batch {a.bs}. Medians of {a.rounds} interleaved round(s); ratios: median "
            f"(min-max) of the per-round ratios. What each number means: the script's docstring.\n{tiny}")

class Report:
    "The Markdown file: a header and sections, rewritten atomically (tmp + os.replace) whenever a section changes"
    def __init__(self, path, head:str, titles:tuple, keep:bool=False):
        "With `keep`, the sections of an existing report at `path` stay until they are set again"
        self.path, self.head = Path(path), head
        self.sections = {t: '*not measured*' for t in titles}
        if keep and self.path.exists():
            old = self.path.read_text()
            again = head.split('\n\n', 1)[1]          # this run's account, kept beside the first run's
            this = again.split(' by ', 1)[0]            # 'Section `hvp` measured again': an earlier account goes
            paras = [q for q in old.split('\n## ')[0].rstrip('\n').split('\n\n') if not q.startswith(this)]
            self.head = '\n\n'.join(paras) + '\n\n' + again
            for part in old.split('\n## ')[1:]:
                t, _, b = part.partition('\n\n')
                if t in self.sections: self.sections[t] = b.rstrip('\n')
        self.path.parent.mkdir(parents=True, exist_ok=True); self.save()
    def text(self) -> str: return self.head + ''.join(f'\n## {t}\n\n{b}\n' for t, b in self.sections.items())
    def set(self, title:str, body:str): self.sections[title] = body; self.save()
    def save(self): atomic_write_text(self.path, self.text())


def parse(argv:list) -> argparse.Namespace:
    "The options; `--tiny` replaces the defaults (options given explicitly still win)"
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ints = lambda s: tuple(int(v) for v in s.split(','))
    p.add_argument('--tiny', action='store_true', help=f'a smoke test of every part in seconds: {TINY}')
    p.add_argument('--threads', type=ints, default=(1, 2), help='torch thread counts, comma-separated')
    p.add_argument('--models', default=DEFAULT_MODELS, help='`get_model` names, comma-separated')
    p.add_argument('--rounds', type=int, default=3, help='interleaved rounds (medians are reported)')
    p.add_argument('--n', type=int, default=12_800, help='training images of an epoch (the digits repeated)')
    p.add_argument('--bs', type=int, default=128, help='batch size')
    p.add_argument('--steps', type=int, default=20, help='timed training steps per technique and round')
    p.add_argument('--warmup', type=int, default=3, help='training steps before the timed ones')
    p.add_argument('--mm', type=int, default=1024, help='side n of the n x n matmul of the peak')
    p.add_argument('--hvp-n', type=int, default=1024, help='training images of the HVP measurement')
    p.add_argument('--hvp-chunk', type=int, default=128, help='images per chunk of the chunked HVP')
    p.add_argument('--hvps', type=int, default=3, help='HVPs per HVP measurement')
    p.add_argument('--only', choices=('throughput', 'techniques', 'hvp'),
                   help='measure one section only; the others of an existing --out stay')
    p.add_argument('--out', default=Path(__file__).parent/'results'/'cpu.md', help='the Markdown report')
    a = p.parse_args(argv)
    if a.tiny: p.set_defaults(**TINY); a = p.parse_args(argv)
    a.models = a.models.split(',')
    if bad := [m for m in a.models if m not in MODELS]: p.error(f"unknown models {bad}; choose from {list(MODELS)}")
    if a.warmup + a.steps > a.n // a.bs: p.error(f"--warmup + --steps must fit in the {a.n // a.bs} batches of an epoch")
    return a

def main(argv:list|None=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    data = bench_data(a.n)
    flops = {m: mflop_per_image(m, data.x_train[:a.bs], data.y_train[:a.bs]) for m in a.models}
    for m, (f, fb) in flops.items(): print(f"{m}: {f:.2f} MFLOP/image forward, {fb:.2f} forward+backward", flush=True)
    report = Report(a.out, header(a, argv), TITLES, keep=a.only is not None)
    if a.only in (None, 'throughput'): measure_throughput(a, data, flops, report)
    if a.only in (None, 'techniques'): measure_techniques(a, data, report)
    if a.only in (None, 'hvp'): measure_hvp(a, report)
    print(report.text())


if __name__ == '__main__': main()
