"""Overhead of BlurPool and Squeeze-Excitation on `001`'s CIFAR model `cifar_143k_dw`.

Times one forward+backward pass of a batch of 3x32x32 images for four variants of the same model
(plain, + BlurPool, + SE, + both), measured in the same run, interleaved round by round, and prints
each variant's median time as a ratio to the plain model's.

    python benchmarks/bench_layers.py                       # CPU, fp32
    python benchmarks/bench_layers.py --device cuda         # CUDA, bf16 autocast + channels_last
"""
import argparse, statistics, time
import torch
from flatnb.core import default_device, autocast_dtype
from flatnb.models import cifar_143k_dw, n_params
from flatnb.blurpool import blurpool
from flatnb.se import squeeze_excite

def variants(se_min_channels, se_latent):
    plain = lambda: cifar_143k_dw()
    bp = lambda: blurpool(cifar_143k_dw())
    se = lambda: squeeze_excite(cifar_143k_dw(), min_channels=se_min_channels, latent_channels=se_latent)
    both = lambda: squeeze_excite(blurpool(cifar_143k_dw()), min_channels=se_min_channels, latent_channels=se_latent)
    return {'plain': plain, 'blurpool': bp, 'se': se, 'blurpool+se': both}

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cpu', help="'cpu' (default), 'cuda', 'cuda:N'")
    p.add_argument('--bs', type=int, default=None, help='batch size (default 64 on CPU, 512 on CUDA)')
    p.add_argument('--rounds', type=int, default=5, help='interleaved rounds; the median over rounds is reported')
    p.add_argument('--iters', type=int, default=None, help='forward+backward passes per round (default 3 CPU, 30 CUDA)')
    p.add_argument('--se-min-channels', type=int, default=16, help='SE after every conv with at least this many outputs')
    p.add_argument('--se-latent', type=int, default=8, help='latent channels of each SE block')
    p.add_argument('--no-channels-last', action='store_true', help='on CUDA, keep NCHW')
    a = p.parse_args()
    dev = default_device(a.device)
    cuda = dev.type == 'cuda'
    bs, iters = a.bs or (512 if cuda else 64), a.iters or (30 if cuda else 3)
    if bs < 1 or a.rounds < 1 or iters < 1: raise SystemExit('bs, rounds and iters must be >= 1')
    dtype = autocast_dtype(dev)
    fmt = torch.channels_last if cuda and not a.no_channels_last else torch.contiguous_format
    torch.manual_seed(0)
    x = torch.randn(bs, 3, 32, 32, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (bs,), device=dev)
    models = {}
    for k, f in variants(a.se_min_channels, a.se_latent).items():
        models[k] = f().to(dev, memory_format=fmt).train()
    def step(m):
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        m.zero_grad(set_to_none=True)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for m in models.values():  # warm-up (cuDNN autotuning, allocator)
        for _ in range(2): step(m)
    sync()
    times = {k: [] for k in models}
    for _ in range(a.rounds):
        for k, m in models.items():
            sync(); t0 = time.perf_counter()
            for _ in range(iters): step(m)
            sync(); times[k].append((time.perf_counter() - t0) / iters)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"device={dev} ({torch.cuda.get_device_name(dev) if cuda else 'cpu, %d threads' % torch.get_num_threads()}) "
          f"bs={bs} autocast={dtype} channels_last={fmt == torch.channels_last} rounds={a.rounds} iters={iters}")
    print(f"{'variant':<13}{'params':>9}{'fwd+bwd ms':>12}{'ratio':>8}")
    for k in models:
        print(f"{k:<13}{n_params(models[k]):>9,}{med[k]*1e3:>12.2f}{med[k]/med['plain']:>8.2f}")

if __name__ == '__main__': main()
