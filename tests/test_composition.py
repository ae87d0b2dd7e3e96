"""Every pair of the runner's techniques either trains together with both techniques changing the run, or is refused
up front with one message naming the pair (the rules: `15_experiment`, "Which techniques compose")."""
import itertools, math
import pytest, torch
from flatnb.core import digits
from flatnb.experiment import Run, check_arm, classifier_learner
from flatnb.recipes import RECIPES, TECHNIQUES, CLASSIFIER

DATA = digits(8, n_train=64)
BASE = {**CLASSIFIER, 'data': 'digits', 'model': 'simple_cnn', 'epochs': 4, 'bs': 16, 'lr': 0.05, 'rho': 0.05,
        'blur_min_channels': 1, 'se_min_channels': 8, 'se_latent_channels': None, 'distance_start': 0.25, 'distance_every': 1,
        'keep': 1, 'cycles': 2}
PAIRS = list(itertools.combinations(TECHNIQUES, 2))

def refusal(a, b):
    try: check_arm((a, b), TECHNIQUES)
    except ValueError as e: return str(e)

def fingerprint(techs):
    "Every number the run records per epoch (times aside), and the final weights"
    cfg = {k: v for t in techs for k, v in TECHNIQUES[t].defaults().items()}
    cfg = {**cfg, **BASE, 'techniques': techs}
    learn = classifier_learner(Run(RECIPES['gmix'], '+'.join(techs), 0, cfg, device=torch.device('cpu')), DATA)
    learn.fit(cfg['epochs'])
    nums = [v for r in learn.history for k, v in sorted(r.items()) if 'time' not in k and isinstance(v, float)]
    weights = sum(float(p.double().sum()) for p in learn.model.state_dict().values() if p.is_floating_point())
    assert math.isfinite(weights) and not any(math.isinf(v) for v in nums), techs
    return [v if v == v else 'nan' for v in nums] + [weights]   # NaN marks "not measured yet" (`rbf_dist`)

@pytest.fixture(scope='module')
def single():
    return {t: fingerprint((t,)) for t in TECHNIQUES}

def test_the_rules_refuse_what_they_say():
    refused = {frozenset((a, b)) for a, b in PAIRS if refusal(a, b)}
    role = lambda r: {t for t, x in TECHNIQUES.items() if x.role == r}
    expected = {frozenset(p) for r in ('step', 'schedule') for p in itertools.combinations(role(r), 2)}
    expected |= {frozenset(('mixup', m)) for m in ('gmix', 'bgmix', 'dgmix')}
    assert refused == expected
    for a, b in PAIRS:
        if frozenset((a, b)) in refused: assert f'techniques {a} and {b} cannot be combined' in refusal(a, b)

ALLOWED = [p for p in PAIRS if not refusal(*p)]
@pytest.mark.parametrize('a, b', ALLOWED, ids=[f'{a}+{b}' for a, b in ALLOWED])
def test_pair_trains_and_both_act(single, a, b):
    both = fingerprint((a, b))
    assert both != single[a], f'adding {b} to {a} changed nothing'
    assert both != single[b], f'adding {a} to {b} changed nothing'
