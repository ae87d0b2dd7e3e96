"""Checkpoints are read with `torch.load(weights_only=True)`: a crafted `ckpt.pt` runs nothing, and any file that is not
a valid flatnb checkpoint (crafted, truncated, from another model or an older flatnb) stops with one line naming it.

`flatnb measure` does not exist yet: these tests go through resume (`flatnb run` again on a run folder) and through
`Checkpoint` directly. When `measure` comes, it should open checkpoints with `load_checkpoint` and get a test here."""
import os, pathlib, pickle, random, shutil
from functools import partial
import numpy as np, pytest, torch
from torch import nn
from conftest import BASELINE_RUN as ARGS, StopAfter, flatnb
from flatnb.core import Data, digits, rng_state, set_rng_state, set_seed
from flatnb.learner import Checkpoint, CheckpointError, Learner, load_checkpoint, simple_cnn

MSG = 'is not a valid flatnb checkpoint'
FIX = 'delete it to train this run from the start'

class ShellPayload:
    "A pickle that runs a shell command when unpickled"
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return os.system, (f'touch {self.marker}',)

class WritePayload:
    "A pickle that writes a file when unpickled, without a shell"
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return pathlib.Path.write_text, (pathlib.Path(self.marker), 'pwned')

def craft(path, payload, framing):
    "Write `payload` at `path` as `torch.save` does (zip) or as a bare pickle"
    if framing == 'torch': torch.save(payload, path)
    else:
        with open(path, 'wb') as f: pickle.dump(payload, f)

_DATA = []
def tiny() -> Data:
    if not _DATA:
        d = digits(8, n_train=64)
        _DATA.append(Data(d.x_train, d.y_train, d.x_test[:64], d.y_test[:64], 10, 'tiny'))
    return _DATA[0]

def fit(ckpt, widths=(4, 8), stop=None, n_epochs=2, seed=0):
    set_seed(seed)
    model = nn.Sequential(simple_cnn(10, 1, widths=widths), nn.Dropout(0.3), nn.Linear(10, 10))
    cbs = [Checkpoint(ckpt)] + ([StopAfter(stop)] if stop is not None else [])
    return Learner(model, tiny(), opt=partial(torch.optim.SGD, lr=0.1, momentum=0.9), cbs=cbs, bs=16, device='cpu',
                   progress=False).fit(n_epochs)

def one_line(msg, path):
    assert MSG in msg and FIX in msg and str(path) in msg and '\n' not in msg, msg

# --- through `Checkpoint` directly

@pytest.mark.parametrize('framing', ['torch', 'pickle'])
@pytest.mark.parametrize('payload', [ShellPayload, WritePayload])
def test_crafted_pickle_runs_nothing_through_checkpoint(tmp_path, payload, framing):
    ck, marker = tmp_path/'ckpt.pt', tmp_path/'pwned'
    craft(ck, payload(marker), framing)
    with pytest.raises(CheckpointError) as e: fit(ck)
    one_line(str(e.value), ck)
    assert not marker.exists(), 'the payload ran'
    with pytest.raises(CheckpointError): load_checkpoint(ck)
    assert not marker.exists(), 'the payload ran'

def test_a_checkpoint_holds_only_tensors_and_plain_types(tmp_path):
    "What `Checkpoint` writes reads back with weights_only=True (the numpy RNG state included)"
    fit(tmp_path/'ckpt.pt', n_epochs=1)
    ck = torch.load(tmp_path/'ckpt.pt', weights_only=True)
    assert isinstance(ck['rng']['numpy']['keys'], torch.Tensor) and ck['epoch'] == 0

def real_ckpt(tmp_path, **kw):
    src = tmp_path/'real'/'ckpt.pt'; src.parent.mkdir(exist_ok=True); fit(src, n_epochs=1, **kw); return src

@pytest.mark.parametrize('damage, why', [
    (lambda f: f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2]), 'unreadable'),
    (lambda f: f.write_bytes(b''), 'unreadable'),
    (lambda f: f.write_bytes(b'not a torch file'), 'refused'),
    (lambda f: torch.save({k: v for k, v in torch.load(f).items() if k != 'rng'}, f), 'no rng'),
    (lambda f: torch.save([1, 2, 3], f), 'it holds a list, not a dict'),
    (lambda f: torch.save({**torch.load(f), 'epoch': 'zero'}, f), 'its epoch is str, not int'),
    (lambda f: torch.save({**torch.load(f), 'cbs': {'0:MetricsCB': {}, '1:Checkpoint': {}}, 'rng': {'python': 1}}, f),
     'the random state cannot be loaded'),
    # an older flatnb stored NumPy's RNG state as an ndarray, which weights_only refuses
    (lambda f: torch.save({**torch.load(f), 'rng': {**torch.load(f)['rng'], 'numpy': np.random.get_state()}}, f),
     'when opened; refused, nothing ran'),
])
def test_invalid_file_one_line(tmp_path, damage, why):
    ck = tmp_path/'ckpt.pt'; shutil.copy(real_ckpt(tmp_path), ck); damage(ck)
    with pytest.raises(CheckpointError) as e: fit(ck)
    one_line(str(e.value), ck); assert why in str(e.value), str(e.value)

def test_checkpoint_of_another_model(tmp_path):
    ck = real_ckpt(tmp_path, widths=(8, 16))   # the run below builds widths (4, 8)
    with pytest.raises(CheckpointError) as e: fit(ck)
    one_line(str(e.value), ck); assert 'the model weights cannot be loaded into this run' in str(e.value)

# --- resume stays exact

def test_rng_state_round_trip_through_weights_only(tmp_path):
    set_seed(3); np.random.standard_normal()   # leaves a cached Gaussian in NumPy's state
    torch.save(rng_state(), tmp_path/'rng.pt')
    draw = lambda: (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3).tolist())
    a = draw()
    set_seed(99); set_rng_state(torch.load(tmp_path/'rng.pt', weights_only=True))
    assert draw() == a

def test_resume_is_exact(tmp_path):
    ref = fit(tmp_path/'a.pt', n_epochs=3)
    fit(tmp_path/'b.pt', n_epochs=3, stop=0)
    res = fit(tmp_path/'b.pt', n_epochs=3, seed=123)
    for (k, a), b in zip(ref.model.state_dict().items(), res.model.state_dict().values()):
        assert torch.equal(a, b), k
    untimed = lambda h: [{k: v for k, v in r.items() if not k.endswith('_time_s')} for r in h]
    assert untimed(ref.history) == untimed(res.history)

# --- through the command line: rerunning `flatnb run` resumes from the run folder's ckpt.pt


@pytest.fixture(scope='module')
def finished(finished_baseline):
    "A finished run's folder (its ckpt.pt after the last epoch)"
    return finished_baseline

def rerun_with(tmp_path, finished, write):
    "Copy the finished run, remove its result.json, `write(ckpt)`, rerun the same command"
    out = tmp_path/'out'; shutil.copytree(finished, out)
    (run,) = (out/'runs').iterdir()
    (run/'result.json').unlink(); write(run/'ckpt.pt')
    return flatnb(*ARGS, '--out', out), run/'ckpt.pt'

def exit_2_one_line(r, ck):
    assert r.returncode == 2, (r.returncode, r.stderr)
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and 'Traceback' not in err, err
    one_line(err, ck)

@pytest.mark.parametrize('payload', [ShellPayload, WritePayload])
def test_crafted_pickle_runs_nothing_through_resume(tmp_path, finished, payload):
    marker = tmp_path/'pwned'
    r, ck = rerun_with(tmp_path, finished, lambda f: craft(f, payload(marker), 'torch'))
    exit_2_one_line(r, ck)
    assert not marker.exists(), 'the payload ran'

def test_truncated_checkpoint_through_resume(tmp_path, finished):
    r, ck = rerun_with(tmp_path, finished, lambda f: f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2]))
    exit_2_one_line(r, ck); assert 'unreadable' in r.stderr

def test_checkpoint_of_another_model_through_resume(tmp_path, finished):
    other = real_ckpt(tmp_path)
    r, ck = rerun_with(tmp_path, finished, lambda f: shutil.copy(other, f))
    exit_2_one_line(r, ck); assert 'cannot be loaded into this run' in r.stderr
