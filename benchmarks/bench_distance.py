"""Cost of the RBF checkpoint-distance penalty (flatnb.distance, `002` chapter 2.1).

One SGD step (forward, cross-entropy, backward, SGD-with-momentum step) of a small CNN with BatchNorm on a batch of
128 images 3x32x32, against the same step plus `add_rbf_grad_` to 3 checkpoints. Both are timed in interleaved rounds
in the same run and the median round times are compared; the target is a ratio <= 1.05.

    python benchmarks/bench_distance.py                 # CPU
    python benchmarks/bench_distance.py --device cuda   # GPU: bf16 autocast + channels_last, as the Learner does
"""
import argparse, statistics, time
from contextlib import nullcontext
import torch
from flatnb.core import cross_entropy, default_device, autocast_dtype
from flatnb.learner import simple_cnn
from flatnb.distance import add_rbf_grad_


def bench(device, widths, n_ckpt=3, bs=128, steps=5, rounds=9, warmup=2):
    torch.manual_seed(0)
    cuda = device.type == 'cuda'
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model = simple_cnn(num_classes=10, in_channels=3, widths=widths).to(device, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(bs, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (bs,), device=device)
    dt = autocast_dtype(device)
    ac = (lambda: torch.autocast(device.type, dtype=dt)) if dt else nullcontext
    params = list(model.parameters())
    ckpts = [[p.detach() + 0.01 * (i + 1) * torch.randn_like(p) for p in params] for i in range(n_ckpt)]
    n = sum(p.numel() for p in params)
    sigma = 0.02 * n ** 0.5   # near the distances, so the kernels neither vanish nor saturate
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step(rbf):
        with ac(): loss = cross_entropy(model(x), y)
        loss.backward()
        if rbf: add_rbf_grad_(params, ckpts, sigma, 0.1)
        opt.step(); opt.zero_grad(set_to_none=True)

    def rnd(rbf):
        sync(); t = time.perf_counter()
        for _ in range(steps): step(rbf)
        sync(); return (time.perf_counter() - t) / steps

    for _ in range(warmup): rnd(False); rnd(True)
    base, pen = [], []
    for r in range(rounds):   # interleave, alternating the order, so drifts in machine load hit both alike
        order = (False, True) if r % 2 == 0 else (True, False)
        for rbf in order: (pen if rbf else base).append(rnd(rbf))
    # the penalty alone, for the absolute overhead
    for p in params: p.grad = torch.zeros_like(p)
    sync(); t = time.perf_counter()
    for _ in range(steps * 5): add_rbf_grad_(params, ckpts, sigma, 0.1)
    sync(); alone = (time.perf_counter() - t) / (steps * 5)
    b, q = statistics.median(base), statistics.median(pen)
    return n, b, q, alone


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cpu', help="'cpu', 'cuda', 'cuda:N' (default: cpu)")
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    ap.add_argument('--rounds', type=int, default=9, help='interleaved rounds of each variant (median taken)')
    ap.add_argument('--steps', type=int, default=5, help='steps per round')
    ap.add_argument('--wide', action='store_true', help='also time a 4x wider CNN (more parameters per FLOP)')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    device = default_device(a.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch 128x3x32x32, 3 checkpoints")
    for widths in ((16, 32, 64),) + (((64, 128, 256),) if a.wide else ()):
        n, b, q, alone = bench(device, widths, rounds=a.rounds, steps=a.steps)
        tag = 'target <= 1.05' if widths == (16, 32, 64) else 'wider net, for reference'
        print(f"simple_cnn{widths} ({n:,} params): SGD step {b*1e3:.2f} ms, SGD + add_rbf_grad_ {q*1e3:.2f} ms, "
              f"ratio {q/b:.3f} ({tag}); add_rbf_grad_ alone {alone*1e3:.3f} ms = {alone/b:.3f} of a step")


if __name__ == '__main__':
    main()
