"Launched by tests/test_distributed.py, with or without torchrun: train a small model and save the final weights"
import argparse
from functools import partial
import torch
from torch import nn
from flatnb.core import digits, set_seed, init_distributed, is_main_process
from flatnb.learner import Learner, Callback, Checkpoint, CancelFitException

class StopAfter(Callback):
    "Simulate a crash: end the fit after epoch `n` (the checkpoint of that epoch is written)"
    order = 200
    def __init__(self, n): self.n = n
    def after_epoch(self, learn):
        if learn.epoch == self.n: raise CancelFitException()

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
    if a.ckpt: cbs.append(Checkpoint(a.ckpt))
    if a.stop_after is not None: cbs.append(StopAfter(a.stop_after))
    learn = Learner(model, digits(8, n_train=256), opt=opt, cbs=cbs, bs=64, device='cpu', progress=False).fit(a.epochs)
    if is_main_process(): torch.save(dict(weights=learn.model.state_dict(), history=learn.history), a.out)

if __name__ == '__main__': main()
