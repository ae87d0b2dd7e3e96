"""Cost of a SAM step and of the G-Mix modes, as ratios against baselines measured in the same run.

A small CNN with BatchNorm on a batch of 128 3x32x32 images (random data: only the time matters).
Printed ratios (per training step, median over interleaved rounds):

  SAM / SGD                  two forward+backward passes: should be <= 2.1
  SAM / per-parameter SAM    flatnb's foreach SAM vs a plain per-parameter loop SAM (davda54-style): should be <= 1
  ASAM / SGD
  G-Mix / SGD, BG-Mix(0.5) / G-Mix, DG-Mix(0.5) / G-Mix     BG-Mix should be clearly below 1

    python benchmarks/bench_optim.py                     # CPU, fp32, CPU time of one thread (robust when the machine is shared)
    python benchmarks/bench_optim.py --clock wall --threads 2   # elapsed time instead
    python benchmarks/bench_optim.py --device cuda       # bf16 autocast + channels_last
"""
import argparse, statistics, time
from contextlib import nullcontext
import torch
import torch.nn.functional as F
from flatnb.learner import simple_cnn
from flatnb.sam import SAM, frozen_bn_stats
from flatnb.gmix import gmix_step


class LoopSAM(torch.optim.Optimizer):
    "The usual per-parameter-loop SAM (as in davda54/sam): Python arithmetic per tensor, old weights kept in `state`"
    def __init__(self, params, base_optimizer, rho=0.05, **kwargs):
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def first_step(self, zero_grad=False):
        grad_norm = torch.norm(torch.stack([p.grad.norm(p=2) for g in self.param_groups for p in g['params'] if p.grad is not None]), p=2)
        for group in self.param_groups:
            scale = group['rho'] / (grad_norm + 1e-12)
            for p in group['params']:
                if p.grad is None: continue
                self.state[p]['old_p'] = p.data.clone()
                p.add_(p.grad * scale.to(p))
        if zero_grad: self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad=False):
        for group in self.param_groups:
            for p in group['params']:
                if p.grad is None: continue
                p.data = self.state[p]['old_p']
        self.base_optimizer.step()
        if zero_grad: self.zero_grad()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cpu', help="'cpu' (fp32) or 'cuda' (bf16 autocast + channels_last)")
    ap.add_argument('--bs', type=int, default=128)
    ap.add_argument('--widths', default='16,32,64', help='channels of the conv-BN-ReLU blocks')
    ap.add_argument('--steps', type=int, default=3, help='steps per timed round')
    ap.add_argument('--rounds', type=int, default=15, help='interleaved rounds (the median is reported)')
    ap.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: 1 with --clock cpu, else the default)')
    ap.add_argument('--clock', choices=('auto', 'cpu', 'wall'), default='auto',
                    help="'cpu': CPU time of this thread (robust on a shared machine; one intra-op thread), "
                         "'wall': elapsed time; 'auto': cpu on CPU, wall (synchronised) on CUDA")
    a = ap.parse_args()
    dev = torch.device(a.device)
    cuda = dev.type == 'cuda'
    clock = ('wall' if cuda else 'cpu') if a.clock == 'auto' else a.clock
    if cuda and clock == 'cpu': raise SystemExit('--clock cpu measures host work only; use wall on CUDA')
    if a.threads or clock == 'cpu': torch.set_num_threads(a.threads or 1)
    now = time.thread_time if clock == 'cpu' else time.perf_counter
    fmt = torch.channels_last if cuda else torch.contiguous_format
    ac = (lambda: torch.autocast('cuda', dtype=torch.bfloat16)) if cuda else nullcontext
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    widths = tuple(int(w) for w in a.widths.split(','))
    torch.manual_seed(0)
    x = torch.randn(a.bs, 3, 32, 32, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (a.bs,), device=dev)

    def model(): return simple_cnn(num_classes=10, in_channels=3, widths=widths).to(dev, memory_format=fmt).train()
    sgd_kw = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)

    def loss(m):
        with ac(): return F.cross_entropy(m(x), y)

    def sgd_step():
        m = model(); o = torch.optim.SGD(m.parameters(), **sgd_kw)
        def step():
            loss(m).backward(); o.step(); o.zero_grad(set_to_none=True)
        return step

    def sam_step(cls, **kw):
        m = model(); o = cls(m.parameters(), torch.optim.SGD, rho=0.05, **kw, **sgd_kw)
        def step():
            loss(m).backward(); o.first_step(zero_grad=True)
            with frozen_bn_stats(m): loss(m).backward()
            o.second_step(zero_grad=True)
        return step

    def gmix(mode):
        m = model(); o = SAM(m.parameters(), torch.optim.SGD, rho=0.05, **sgd_kw)
        def step(): gmix_step(m, o, x, y, mode=mode, ratio=0.5, alpha=1.0, autocast=ac)
        return step

    def sam_overhead(cls):
        "the optimizer part alone: first_step + second_step on fixed gradients (no forward/backward)"
        m = model(); o = cls(m.parameters(), torch.optim.SGD, rho=0.05, **sgd_kw)
        loss(m).backward(); grads = [p.grad.clone() for p in m.parameters()]
        def step():
            for p, g in zip(m.parameters(), grads): p.grad = g
            o.first_step(); o.second_step()
        return step

    cases = {'SAM update only': sam_overhead(SAM), 'loop SAM update only': sam_overhead(LoopSAM),
             'SGD': sgd_step(), 'SAM': sam_step(SAM), 'loop SAM': sam_step(LoopSAM), 'ASAM': sam_step(SAM, adaptive=True),
             'G-Mix': gmix('g'), 'BG-Mix 0.5': gmix('bg'), 'DG-Mix 0.5': gmix('dg')}
    for f in cases.values():  # warm up (allocator, cuDNN autotuning)
        for _ in range(2): f()
    sync()
    times = {k: [] for k in cases}
    for _ in range(a.rounds):
        for k, f in cases.items():
            n = a.steps * (20 if 'update only' in k else 1) # the update alone is ~1000x cheaper: more repeats
            sync(); t = now()
            for _ in range(n): f()
            sync(); times[k].append((now() - t) / n)
    med = {k: statistics.median(v) for k, v in times.items()}
    name = torch.cuda.get_device_name(dev) if cuda else f'CPU, {torch.get_num_threads()} threads'
    print(f"device: {name}; {'bf16 autocast + channels_last' if cuda else 'fp32'}; batch {a.bs}x3x32x32; simple_cnn widths {widths}; "
          f"{a.rounds} rounds x {a.steps} steps, medians of {'thread CPU time' if clock == 'cpu' else 'wall time'}")
    for k, v in med.items(): print(f"  {k:22s} {v * 1e3:8.2f} ms/step")
    print(f"SAM / SGD                 = {med['SAM'] / med['SGD']:.3f}   (limit 2.1)")
    print(f"SAM / per-parameter SAM   = {med['SAM'] / med['loop SAM']:.3f}   (limit 1.0)")
    print(f"SAM / per-parameter SAM, update only (no forward/backward) = {med['SAM update only'] / med['loop SAM update only']:.3f}   (limit 1.0)")
    print(f"ASAM / SGD                = {med['ASAM'] / med['SGD']:.3f}")
    print(f"G-Mix / SGD               = {med['G-Mix'] / med['SGD']:.3f}")
    print(f"BG-Mix(0.5) / G-Mix       = {med['BG-Mix 0.5'] / med['G-Mix']:.3f}   (should be clearly < 1)")
    print(f"DG-Mix(0.5) / G-Mix       = {med['DG-Mix 0.5'] / med['G-Mix']:.3f}")


if __name__ == '__main__':
    main()
