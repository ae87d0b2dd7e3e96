"Launched by tests/test_distributed.py, with or without torchrun: train a small model and save the final weights"
import argparse
from functools import partial
import torch
from torch import nn
from flatnb.core import digits, set_seed, init_distributed, is_main_process
from conftest import StopAfter
from flatnb.learner import Learner, Checkpoint


def msam_reference(model, out, epochs, rho=0.05):
    from flatnb.core import DeviceLoader, cross_entropy
    data = digits(8, n_train=256)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dl = DeviceLoader(data.x_train, data.y_train, 64, shuffle=True)
    ps = list(model.parameters())
    for epoch in range(epochs):
        dl.set_epoch(epoch)
        for x, y in dl:
            grads = [torch.zeros_like(p) for p in ps]
            for xh, yh in zip(x.tensor_split(2), y.tensor_split(2)):
                g = torch.autograd.grad(cross_entropy(model(xh), yh), ps)
                norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
                eps = [rho * gi / (norm + 1e-12) for gi in g]
                with torch.no_grad():
                    for p, e in zip(ps, eps): p.add_(e)
                g2 = torch.autograd.grad(cross_entropy(model(xh), yh), ps)
                with torch.no_grad():
                    for p, e in zip(ps, eps): p.sub_(e)
                for acc, gi in zip(grads, g2): acc += gi / 2
            for p, gi in zip(ps, grads): p.grad = gi
            opt.step()
    torch.save(dict(weights=model.state_dict(), history=[]), out)

def main():
    p = argparse.ArgumentParser()
    p.add_argument('opt'); p.add_argument('out')
    p.add_argument('--ckpt'); p.add_argument('--stop-after', type=int); p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--sam-per-rank', action='store_true')
    a = p.parse_args()
    init_distributed('gloo')
    set_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))   # no BatchNorm
    cbs, opt = [], partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    if a.opt == 'sam':
        from flatnb.sam import SAM, SAMCB
        opt = partial(SAM, base_optimizer=torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
        cbs = [SAMCB(sync=not a.sam_per_rank)] if a.sam_per_rank else [SAMCB()]
    if a.opt == 'msam-ref':   # one process, by hand: each half of every batch gets its own perturbation (what 2 ranks with sync=False do)
        return msam_reference(model, a.out, a.epochs)
    if a.ckpt: cbs.append(Checkpoint(a.ckpt))
    if a.stop_after is not None: cbs.append(StopAfter(a.stop_after))
    learn = Learner(model, digits(8, n_train=256), opt=opt, cbs=cbs, bs=64, device='cpu', progress=False).fit(a.epochs)
    if is_main_process(): torch.save(dict(weights=learn.model.state_dict(), history=learn.history), a.out)

if __name__ == '__main__':
    try: main()
    finally:   # free the Learner (and its DDP reducer, held in a reference cycle) before the process group goes
        import gc; gc.collect()
        if torch.distributed.is_initialized(): torch.distributed.destroy_process_group()
