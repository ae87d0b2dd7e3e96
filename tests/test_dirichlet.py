"Cross-cutting and failure tests of flatnb.dirichlet (MultiGamma KL, Dirichlet reparameterisation, eq. 7)"
import math
import pytest
import torch
from torch.distributions import Dirichlet, Gamma, kl_divergence
from flatnb.dirichlet import multigamma_kl, dirichlet_rsample, approx_gamma_icdf, DIRICHLET_METHODS

def _logu(shape, lo, hi, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.exp(torch.empty(shape, dtype=dtype).uniform_(math.log(lo), math.log(hi), generator=g))

@pytest.mark.parametrize('K', [1, 2, 10, 50])
def test_multigamma_kl_matches_torch_gamma_pairs(K):
    ah, a = _logu((64, K), 0.01, 100, 1), _logu((64, K), 0.01, 100, 2)
    for rate in (0.3, 1.0, 7.0):                                     # the common rate cancels
        ref = kl_divergence(Gamma(ah, rate), Gamma(a, rate)).sum(-1)
        assert torch.allclose(multigamma_kl(ah, a), ref, atol=1e-8, rtol=0)

def test_multigamma_kl_broadcasts_scalar_and_vector_priors():
    ah = _logu((3, 4, 5), 0.05, 20)
    ref = kl_divergence(Gamma(ah, 1.), Gamma(torch.full_like(ah, 0.98), 1.)).sum(-1)
    assert multigamma_kl(ah, 0.98).shape == (3, 4)
    assert torch.allclose(multigamma_kl(ah, 0.98), ref, atol=1e-8, rtol=0)
    assert torch.allclose(multigamma_kl(ah, torch.full((5,), 0.98, dtype=torch.float64)), ref, atol=1e-8, rtol=0)

def test_multigamma_kl_is_nonnegative_zero_at_prior_and_bounds_dirichlet_kl():
    ah, a = _logu((500, 8), 0.01, 100, 3), _logu((500, 8), 0.01, 100, 4)
    kl = multigamma_kl(ah, a)
    assert (kl >= -1e-10).all()
    assert torch.allclose(multigamma_kl(a, a), torch.zeros(500, dtype=torch.float64), atol=1e-12)
    assert (kl >= kl_divergence(Dirichlet(ah), Dirichlet(a)) - 1e-8).all()  # data-processing inequality

@pytest.mark.parametrize('bad', [0., -1., math.nan, math.inf, -math.inf])
def test_multigamma_kl_rejects_bad_concentrations(bad):
    good = torch.ones(4, 3)
    badt = good.clone(); badt[2, 1] = bad
    with pytest.raises(ValueError, match='finite and > 0'): multigamma_kl(badt, good)
    with pytest.raises(ValueError, match='finite and > 0'): multigamma_kl(good, badt)
    with pytest.raises(ValueError, match='finite and > 0'): multigamma_kl(good, bad)

def test_multigamma_kl_rejects_bad_types_and_shapes():
    with pytest.raises(ValueError, match='floating-point'): multigamma_kl(torch.ones(3, dtype=torch.long), 1.)
    with pytest.raises(ValueError, match='at least one axis'): multigamma_kl(torch.tensor(1.), 1.)
    with pytest.raises(ValueError, match='broadcast'): multigamma_kl(torch.ones(2, 3), torch.ones(4))

@pytest.mark.parametrize('method', DIRICHLET_METHODS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_rsample_on_simplex_with_finite_gradients(method, dtype):
    for lo, hi in ((0.01, 0.011), (0.01, 100), (1., 1.), (99, 100)):
        ah = _logu((512, 16), lo, hi, 5, dtype).requires_grad_()
        z = dirichlet_rsample(ah, method)
        assert z.dtype == dtype and z.shape == ah.shape
        assert torch.isfinite(z).all() and (z >= 0).all()
        assert torch.allclose(z.sum(-1), torch.ones(512, dtype=dtype), atol=1e-5)
        w = torch.randn(16, dtype=dtype)
        (z * w).sum().backward()
        assert torch.isfinite(ah.grad).all(), (method, lo, hi)

def test_rsample_generator_makes_invcdf_reproducible():
    ah = torch.rand(10, 4) + 0.1
    a = dirichlet_rsample(ah, generator=torch.Generator().manual_seed(3))
    b = dirichlet_rsample(ah, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)

def test_rsample_rejects_bad_input():
    for bad in (0., -0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match='finite and > 0'): dirichlet_rsample(torch.tensor([1., bad]))
    with pytest.raises(ValueError, match='unknown method'): dirichlet_rsample(torch.ones(3), 'reject')

def test_implicit_matches_dirichlet_moments():
    torch.manual_seed(0)
    a = torch.tensor([0.5, 2., 4.], dtype=torch.float64); a0 = a.sum()
    z = dirichlet_rsample(a.expand(200_000, 3), 'implicit')
    assert torch.allclose(z.mean(0), a / a0, atol=3e-3)
    assert torch.allclose(z.var(0), a * (a0 - a) / (a0**2 * (a0 + 1)), atol=1e-3)

def test_invcdf_is_gamma_composition_of_eq7():
    "z from 'invcdf' is v/sum(v) with v from eq. 7 evaluated directly (no log space), for the same uniforms"
    ah = torch.tensor([[0.3, 0.7, 1.5, 2.5]], dtype=torch.float64).expand(1000, 4)
    z = dirichlet_rsample(ah, generator=torch.Generator().manual_seed(11))
    u = torch.rand(ah.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    v = (u * ah * torch.exp(torch.lgamma(ah))) ** (1 / ah)
    assert torch.allclose(z, v / v.sum(-1, keepdim=True), atol=1e-12)
    for beta in (0.5, 3.):                                               # the rate cancels in z
        vb = approx_gamma_icdf(u, ah, beta)
        assert torch.allclose(vb / vb.sum(-1, keepdim=True), z, atol=1e-12)

def test_eq7_accuracy_range():
    "Exact KS distance of eq. 7 to the Gamma CDF: small for α = 0.01, about e^-1 at α = 1"
    u = torch.linspace(1e-6, 1 - 1e-6, 20_001, dtype=torch.float64)
    ks = lambda a: (u - torch.special.gammainc(torch.tensor(a, dtype=torch.float64), approx_gamma_icdf(u, torch.tensor(a, dtype=torch.float64)))).abs().max().item()
    assert ks(0.01) < 0.01
    assert abs(ks(1.0) - math.exp(-1)) < 1e-3                             # Uniform(0,1) against Exponential(1)
    assert ks(0.98) > 0.3 and ks(10.) > 0.9

def test_unchecked_variants_compute_the_same():
    "check=False (the training-step path, no host sync) skips only the validation"
    ah, a = _logu((32, 6), 0.05, 20, 7), _logu((32, 6), 0.05, 20, 8)
    assert torch.equal(multigamma_kl(ah, a, check=False), multigamma_kl(ah, a))
    assert torch.equal(multigamma_kl(ah, 0.98, check=False), multigamma_kl(ah, 0.98))
    g = lambda: torch.Generator().manual_seed(5)
    assert torch.equal(dirichlet_rsample(ah, generator=g(), check=False), dirichlet_rsample(ah, generator=g()))
    with pytest.raises(ValueError, match='unknown method'): dirichlet_rsample(ah, 'reject', check=False)
