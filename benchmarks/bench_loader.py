"""Device-resident batches (`flatnb.core.DeviceLoader`) against `torch.utils.data.DataLoader` over a `TensorDataset`.

Same data, same batch size, same augmentation (random crop with 4-pixel padding + horizontal flip), one epoch each,
repeated; prints seconds per epoch and the ratio DataLoader / DeviceLoader (> 1 means DeviceLoader is faster).
Two DataLoader variants: the batch-augmented one (collate, then the same vectorised `Augment`) and the usual
per-sample one (crop and flip in `__getitem__`, default collate).

    python benchmarks/bench_loader.py [--n 20000] [--bs 128] [--device cpu|cuda] [--reps 3]
"""
import argparse, time
import torch, torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset, Dataset
from flatnb.core import Augment, DeviceLoader

class PerSampleAug(Dataset):
    "The textbook pipeline: crop and flip one image at a time in __getitem__"
    def __init__(self, x, y, padding=4): self.x, self.y, self.p = x, y, padding
    def __len__(self): return len(self.x)
    def __getitem__(self, i):
        x = F.pad(self.x[i], (self.p,)*4)
        dy, dx = torch.randint(0, 2*self.p+1, (2,)).tolist()
        x = x[:, dy:dy+self.x.shape[2], dx:dx+self.x.shape[3]]
        return (x.flip(2) if torch.rand(()) < 0.5 else x), self.y[i]

def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()

def epoch_time(it, dev, reps):
    "Best of `reps` epochs: iterate, touch every batch on the device"
    best = float('inf')
    for _ in range(reps):
        sync(dev); t = time.perf_counter(); s = torch.zeros((), device=dev)
        for xb, yb in it(): s += xb.to(dev, non_blocking=True)[:, 0, 0, 0].sum()
        sync(dev); best = min(best, time.perf_counter() - t)
    return best

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=20000); p.add_argument('--bs', type=int, default=128)
    p.add_argument('--device', default='cpu'); p.add_argument('--reps', type=int, default=3)
    a = p.parse_args()
    dev = torch.device(a.device)
    x, y = torch.randn(a.n, 3, 32, 32), torch.randint(0, 10, (a.n,))
    aug = Augment(padding=4, flip=True)
    xd, yd = x.to(dev), y.to(dev)
    dl = DeviceLoader(xd, yd, a.bs, shuffle=True, tfms=aug)
    t_dev = epoch_time(lambda: iter(dl), dev, a.reps)
    tdl = DataLoader(TensorDataset(x, y), a.bs, shuffle=True, pin_memory=dev.type == 'cuda')
    t_batch = epoch_time(lambda: ((aug(xb.to(dev)), yb) for xb, yb in tdl), dev, a.reps)
    sdl = DataLoader(PerSampleAug(x, y), a.bs, shuffle=True, pin_memory=dev.type == 'cuda')
    t_sample = epoch_time(lambda: iter(sdl), dev, a.reps)
    print(f"{a.n} images 3x32x32, batch {a.bs}, device {dev}, best of {a.reps} epochs")
    print(f"DeviceLoader                               {t_dev*1e3:8.1f} ms/epoch")
    print(f"DataLoader(TensorDataset) + batch Augment  {t_batch*1e3:8.1f} ms/epoch   ratio {t_batch/t_dev:5.2f}x")
    print(f"DataLoader, per-sample crop/flip           {t_sample*1e3:8.1f} ms/epoch   ratio {t_sample/t_dev:5.2f}x")

if __name__ == '__main__': main()
