"Launched by tests/test_distributed.py, with or without torchrun: train a small model and save the final weights"
import sys
from functools import partial
import torch
from torch import nn
from flatnb.core import digits, set_seed, init_distributed, is_main_process
from flatnb.learner import Learner

def main(opt_name, out):
    init_distributed('gloo')
    set_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))   # no BatchNorm
    cbs, opt = [], partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    if opt_name == 'sam':
        from flatnb.sam import SAM, SAMCB
        opt, cbs = partial(SAM, base_optimizer=torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9), [SAMCB()]
    learn = Learner(model, digits(8, n_train=256), opt=opt, cbs=cbs, bs=64, device='cpu', progress=False).fit(2)
    if is_main_process(): torch.save(dict(weights=learn.model.state_dict(), history=learn.history), out)

if __name__ == '__main__': main(*sys.argv[1:])
