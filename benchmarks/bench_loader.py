"""Device-resident batches (`flatnb.core.DeviceLoader`) against `torch.utils.data.DataLoader` over a `TensorDataset`.

Same data, same batch size, same augmentation (random crop with 4-pixel padding + horizontal flip), one epoch per
measurement. The contenders are interleaved (A B C D, D C B A, A B C D, ...) for `--rounds` rounds, so a change in the
machine's load hits all of them alike; each round gives one ratio per contender, contender / DeviceLoader
(> 1: DeviceLoader is faster). Printed: the median epoch time and the median and min-max of the per-round ratios.

Contenders:
  DeviceLoader                      flatnb's iterator: slices of a device-side permutation, `Augment` on the device
  DeviceLoader, pixel crop          the same with `pixel_crop`, flatnb's crop before it gathered whole rows
  DataLoader + batch Augment        DataLoader(TensorDataset) on the host, collate, copy, the same vectorised `Augment`
  DataLoader, per-sample crop/flip  the textbook pipeline: crop and flip one image at a time in `__getitem__`

On a CPU, the pixel crop is one advanced-indexing gather with 4 broadcast index tensors: for every one of
the N*C*H*W output pixels it loads 4 indices and computes an address, then copies 4 bytes (no row copies, no
vectorisation), while the per-sample pipeline slices a view and copies contiguous rows. Timed one after the other
(all DeviceLoader epochs, then all DataLoader epochs) on a shared machine, the two are compared under different loads:
hence 13.9x in one run and 0.66x in another. `flatnb.core.random_crop` now gathers whole rows: one index per row
of W pixels (`00_core` explains it); the pixel crop stays here as the before of that change.

    python benchmarks/bench_loader.py [--n 20000] [--bs 128] [--device cpu|cuda] [--rounds 5] [--threads 1]
"""
import argparse, statistics, time
import torch, torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset, Dataset
from flatnb.core import Augment, DeviceLoader, random_flip


def pixel_crop(x:Tensor, # (N, C, H, W) images
               padding:int, # zero padding on each side; offsets are drawn in [0, 2*padding]
               generator:torch.Generator|None=None # the source of randomness (on `x`'s device)
              ) -> Tensor:
    "flatnb's crop before it gathered whole rows: one gather of every pixel with four broadcast index tensors"
    if padding == 0: return x
    n, c, h, w = x.shape
    xp = F.pad(x, (padding,)*4)
    dy, dx = torch.randint(0, 2*padding+1, (2, n, 1), device=x.device, generator=generator)
    ar = lambda k: torch.arange(k, device=x.device)
    return xp[ar(n)[:, None, None, None], ar(c)[None, :, None, None],
              (dy + ar(h))[:, None, :, None], (dx + ar(w))[:, None, None, :]]


class PixelCropAugment(Augment):
    "`Augment` with `pixel_crop` (the crop as it was)"
    def __call__(self, x, generator=None):
        x = pixel_crop(x, self.padding, generator)
        return random_flip(x, generator) if self.flip else x


class PerSampleAug(Dataset):
    "The textbook pipeline: crop and flip one image at a time in __getitem__"
    def __init__(self, x, y, padding=4): self.x, self.y, self.p = x, y, padding
    def __len__(self): return len(self.x)
    def __getitem__(self, i):
        x = F.pad(self.x[i], (self.p,)*4)
        dy, dx = torch.randint(0, 2*self.p+1, (2,)).tolist()
        x = x[:, dy:dy+self.x.shape[2], dx:dx+self.x.shape[3]]
        return (x.flip(2) if torch.rand(()) < 0.5 else x), self.y[i]


def contenders(x:Tensor, y:Tensor, bs:int, dev:torch.device) -> dict:
    "name -> a function returning one epoch's iterator of (x, y) batches on `dev`; the first is the baseline"
    aug, pin = Augment(padding=4, flip=True), dev.type == 'cuda'
    xd, yd = x.to(dev), y.to(dev)
    dl = DeviceLoader(xd, yd, bs, shuffle=True, tfms=aug)
    pdl = DeviceLoader(xd, yd, bs, shuffle=True, tfms=PixelCropAugment(padding=4, flip=True))
    tdl = DataLoader(TensorDataset(x, y), bs, shuffle=True, pin_memory=pin)
    sdl = DataLoader(PerSampleAug(x, y), bs, shuffle=True, pin_memory=pin)
    to = lambda b: b.to(dev, non_blocking=True)
    return {'DeviceLoader': lambda: iter(dl),
            'DeviceLoader, pixel crop (before)': lambda: iter(pdl),
            'DataLoader(TensorDataset) + batch Augment': lambda: ((aug(to(xb)), to(yb)) for xb, yb in tdl),
            'DataLoader, per-sample crop/flip': lambda: ((to(xb), to(yb)) for xb, yb in sdl)}


def epoch_time(it, dev:torch.device) -> float:
    "Seconds of one epoch of `it()`, touching every batch on the device"
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    sync(); t = time.perf_counter(); s = torch.zeros((), device=dev)
    for xb, yb in it(): s += xb[:, 0, 0, 0].sum()
    sync(); return time.perf_counter() - t


def compare(its:dict, dev:torch.device, rounds:int=5, warmup:bool=True, deadline:float=float('inf')) -> dict:
    "name -> list of epoch seconds, one per round, the contenders interleaved in alternating order"
    names = list(its)
    if warmup:
        for k in names: epoch_time(its[k], dev)
    times = {k: [] for k in names}
    for r in range(rounds):
        if r and time.monotonic() > deadline: break
        for k in (names if r % 2 == 0 else names[::-1]): times[k].append(epoch_time(its[k], dev))
    return times


def summarise(times:dict) -> dict:
    "name -> median seconds per epoch and the median, min and max over rounds of its ratio to the first contender"
    base = next(iter(times.values()))
    out = {}
    for k, ts in times.items():
        r = [t / b for t, b in zip(ts, base)]
        out[k] = dict(epoch_s=statistics.median(ts), ratio=statistics.median(r), ratio_min=min(r), ratio_max=max(r),
                      rounds=len(ts))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=20000); p.add_argument('--bs', type=int, default=128)
    p.add_argument('--device', default='cpu'); p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--threads', type=int, default=0,
                   help='torch CPU threads (0: the default); 1 is steadier on a shared machine')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    x, y = torch.randn(a.n, 3, 32, 32), torch.randint(0, 10, (a.n,))
    res = summarise(compare(contenders(x, y, a.bs, dev), dev, a.rounds))
    print(f"{a.n} images 3x32x32, batch {a.bs}, device {dev}, {torch.get_num_threads()} threads, "
          f"{a.rounds} interleaved rounds")
    print(f"{'loader':44s} {'ms/epoch':>9s}   ratio to DeviceLoader: median (min-max)")
    for k, v in res.items():
        print(f"{k:44s} {v['epoch_s']*1e3:9.1f}   {v['ratio']:5.2f}x ({v['ratio_min']:.2f}-{v['ratio_max']:.2f})")


if __name__ == '__main__': main()
