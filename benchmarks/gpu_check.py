"""One command that checks flatnb's training speed on one GPU; writes gpu_check.json and gpu_check.md to --out.

    python benchmarks/gpu_check.py --out runs/gpu_check                 # one GPU, at most 8 minutes in all
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gc    # CPU smoke test of every part, < 1 minute

Parts, in this order (the seconds are the budget of each part, full run / --tiny; change one with --part-budget):
  env         (10 / 5)    device, torch, CUDA and cuDNN versions
  loader      (20 / 10)   DeviceLoader against DataLoader(TensorDataset), same augmentation (bench_loader.py)
  wrn16_8     (45 / 20)   WRN-16-8 training steps through flatnb's Learner with SGD, SAM, ASAM, G-Mix, BG-Mix,
                          DG-Mix (bf16 autocast + channels_last on CUDA), and one evaluation pass
  compile     (130 / -)   the same methods with torch.compile, side by side with eager
  models      (50 / 15)   ResNet-18, the CIFAR nets of `001`, EfficientNet-B0 and the other paper-preset models
  cli         (170 / 25)  `flatnb run gmix --preset paper --limit 5000 --epochs 2 --seeds 1` on a fabricated CIFAR-10
                          cache, the outputs it must write, and the rerun, which must resume ("done before")
  projection  (10 / 5)    projected wall time of every paper preset: epochs x epoch time x seeds, summed over arms
  targets     (25 / 10)   the speed targets of issue 12, met or missed; torch.profiler's top ops where one is missed

Time budget (--budget: 455 s, --tiny 55 s, counted from the start of the script): a part that runs past its own
budget or past the total is interrupted by SIGALRM and marked "cut off"; what it measured stays. Both files are
rewritten after every measurement, so a check that is cut off or stopped (SIGTERM) still reports. Parts that start
after the total is spent are "not run", except the projection and the targets, which only compute from what was
measured (at least 5 s each; profiles only while time is left). A watchdog thread ends the process (exit 124) 20 s
after the total, after writing the report, should the main thread be stuck in C code that SIGALRM cannot interrupt:
so a full check takes at most 455 + 20 s < 8 minutes.

Timing: each model's training steps run through `Learner.fit` on fabricated data held on the device (random crop +
flip on the device, `DeviceLoader` + `Augment`); `StepTimer` marks the start of step W and of step W+N with CUDA events
(the wall clock on a CPU) and stops the fit. The methods of one model are timed in interleaved rounds (A B C, C B A,
...), N steps each; reported: the median ms/step over rounds and, for ratios, the median and min-max of the per-round
ratios. CPU timings (--tiny) only check that every part runs: they are not results.
"""
import time
T0 = time.monotonic()   # the total budget counts from here, before torch is imported
import argparse, csv, gc, io, json, os, platform, re, resource, shutil, signal, statistics, threading, traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
import torch
import flatnb
from flatnb import core
from flatnb.core import Augment, DeviceLoader, atomic_write_text, autocast_dtype, default_device
from flatnb.learner import Callback, CancelFitException, Learner
from flatnb.models import get_model, n_params
from flatnb.sam import SAMCB
from flatnb.gmix import GMix
import bench_loader

METHODS = {'SGD': lambda: [], 'SAM': lambda: [SAMCB(rho=0.05)], 'ASAM': lambda: [SAMCB(rho=0.5, adaptive=True)],
           'G-Mix': lambda: [GMix('g', rho=0.05)], 'BG-Mix': lambda: [GMix('bg', ratio=0.5, rho=0.05)],
           'DG-Mix': lambda: [GMix('dg', ratio=0.5, rho=0.05)]}
TECHNIQUE_METHOD = dict(sam='SAM', asam='ASAM', gmix='G-Mix', bgmix='BG-Mix', dgmix='DG-Mix')
SGD_COST = {'multistep', 'onecycle', 'mixup', 'cutout', 'label_smoothing', 'swa', 'cosine_restarts', 'snapshot',
            'distance'}   # techniques that cost about an SGD step
# data set: (image shape, training images, test images, crop padding, flip), as the paper presets train them
DATA = dict(cifar10=((3, 32, 32), 50_000, 10_000, 4, True), cifar100=((3, 32, 32), 50_000, 10_000, 4, True),
            svhn=((3, 32, 32), 73_257, 26_032, 4, False), stl10=((3, 96, 96), 5_000, 8_000, 12, True),
            mnist=((1, 28, 28), 60_000, 10_000, 0, False), fashion_mnist=((1, 28, 28), 60_000, 10_000, 4, True))
# after WRN-16-8 on CIFAR-10: (model, data set whose shape it is timed at, methods), most important first
OTHER_MODELS = [('resnet18', 'cifar10', tuple(METHODS)),
                ('wrn28_10', 'fashion_mnist', ('SGD', 'SAM')),   # Foret Table 5 (gmix `paper-fashion`)
                ('cifar_143k_dw', 'cifar10', ('SGD', 'SAM')),
                ('cifar_143k', 'cifar10', ('SGD', 'SAM')),
                ('efficientnet_b0', 'cifar10', ('SGD', 'SAM')),   # `000`'s classifier: 3x32x32 inputs (paper preset)
                ('mnist_1k5_dw', 'mnist', ('SGD', 'SAM')), ('resnet20', 'cifar10', ('SGD',)),
                ('mobilenet_v2', 'cifar10', ('SGD',)), ('mobilenet_v1', 'svhn', ('SGD',)),
                ('wrn16_8', 'stl10', ('SGD',))]
PROFILE_STEPS = 3   # profiled training steps, after one more
OUTPUTS = ('results.csv', 'results.md', 'results.png')   # what `flatnb run` must write
COMPILE_GROUPS = [('SGD', 'SAM'), ('G-Mix', 'BG-Mix'), ('ASAM', 'DG-Mix')]   # warmed up (compiled) and timed together


@dataclass
class Config:
    "Sizes and budgets of a check"
    bs:int # batch size of the timed training steps
    warmup:int # steps before the first timed round (compilation, cuDNN autotuning)
    steps:int # timed steps per method and round
    rounds:int # interleaved rounds
    eval_n:int # images of the timed evaluation pass
    loader_n:int; loader_bs:int; loader_rounds:int # the loader comparison
    limit:int # --limit of the CLI check
    cli_extra:list # more arguments of the CLI check
    budgets:dict # part -> seconds
    total:float # seconds of the whole check
    side:int|None=None # image side instead of the data set's (--tiny)
    compile:bool=True # time torch.compile
    wrn:tuple=('wrn16_8', {}) # the model of the methods and compile parts: `get_model` name and arguments
    models:list=field(default_factory=lambda: OTHER_MODELS) # the models part: (model, data set, methods)

FULL = Config(bs=128, warmup=5, steps=20, rounds=3, eval_n=10_000, loader_n=20_000, loader_bs=128, loader_rounds=3,
              limit=5000, cli_extra=[], total=455,
              budgets=dict(env=10, loader=20, wrn16_8=45, compile=130, models=50, cli=170, projection=10, targets=25))
TINY = Config(bs=4, warmup=1, steps=1, rounds=2, eval_n=8, loader_n=256, loader_bs=32, loader_rounds=2, limit=32,
              cli_extra=['--arms', 'vanilla,bgmix', '--set', 'model=cifar_143k_dw', '--no-sharpness'], total=55,
              budgets=dict(env=5, loader=10, wrn16_8=20, compile=5, models=15, cli=25, projection=5, targets=10),
              side=8, compile=False,
              wrn=('wrn', dict(depth=10, width=1)),   # WRN-10-1: the 11M weights of WRN-16-8 are slow to step on a CPU
              models=[('cifar_143k_dw', 'cifar10', ('SGD', 'SAM')), ('cifar_143k', 'cifar10', ('SGD',)),
                      ('efficientnet_b0', 'cifar10', ('SGD',)), ('mnist_1k5_dw', 'mnist', ('SGD', 'SAM'))])


class OutOfTime(BaseException): "A part ran past its budget, or the check was told to stop"

class Skip(Exception): "A part that does not apply to this check"


# ---- timing ----
def mark(dev:torch.device):
    "A point in time on `dev`'s stream: a CUDA event, or the wall clock"
    if dev.type != 'cuda': return time.perf_counter()
    e = torch.cuda.Event(enable_timing=True); e.record(); return e

def elapsed_ms(a, b) -> float:
    "Milliseconds between two `mark`s"
    if isinstance(a, float): return (b - a) * 1e3
    b.synchronize(); return a.elapsed_time(b)

class StepTimer(Callback):
    "Mark the start of training steps `warmup` and `warmup + steps`, then stop the fit"
    def __init__(self): self.warmup, self.steps = 0, 1
    def before_fit(self, learn): self.i, self.marks = 0, []
    def before_batch(self, learn):
        if not learn.training: return
        if self.i in (self.warmup, self.warmup + self.steps): self.marks.append(mark(learn.device))
        if self.i == self.warmup + self.steps: raise CancelFitException()
        self.i += 1
    def run(self, learn, warmup:int, steps:int) -> float:
        "ms per step of `steps` steps of `learn` after `warmup` steps"
        self.warmup, self.steps = warmup, steps
        learn.fit(1)
        if len(self.marks) < 2: raise RuntimeError(f"the training loader ran out after {self.i} steps")
        return elapsed_ms(*self.marks) / steps

class PassTimer(Callback):
    "Mark the start and the end of the evaluation pass"
    def before_validate(self, learn): self.t = mark(learn.device)
    def after_validate(self, learn): self.ms = elapsed_ms(self.t, mark(learn.device))

def ratio_stats(a:list, b:list) -> dict:
    "Median, min and max of the per-round ratios a/b"
    r = [x / y for x, y in zip(a, b)]
    return dict(median=statistics.median(r), min=min(r), max=max(r)) if r else {}


# ---- the check's state and report ----
@dataclass
class Check:
    "What the parts share: settings, device, the report and the learners kept for profiling"
    cfg:Config; dev:torch.device; out:Path; deadline:float; profile:str
    parts:dict=field(default_factory=dict) # part name -> its record (status, seconds, data...)
    learners:dict=field(default_factory=dict) # (model, method, compiled) -> Learner, kept for the targets' profiles
    measured:dict=field(default_factory=dict) # (model, image shape) -> {method: ms/step, 'bs': ...}, for the projection

    def shape(self, data:str) -> tuple:
        c, h, w = DATA[data][0]
        return (c, self.cfg.side, self.cfg.side) if self.cfg.side else (c, h, w)

    def save(self):
        "Write gpu_check.json and gpu_check.md (atomically)"
        meta = dict(mode='tiny' if self.cfg.side else 'full', device=str(self.dev), budget_s=self.deadline - T0,
                    elapsed_s=time.monotonic() - T0, written=time.strftime('%Y-%m-%d %H:%M:%S'))
        js = json.dumps(dict(meta=meta, parts=self.parts), indent=1, default=str)
        atomic_write_text(self.out/'gpu_check.json', js)
        atomic_write_text(self.out/'gpu_check.md', render(meta, self.parts))

    def loader(self, data:str, seed:int=0) -> DeviceLoader:
        "Fabricated training batches of `data`'s shape on the device, with its augmentation, enough for any timing"
        g = torch.Generator(self.dev).manual_seed(seed)
        n_batches = max(self.cfg.warmup, 1) + max(self.cfg.steps, PROFILE_STEPS) + 1
        n, shape, (_, _, _, pad, flip) = n_batches * self.cfg.bs, self.shape(data), DATA[data]
        x = torch.randn((n, *shape), device=self.dev, generator=g)
        y = torch.randint(0, 10, (n,), device=self.dev, generator=g)
        return DeviceLoader(x, y, self.cfg.bs, shuffle=True, drop_last=True, tfms=Augment(pad, flip), seed=seed)

    def learner(self, model, method:str, dl, compile:bool=False) -> Learner:
        "A Learner training `model` with `method` on `dl`, as flatnb trains (bf16 autocast + channels_last on CUDA)"
        opt = partial(torch.optim.SGD, lr=0.01, momentum=0.9, weight_decay=5e-4)
        return Learner(model, (dl, []), opt=opt, cbs=[*METHODS[method](), StepTimer()], device=self.dev,
                       amp=self.dev.type == 'cuda', channels_last=True, compile=compile, progress=False)


def time_rounds(ck:Check, learners:dict, warm:bool, on_round) -> dict:
    "name -> ms/step of each interleaved round; warm up each learner first if `warm`; `on_round(times)` after each"
    c, names = ck.cfg, list(learners)
    if warm:
        for k in names: learners[k].cb(StepTimer).run(learners[k], c.warmup, 1)
    times = {k: [] for k in names}
    for r in range(c.rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            times[k].append(learners[k].cb(StepTimer).run(learners[k], 1, c.steps))
        on_round(times)
    return times

def step_rows(ck:Check, times:dict, data:str, base:str='SGD') -> dict:
    "method -> ms/step, images/s, epoch time of the data set's training images, ratio to `base`"
    n_train = DATA[data][1]
    rows = {}
    for k, ts in times.items():
        if not ts: continue
        ms = statistics.median(ts)
        rows[k] = dict(ms=ms, ms_rounds=ts, img_s=ck.cfg.bs * 1e3 / ms, epoch_s=n_train * ms / ck.cfg.bs / 1e3,
                       vs_base=ratio_stats(ts, times[base]) if base in times else {})
    return rows

def free():
    gc.collect()
    if torch.cuda.is_available(): torch.cuda.empty_cache()


# ---- the parts ----
def part_env(ck:Check, d:dict):
    d.update(torch=torch.__version__, cuda=torch.version.cuda, flatnb=flatnb.__version__,
             python=platform.python_version(), cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
             autocast=str(autocast_dtype(ck.dev)), cudnn_benchmark=torch.backends.cudnn.benchmark,
             float32_matmul_precision=torch.get_float32_matmul_precision())
    if ck.dev.type == 'cuda':
        p = torch.cuda.get_device_properties(ck.dev)
        d.update(device=p.name, memory_gib=p.total_memory / 2**30, capability=f'{p.major}.{p.minor}',
                 cudnn=torch.backends.cudnn.version())
    else: d.update(device=f'CPU ({platform.processor() or platform.machine()})')

def part_loader(ck:Check, d:dict):
    c = ck.cfg
    torch.manual_seed(0)
    x, y = torch.randn(c.loader_n, *ck.shape('cifar10')), torch.randint(0, 10, (c.loader_n,))
    its = bench_loader.contenders(x, y, c.loader_bs, ck.dev)
    d.update(images=c.loader_n, bs=c.loader_bs, shape=ck.shape('cifar10'))
    d['loaders'] = bench_loader.summarise(bench_loader.compare(its, ck.dev, c.loader_rounds))

def part_wrn16_8(ck:Check, d:dict):
    c = ck.cfg
    name, kw = c.wrn
    model = get_model(name, num_classes=10, in_channels=3, **kw)
    dl = ck.loader('cifar10')
    learners = {m: ck.learner(model, m, dl) for m in METHODS}
    ck.learners.update({('wrn16_8', m, False): l for m, l in learners.items()})
    d.update(model=name + (f"({', '.join(f'{k}={v}' for k, v in kw.items())})" if kw else ''), params=n_params(model),
             shape=ck.shape('cifar10'), bs=c.bs, warmup=c.warmup, steps=c.steps)
    def on_round(times):
        d['methods'] = step_rows(ck, times, 'cifar10'); ck.save()
    times = time_rounds(ck, learners, True, on_round)
    ck.measured[('wrn16_8', DATA['cifar10'][0])] = dict(bs=c.bs, **{m: statistics.median(t) for m, t in times.items()})
    # one evaluation pass, as Learner.fit runs it after each epoch (batches of max(bs, 500))
    g = torch.Generator(ck.dev).manual_seed(1)
    xe = torch.randn((c.eval_n, *ck.shape('cifar10')), device=ck.dev, generator=g)
    test_dl = DeviceLoader(xe, torch.zeros(c.eval_n, dtype=torch.long, device=ck.dev), max(c.bs, 500))
    ev = Learner(model, ([], test_dl), cbs=[PassTimer()], device=ck.dev, amp=ck.dev.type == 'cuda', progress=False)
    passes = [ev.fit(1).cb(PassTimer).ms for _ in range(3)][1:]
    d['eval'] = dict(images=c.eval_n, ms=statistics.median(passes), test_images=DATA['cifar10'][2],
                     epoch_s=statistics.median(passes) / 1e3 * DATA['cifar10'][2] / c.eval_n)

def part_compile(ck:Check, d:dict):
    if not ck.cfg.compile: raise Skip("--tiny: inductor's compilation alone takes longer than the CPU budget")
    if ('wrn16_8', 'SGD', False) not in ck.learners: raise Skip("needs the eager learners of the wrn16_8 part")
    import torch._dynamo
    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = 64   # many learners share one model here: never fall back to eager
    eager = {m: ck.learners[('wrn16_8', m, False)] for m in METHODS}
    model, dl = eager['SGD'].model, eager['SGD'].train_dl
    d.update(methods={}, compile_s={}, errors={})
    for group in COMPILE_GROUPS:
        comp = {}
        for m in group:
            l, t = ck.learner(model, m, dl, compile=True), time.monotonic()
            try: l.cb(StepTimer).run(l, ck.cfg.warmup, 1)
            except Exception as e:   # a method that fails under torch.compile: say so, time the others
                d['errors'][m] = f'{type(e).__name__}: {e}'; ck.save(); continue
            d['compile_s'][m], comp[m] = time.monotonic() - t, l
            ck.learners[('wrn16_8', m, True)] = l
        pair = {k: v for m in comp for k, v in ((m, eager[m]), (m + ' compiled', comp[m]))}
        def on_round(times):
            rows = step_rows(ck, times, 'cifar10', base='')
            for m in comp:
                if times[m + ' compiled']:
                    cr = rows[m + ' compiled']
                    d['methods'][m] = dict(eager_ms=rows[m]['ms'], compiled_ms=cr['ms'], img_s=cr['img_s'],
                                           epoch_s=cr['epoch_s'],
                                           compiled_vs_eager=ratio_stats(times[m + ' compiled'], times[m]))
            ck.save()
        if pair: time_rounds(ck, pair, False, on_round)
    if d['errors']: raise RuntimeError(f"training fails under torch.compile with {', '.join(d['errors'])} (below)")

def part_models(ck:Check, d:dict):
    c = ck.cfg
    d.update(bs=c.bs, models={})
    for name, data, methods in c.models:
        shape = ck.shape(data)
        model = get_model(name, num_classes=10, in_channels=shape[0])
        dl = ck.loader(data)
        learners = {m: ck.learner(model, m, dl) for m in methods}
        rec = d['models'][f'{name} {data}'] = dict(model=name, data=data, shape=shape, params=n_params(model))
        def on_round(times):
            rec['methods'] = step_rows(ck, times, data); ck.save()
        times = time_rounds(ck, learners, True, on_round)
        ck.measured[(name, DATA[data][0])] = dict(bs=c.bs, **{m: statistics.median(t) for m, t in times.items()})
        del learners, model, dl; free()

def flatnb_cli(argv:list) -> tuple[int, str, float]:
    "`python -m flatnb ARGV` in this process (so its peak memory is this part's); return (exit code, output, seconds)"
    from flatnb.cli import main
    buf, t = io.StringIO(), time.monotonic()
    with redirect_stdout(buf), redirect_stderr(buf):
        try: main(argv); rc = 0
        except SystemExit as e: rc = e.code if isinstance(e.code, int) else 1
    return rc, buf.getvalue(), time.monotonic() - t

def part_cli(ck:Check, d:dict):
    c = ck.cfg
    root, out = ck.out/'cli_data', ck.out/'cli_run'
    shutil.rmtree(out, ignore_errors=True)                   # a previous check's runs would all be "done before"
    core.fabricate_dataset('cifar10', root, n_train=2 * c.limit, n_test=min(c.limit, 1000))
    argv = ['run', 'gmix', '--preset', 'paper', '--device', str(ck.dev), '--limit', str(c.limit), '--epochs', '2',
            '--seeds', '1', '--data-root', str(root), '--out', str(out), *c.cli_extra]
    d['command'] = 'python -m flatnb ' + ' '.join(argv)
    rc, text, s = flatnb_cli(argv)
    runs = [l for l in text.splitlines() if re.match(r'\[\d+/\d+\]', l)]
    d['first'] = dict(rc=rc, seconds=s, runs=len(runs), tail=text.strip().splitlines()[-3:])
    ck.save()
    if rc: raise RuntimeError(f"flatnb run exited with {rc}: {text.strip().splitlines()[-1:]}")
    n = int(re.match(r'\[\d+/(\d+)\]', runs[0]).group(1)) if runs else 0
    results = sorted(out.glob('runs/*/result.json'))
    with open(out/'results.csv', newline='') as f: csv_rows = sum(1 for _ in csv.DictReader(f))
    d['outputs'] = dict(**{f: (out/f).is_file() for f in OUTPUTS},
                        runs_expected=n, result_json=len(results), csv_rows=csv_rows)
    stamps = {p: p.stat().st_mtime_ns for p in results}
    rc2, text2, s2 = flatnb_cli(argv)
    runs2 = [l for l in text2.splitlines() if re.match(r'\[\d+/\d+\]', l)]
    d['rerun'] = dict(rc=rc2, seconds=s2, runs=len(runs2), done_before=sum('done before' in l for l in runs2),
                      results_untouched=all(p.stat().st_mtime_ns == t for p, t in stamps.items()))
    o, r = d['outputs'], d['rerun']
    d['ok'] = (all(o[f] for f in OUTPUTS) and n > 0 and o['result_json'] == n
               and o['csv_rows'] == n and rc2 == 0 and r['done_before'] == r['runs'] == n and r['results_untouched'])

def arm_cost(ck:Check, c:dict) -> tuple[float|None, str]:
    "ms per training image of one arm's configuration, and '≈' when estimated (see `part_projection`)"
    m = ck.measured.get((c['model'], DATA[c['data']][0]))
    if m is None: return None, f"{c['model']} at {DATA[c['data']][0]} not timed"
    techs = set(c.get('techniques', ()))
    method = next((TECHNIQUE_METHOD[t] for t in techs if t in TECHNIQUE_METHOD), 'SGD')
    approx = bool(techs - SGD_COST - set(TECHNIQUE_METHOD)) or c['bs'] != m['bs']
    if method in m: return m[method] / m['bs'], '≈' if approx else ''
    w = ck.measured.get(('wrn16_8', DATA['cifar10'][0]), {})
    if method not in w or 'SGD' not in m: return None, f"{method} not timed"
    return m['SGD'] * w[method] / w['SGD'] / m['bs'], '≈'

def part_projection(ck:Check, d:dict):
    from flatnb.recipes import RECIPES
    from flatnb.experiment import resolve, train_classifier
    d['presets'] = []
    for r in RECIPES.values():
        for preset in [p for p in r.presets if p.startswith('paper')]:
            row = dict(recipe=r.name, preset=preset)
            d['presets'].append(row)
            if r.train is not train_classifier: row['note'] = 'not a classifier recipe: not timed'; continue
            cfg, arm_cfgs = resolve(r, preset)
            row.update(data=cfg['data'], model=cfg['model'], arms=len(arm_cfgs), epochs=cfg['epochs'],
                       seeds=cfg['seeds'])
            costs = {a: arm_cost(ck, c) for a, c in arm_cfgs.items()}
            missing = sorted({why for v, why in costs.values() if v is None})
            if missing: row['note'] = '; '.join(missing); continue
            n_train = DATA[cfg['data']][1]
            secs = [costs[a][0] * n_train / 1e3 * c['epochs'] * c['seeds'] for a, c in arm_cfgs.items()]
            row['hours'] = sum(secs) / 3600
            if any(why for _, why in costs.values()):
                row['note'] = '≈: arms estimated (other batch size, model surgery, method cost scaled from WRN-16-8)'

TARGETS = ['SAM / SGD epoch', 'BG-Mix(0.5) / G-Mix', 'compile / eager', 'davda54 WRN-16-8 SAM, 200 epochs']

def target_values(ck:Check) -> dict:
    "target -> dict(value, limit, text, status, the learners to profile on a miss)"
    w = ck.parts.get('wrn16_8', {}).get('data', {}).get('methods', {})
    comp = ck.parts.get('compile', {}).get('data', {}).get('methods', {})
    ev = ck.parts.get('wrn16_8', {}).get('data', {}).get('eval')
    t = {}
    def put(name, value, limit, text, prof, fmt='{:.3f}'):
        status = 'not measured' if value is None else ('met' if value <= limit else 'missed')
        t[name] = dict(value=value, limit=limit, text=text, shown=None if value is None else fmt.format(value),
                       status=status, profile=prof)
    r = w.get('SAM', {}).get('vs_base', {})
    put(TARGETS[0], r.get('median'), 2.05, 'SAM epoch / SGD epoch, WRN-16-8 eager, median of interleaved rounds',
        [('wrn16_8', 'SAM', False), ('wrn16_8', 'SGD', False)])
    bg, g = w.get('BG-Mix', {}).get('ms_rounds'), w.get('G-Mix', {}).get('ms_rounds')
    put(TARGETS[1], ratio_stats(bg, g).get('median') if bg and g else None, 0.90,
        'BG-Mix(0.5) / G-Mix, WRN-16-8 eager', [('wrn16_8', 'BG-Mix', False), ('wrn16_8', 'G-Mix', False)])
    worst = max(comp, key=lambda m: comp[m]['compiled_vs_eager']['median']) if comp else None
    put(TARGETS[2], comp[worst]['compiled_vs_eager']['median'] if worst else None, 1.0,
        f"torch.compile / eager ms/step, WRN-16-8, the worst of {len(comp)} methods" + (f" ({worst})" if worst else ''),
        [('wrn16_8', worst, True)])
    if errs := ck.parts.get('compile', {}).get('data', {}).get('errors'):   # a method that fails is not "no slower"
        t[TARGETS[2]].update(status='missed', text=t[TARGETS[2]]['text'] + f"; fails with {', '.join(errs)}")
    sam = [x for x in (w.get('SAM', {}).get('epoch_s'), comp.get('SAM', {}).get('epoch_s')) if x]
    mins = 200 * (min(sam) + ev['epoch_s']) / 60 if sam and ev else None
    put(TARGETS[3], mins, 10.0, 'WRN-16-8 SAM at davda54/sam (200 epochs, batch 128, CIFAR-10): 200 x (best SAM '
        'epoch of eager/compiled + one 10,000-image evaluation), minutes', [('wrn16_8', 'SAM', False)], '{:.1f}')
    return t

def profile_ops(ck:Check, learn:Learner, steps:int=PROFILE_STEPS, top:int=10) -> list:
    "The `top` operators by self time (the device's on CUDA) over 1 + `steps` training steps"
    from torch.profiler import ProfilerActivity, profile
    cuda = ck.dev.type == 'cuda'
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        learn.cb(StepTimer).run(learn, 1, steps)
    key = 'self_device_time_total' if cuda else 'self_cpu_time_total'
    evs = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:top]
    return [dict(op=e.key, self_ms=getattr(e, key) / 1e3, calls=e.count) for e in evs]

def part_targets(ck:Check, d:dict):
    d['targets'] = t = target_values(ck); d['profiles'] = {}
    ck.save()
    todo = [k for v in t.values() if v['status'] == 'missed' or ck.profile == 'always' for k in v['profile']]
    if ck.profile == 'never': todo = []
    for k in dict.fromkeys(todo):
        if k in ck.learners:
            d['profiles'][f"{k[0]} {k[1]}{' compiled' if k[2] else ''}"] = profile_ops(ck, ck.learners[k]); ck.save()

PARTS = dict(env=part_env, loader=part_loader, wrn16_8=part_wrn16_8, compile=part_compile, models=part_models,
             cli=part_cli, projection=part_projection, targets=part_targets)
ALWAYS = {'projection', 'targets'}   # they compute from what was measured: run even when the total budget is spent
WATCHDOG_S = 20   # after the total budget, the seconds they get before the watchdog ends the process


# ---- running the parts within their budgets ----
def on_signal(signum, frame):
    "SIGALRM (a budget is spent) and SIGTERM interrupt the part that runs"
    raise OutOfTime('time budget' if signum == signal.SIGALRM else 'terminated')

def run_part(ck:Check, name:str, f):
    p = ck.parts[name] = dict(status='running', budget_s=ck.cfg.budgets[name], data={})
    left = ck.deadline - time.monotonic()
    if left < 1 and name not in ALWAYS:
        p['status'] = 'not run: the total budget is spent'; ck.save(); return
    if ck.dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(ck.dev)
    t = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, max(min(p['budget_s'], left), 5 if name in ALWAYS else 0.1))
        try: f(ck, p['data']); p['status'] = 'ok'
        finally: signal.setitimer(signal.ITIMER_REAL, 0)
    except OutOfTime as e: p['status'] = f'cut off after {time.monotonic() - t:.0f} s ({e}); what was measured is kept'
    except Skip as e: p['status'] = f'skipped: {e}'
    except Exception as e:
        p['status'] = f'error: {type(e).__name__}: {e}'; p['traceback'] = traceback.format_exc(limit=6)
    p['seconds'] = time.monotonic() - t
    p['peak_mem_mib'] = (torch.cuda.max_memory_allocated(ck.dev) if ck.dev.type == 'cuda'
                         else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    ck.save()

def watchdog(ck:Check, at:float):
    "Last resort, in a thread: past `at` the main thread is stuck in C code that SIGALRM cannot interrupt; report, exit"
    while time.monotonic() < at: time.sleep(1)
    for p in list(ck.parts.values()):
        if p['status'] in ('running', 'not run yet'): p['status'] = 'stopped by the watchdog: stuck past the budget'
    try: ck.save()
    finally: os._exit(124)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='runs/gpu_check', help='folder of gpu_check.json, gpu_check.md and the CLI run')
    ap.add_argument('--device', default='cuda', help="'cuda', 'cuda:N' or 'cpu' (default: cuda)")
    ap.add_argument('--tiny', action='store_true', help='small batches, 1-step rounds, no torch.compile: a smoke test')
    ap.add_argument('--budget', type=float, help='seconds for the whole check (default: 465; --tiny: 55)')
    ap.add_argument('--parts', help=f"comma-separated subset of: {', '.join(PARTS)}")
    ap.add_argument('--part-budget', action='append', default=[], metavar='PART=SECONDS',
                    help='change the budget of a part, e.g. --part-budget cli=300 (repeatable)')
    ap.add_argument('--profile', choices=('miss', 'always', 'never'), default='miss',
                    help='torch.profiler top ops: for missed targets (default), always, never')
    a = ap.parse_args(argv)
    cfg = TINY if a.tiny else FULL
    budgets = dict(cfg.budgets)
    for b in a.part_budget:
        k, _, v = b.partition('=')
        if k not in PARTS or not re.fullmatch(r'\d+(\.\d*)?', v):
            ap.error(f"--part-budget expects PART=SECONDS, PART one of {', '.join(PARTS)}; got {b!r}")
        budgets[k] = float(v)
    cfg = replace(cfg, budgets=budgets)
    parts = a.parts.split(',') if a.parts else list(PARTS)
    if bad := [p for p in parts if p not in PARTS]:
        ap.error(f"unknown part(s) {', '.join(bad)}; choose from {', '.join(PARTS)}")
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    ck = Check(cfg, default_device(a.device), out, T0 + (a.budget or cfg.total), a.profile)
    ck.parts = {p: dict(status='not run yet', budget_s=cfg.budgets[p], data={}) for p in parts}
    signal.signal(signal.SIGALRM, on_signal); signal.signal(signal.SIGTERM, on_signal)
    threading.Thread(target=watchdog, args=(ck, ck.deadline + WATCHDOG_S), daemon=True).start()
    stopped = False   # after SIGTERM, only the parts that compute from what was measured, without profiles
    for name in parts:
        if stopped and name not in ALWAYS: continue
        try: run_part(ck, name, PARTS[name])
        except OutOfTime: stopped = True   # SIGTERM between two parts
        if stopped or 'terminated' in ck.parts[name]['status']: stopped, ck.profile = True, 'never'
    for p in ck.parts.values():
        if p['status'] in ('not run yet', 'running'): p['status'] = 'not run: the check was stopped'
    ck.save()
    print(f"{out/'gpu_check.md'} ({time.monotonic() - T0:.0f} s)")
    return 0 if all(p['status'] == 'ok' or p['status'].startswith('skipped') for p in ck.parts.values()) else 1


# ---- gpu_check.md ----
def table(head:list, rows:list) -> str:
    line = lambda cells: '| ' + ' | '.join(map(str, cells)) + ' |'
    return '\n'.join([line(head), '|' + '---|' * len(head)] + [line(r) for r in rows])

def rng(r:dict) -> str: return f"{r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f})" if r else ''

def md_env(d):
    keys = ('device', 'memory_gib', 'capability', 'torch', 'cuda', 'cudnn', 'flatnb', 'python', 'cpus', 'torch_threads',
            'autocast', 'cudnn_benchmark', 'float32_matmul_precision')
    return ' · '.join(f"{k} {d[k]:.1f}" if isinstance(d[k], float) else f"{k} {d[k]}" for k in keys if k in d)

def md_loader(d):
    if 'loaders' not in d: return ''
    rows = [(k, f"{v['epoch_s']*1e3:.1f}", f"{v['ratio']:.2f} ({v['ratio_min']:.2f}-{v['ratio_max']:.2f})", v['rounds'])
            for k, v in d['loaders'].items()]
    return (f"{d['images']:,} images {d['shape']}, batch {d['bs']}, crop (padding 4) + flip; contenders interleaved; "
            "ratio > 1: DeviceLoader is faster\n\n"
            + table(['loader', 'ms/epoch (median)', 'ratio to DeviceLoader (median, min-max)', 'rounds'], rows))

def md_methods(rows:dict, n_train:int) -> str:
    return table(['method', 'ms/step', 'images/s', f'epoch of {n_train:,} (s)', 'vs SGD (median, min-max)'],
                 [(m, f"{r['ms']:.2f}", f"{r['img_s']:,.0f}", f"{r['epoch_s']:.1f}", rng(r['vs_base']))
                  for m, r in rows.items()])

def md_wrn16_8(d):
    if 'methods' not in d: return ''
    s = (f"{d['model']} ({d['params']:,} parameters), input {d['shape']}, batch {d['bs']}; {d['warmup']} warm-up "
         f"steps, then interleaved rounds of {d['steps']} steps\n\n" + md_methods(d['methods'], DATA['cifar10'][1]))
    if 'eval' in d: s += (f"\n\nevaluation pass: {d['eval']['ms']:.1f} ms for {d['eval']['images']:,} images "
                          f"({d['eval']['epoch_s']:.2f} s per {d['eval']['test_images']:,}-image test set)")
    return s

def md_compile(d):
    rows = [(m, f"{r['eager_ms']:.2f}", f"{r['compiled_ms']:.2f}", rng(r['compiled_vs_eager']), f"{r['img_s']:,.0f}",
             f"{r['epoch_s']:.1f}", f"{d['compile_s'].get(m, 0):.0f}") for m, r in d.get('methods', {}).items()]
    s = table(['method', 'eager ms/step', 'compiled ms/step', 'compiled / eager (median, min-max)', 'images/s',
               'epoch of 50,000 (s)', 'warm-up incl. compilation (s)'], rows) if rows else ''
    return s + ''.join(f"\n\n**{m} fails under torch.compile**: {e}" for m, e in d.get('errors', {}).items())

def md_models(d):
    out = []
    for k, r in d.get('models', {}).items():
        if 'methods' in r:
            out.append(f"**{r['model']}** ({r['params']:,} parameters), input {r['shape']} ({r['data']}), "
                       f"batch {d['bs']}\n\n" + md_methods(r['methods'], DATA[r['data']][1]))
    return '\n\n'.join(out)

def md_cli(d):
    if 'first' not in d: return f"`{d['command']}`" if 'command' in d else ''
    r1 = d['first']
    s = f"`{d['command']}`\n\n- first run: exit {r1['rc']}, {r1['runs']} runs, {r1['seconds']:.1f} s"
    if 'outputs' in d:
        o = d['outputs']
        s += ("\n- outputs: " + ', '.join(f"{f} {'yes' if o[f] else 'MISSING'}" for f in OUTPUTS)
              + f"; result.json {o['result_json']}/{o['runs_expected']}; results.csv rows {o['csv_rows']}")
    if 'rerun' in d:
        r = d['rerun']
        s += (f"\n- rerun: exit {r['rc']}, {r['seconds']:.1f} s, 'done before' {r['done_before']}/{r['runs']}, "
              f"result files untouched: {'yes' if r['results_untouched'] else 'NO'}")
    if 'ok' in d: s += f"\n- check: {'passed' if d['ok'] else 'FAILED'}"
    return s

def md_projection(d):
    rows = [(r['recipe'], r['preset'], r.get('data', ''), r.get('model', ''), r.get('arms', ''), r.get('epochs', ''),
             r.get('seeds', ''), f"{r['hours']:.1f}" if 'hours' in r else '-', r.get('note', ''))
            for r in d.get('presets', [])]
    return ("training steps only (no evaluation, sharpness or checkpoints), eager, at the throughput measured above\n\n"
            + table(['recipe', 'preset', 'data', 'model', 'arms', 'epochs', 'seeds', 'projected hours', 'note'], rows)
            ) if rows else ''

def md_targets(d):
    t = d.get('targets')
    if not t: return ''
    s = table(['target', 'measured', 'limit', 'status', 'how'],
              [(k, v['shown'] or '-', f"{v['limit']:g}", v['status'], v['text']) for k, v in t.items()])
    for k, ops in d.get('profiles', {}).items():
        s += f"\n\n**profile: {k}** (top ops by self time over {PROFILE_STEPS + 1} steps)\n\n" + table(
            ['op', 'self ms', 'calls'], [(o['op'], f"{o['self_ms']:.2f}", o['calls']) for o in ops])
    return s

MD = dict(env=md_env, loader=md_loader, wrn16_8=md_wrn16_8, compile=md_compile, models=md_models, cli=md_cli,
          projection=md_projection, targets=md_targets)
TITLES = dict(env='Device', loader='Data loading', wrn16_8='WRN-16-8 training throughput per method (eager)',
              compile='WRN-16-8 with torch.compile', models='Other models (eager)',
              cli='flatnb run gmix --preset paper',
              projection='Projected wall time of the paper presets', targets='Speed targets')

def render(meta:dict, parts:dict) -> str:
    s = [f"# flatnb GPU check\n\nmode {meta['mode']} · device {meta['device']} · {meta['elapsed_s']:.0f} s of "
         f"{meta['budget_s']:.0f} s · written {meta['written']}"]
    if meta['mode'] == 'tiny': s.append("**--tiny: a smoke test of every part. Its timings are not results.**")
    mem = 'peak GPU memory (MiB)' if meta['device'].startswith('cuda') else 'peak RSS so far (MiB)'
    s.append(table(['part', 'status', 'seconds', 'budget (s)', mem],
                   [(k, p['status'], f"{p.get('seconds', 0):.1f}", p['budget_s'], f"{p.get('peak_mem_mib', 0):.0f}")
                    for k, p in parts.items()]))
    for k in ['targets'] + [k for k in parts if k != 'targets']:
        if k in parts:
            body = MD[k](parts[k]['data']) if parts[k]['data'] else ''
            s.append(f"## {TITLES[k]}\n\n*{parts[k]['status']}*" + (f"\n\n{body}" if body else ''))
    return '\n\n'.join(s) + '\n'


if __name__ == '__main__': raise SystemExit(main())
