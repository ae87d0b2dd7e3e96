"""bf16 autocast, channels_last and torch.compile forced on the CPU: every technique trains, keeps the autocast dtype
and the memory format, and resumes exactly from a checkpoint (tiny fits: 3 batches of 16 three-channel 8×8 digits)"""
import math
from functools import partial
import pytest, torch
import torch._dynamo
from flatnb.core import Data, digits, set_seed
from conftest import StopAfter
from flatnb.learner import Learner, Callback, Checkpoint, simple_cnn, cosine_restarts
from flatnb.sam import SAMCB
from flatnb.mixup import MixUp, Cutout
from flatnb.gmix import GMix
from flatnb.swa import SWA
from flatnb.distance import RBFDistance, SnapshotEnsemble
from flatnb.models import mnist_1k5_dw
from flatnb.blurpool import blurpool
from flatnb.se import squeeze_excite

CL = torch.channels_last
_DATA = []

def tiny() -> Data:
    "48 training and 64 test digits with 3 channels (with one channel the two memory formats are the same layout)"
    if not _DATA:
        d = digits(8, n_train=48, channels=3)
        _DATA.append(Data(d.x_train, d.y_train, d.x_test[:64], d.y_test[:64], 10, 'tiny'))
    return _DATA[0]

def cnn(): return simple_cnn(10, 3, widths=(4, 8))
def blur_se(): return squeeze_excite(blurpool(mnist_1k5_dw(10, 3), min_channels=4), min_channels=8, latent_channels=4)

TECHNIQUES = {   # name: (model, callbacks)
    'sam': (cnn, lambda: [SAMCB(rho=0.05)]),
    'asam': (cnn, lambda: [SAMCB(rho=0.5, adaptive=True)]),
    'mixup': (cnn, lambda: [MixUp(0.4)]),
    'cutout': (cnn, lambda: [Cutout(3)]),
    'gmix-g': (cnn, lambda: [GMix('g', rho=0.05)]),
    'gmix-bg': (cnn, lambda: [GMix('bg', rho=0.05)]),
    'gmix-dg': (cnn, lambda: [GMix('dg', rho=0.05)]),
    'swa': (cnn, lambda: [SWA(start=1)]),
    'rbf-distance': (cnn, lambda: [RBFDistance(strength=1.0, start=1)]),
    'snapshot-ensemble': (cnn, lambda: [cosine_restarts(2), SnapshotEnsemble(cycles=2)]),
    'blurpool+se': (blur_se, lambda: []),
}
CONFIGS = {'bf16': dict(amp=True), 'channels_last': dict(channels_last=True),
           'bf16+channels_last': dict(amp=True, channels_last=True)}

class Probe(Callback):
    "Record the dtype of the training predictions and the memory format of every training input of the model"
    order = 60
    def __init__(self, hook:bool=True): self.hook = hook
    def before_fit(self, learn):
        self.dtypes, self.formats, self.handle = set(), set(), None
        def look(m, args):
            if m.training: self.formats.add(args[0].is_contiguous(memory_format=CL))
        if self.hook: self.handle = learn.model.register_forward_pre_hook(look)
    def after_batch(self, learn):
        if not learn.training: return
        self.dtypes.add(learn.preds.dtype); self.formats.add(learn.xb.is_contiguous(memory_format=CL))
    def after_fit(self, learn):
        if self.handle is not None: self.handle.remove()


def fit(name, config, ckpt=None, stop=None, seed=0, hook=True) -> Learner:
    model, cbs = TECHNIQUES[name]
    if config.get('compile'): torch._dynamo.reset()   # compile from scratch, as a new process would
    set_seed(seed)
    extra = [Probe(hook)] + ([Checkpoint(ckpt)] if ckpt else []) + ([StopAfter(stop)] if stop is not None else [])
    return Learner(model(), tiny(), opt=partial(torch.optim.SGD, lr=0.1, momentum=0.9), cbs=cbs() + extra, bs=16,
                   device='cpu', progress=False, **config).fit(2)

def check(name, config, tmp_path, hook=True):
    "Trains (finite losses, weights move), dtype and format as configured, and resume after epoch 0 is exact"
    amp, cl = config.get('amp', False), config.get('channels_last', False)
    set_seed(0); w0 = [p.detach().clone() for p in TECHNIQUES[name][0]().parameters()]
    ref = fit(name, config, tmp_path/'a.pt', hook=hook)
    h = ref.history
    losses = [r[k] for r in h for k in ('train_loss', 'test_loss', 'clean_train_loss')]
    assert len(h) == 2 and all(map(math.isfinite, losses)), h
    assert all(not torch.equal(a, b) for a, b in zip(w0, ref.model.parameters()) if a.ndim >= 2), 'weights did not move'
    probe = ref.cb(Probe)
    assert probe.dtypes == {torch.bfloat16 if amp else torch.float32}, probe.dtypes
    assert probe.formats == {cl}, probe.formats      # every training input of the model is channels_last iff asked
    convs = [p for p in ref.model.parameters() if p.ndim == 4]
    if cl: assert convs and all(p.is_contiguous(memory_format=CL) for p in convs)
    fit(name, config, tmp_path/'b.pt', stop=0, hook=hook)            # killed after epoch 0
    res = fit(name, config, tmp_path/'b.pt', seed=123, hook=hook)     # resumed in a "new process"
    for (k, a), b in zip(ref.model.state_dict().items(), res.model.state_dict().values()):
        assert torch.equal(a, b), f'{k} differs after resume'
    if cl: assert all(p.is_contiguous(memory_format=CL) for p in res.model.parameters() if p.ndim == 4)
    assert [r['test_acc'] for r in h] == [r['test_acc'] for r in res.history]

@pytest.mark.parametrize('config', CONFIGS)
@pytest.mark.parametrize('name', TECHNIQUES)
def test_technique(name, config, tmp_path): check(name, CONFIGS[config], tmp_path)

@pytest.mark.slow
@pytest.mark.parametrize('name', TECHNIQUES)
def test_technique_compiled(name, tmp_path):
    "torch.compile (inductor on the CPU) with bf16 and channels_last; the input hook is left out of the compiled graph"
    check(name, dict(amp=True, channels_last=True, compile=True), tmp_path, hook=False)

def test_defaults_on_cpu():
    "On a CPU the defaults are fp32 and the contiguous format; the switches validate their values"
    learn = Learner(cnn(), tiny(), cbs=[Probe()], bs=16, device='cpu', progress=False).fit(1)
    assert learn.amp_dtype is None and learn.memory_format == torch.contiguous_format
    assert learn.cb(Probe).dtypes == {torch.float32} and learn.cb(Probe).formats == {False}
    off = Learner(cnn(), tiny(), device='cpu', amp=False, channels_last=False, progress=False)
    assert off.amp_dtype is None and off.memory_format == torch.contiguous_format
    for kw in (dict(amp='on'), dict(channels_last=1.5), dict(compile=None)):
        with pytest.raises(ValueError, match=next(iter(kw))): Learner(cnn(), tiny(), device='cpu', **kw)
