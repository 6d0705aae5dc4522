"""Tests of `amtutorial.diffusion`: closed forms against autodiff, sampler behaviour, training, and bad inputs."""
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from amtutorial.diffusion import (DiffusionConfig, EmpiricalMemory, EnergyNet, circle_points, dsm_loss,
                                  memorisation_ratio, nearest_distance, sample, sigma_schedule, train_energy_net)


@settings(max_examples=8, deadline=None)
@given(K=st.integers(1, 8), D=st.integers(1, 3), seed=st.integers(0, 2**16), log_sigma=st.floats(-2.0, 1.0))
def test_score_is_grad_of_log_density(K, D, seed, log_sigma):
    k1, k2 = jr.split(jr.key(seed))
    mem = EmpiricalMemory(jr.normal(k1, (K, D)))
    x = 2 * jr.normal(k2, (D,))
    sigma = float(10**log_sigma)
    np.testing.assert_allclose(mem.score(x, sigma), jax.grad(mem.log_density)(x, sigma),
                               rtol=1e-3, atol=1e-3 / sigma**2)
    # the denoiser is Tweedie's formula and one unit gradient step on the energy
    np.testing.assert_allclose(mem.denoise(x, sigma), x + sigma**2 * mem.score(x, sigma), atol=1e-4)
    np.testing.assert_allclose(mem.denoise(x, sigma), x - jax.grad(mem.energy)(x, sigma), atol=1e-4)


def test_log_density_is_normalised():
    "Numerical integration of p_sigma over a grid in 2-D gives 1."
    mem = EmpiricalMemory(circle_points(5, key=jr.key(0)))
    g = jnp.linspace(-4, 4, 401)
    X, Y = jnp.meshgrid(g, g)
    pts = jnp.stack([X.ravel(), Y.ravel()], -1)
    p = jnp.exp(jax.vmap(mem.log_density, (0, None))(pts, 0.3))
    np.testing.assert_allclose(float(p.sum() * (g[1] - g[0]) ** 2), 1.0, rtol=1e-3)


def test_exact_sampler_recalls_training_points():
    mem = EmpiricalMemory(circle_points(6, key=jr.key(1), stratified=True))
    x_T = 3.0 * jr.normal(jr.key(2), (64, 2))
    traj = jax.vmap(sample, (None, 0, None))(mem, x_T, sigma_schedule(3.0, 1e-3, 60))
    assert traj.shape == (64, 61, 2)
    assert float(nearest_distance(traj[:, -1], mem.Xi).max()) < 1e-3
    # the stochastic sampler too, and it is reproducible given its key
    s1 = jax.vmap(lambda x, k: sample(mem, x, sigma_schedule(3.0, 1e-3, 60), key=k))(x_T, jr.split(jr.key(3), 64))
    s2 = jax.vmap(lambda x, k: sample(mem, x, sigma_schedule(3.0, 1e-3, 60), key=k))(x_T, jr.split(jr.key(3), 64))
    np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2))
    assert float(nearest_distance(s1[:, -1], mem.Xi).max()) < 1e-3


def test_memorisation_ratio_extremes():
    train = circle_points(50, key=jr.key(4))
    fresh = circle_points(500, key=jr.key(5))
    assert float(memorisation_ratio(train[jnp.arange(500) % 50], train, fresh)) < 0.01  # float32 rounding only
    np.testing.assert_allclose(float(memorisation_ratio(circle_points(500, key=jr.key(6)), train, fresh)), 1.0,
                               atol=0.2)


def test_training_loss_falls_and_is_deterministic():
    data = circle_points(9, key=jr.key(0), stratified=True)
    cfg = DiffusionConfig.tiny()
    net_a, loss_a = train_energy_net(data, cfg, key=jr.key(7), progress=False)
    net_b, loss_b = train_energy_net(data, cfg, key=jr.key(7), progress=False)
    assert loss_a.shape == (cfg.steps,)
    assert float(loss_a[-50:].mean()) < 0.7 * float(loss_a[:50].mean())
    np.testing.assert_array_equal(np.asarray(loss_a), np.asarray(loss_b))
    for a, b in zip(jax.tree_util.tree_leaves(eqx.filter(net_a, eqx.is_array)),
                    jax.tree_util.tree_leaves(eqx.filter(net_b, eqx.is_array))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the input frequencies are fixed, not trained
    np.testing.assert_array_equal(np.asarray(net_a.B), np.asarray(EnergyNet(2, cfg, key=jr.split(jr.key(7))[0]).B))


def test_energy_net_denoiser_is_gradient():
    net = EnergyNet(2, DiffusionConfig.tiny(), key=jr.key(0))
    x = jnp.array([0.4, -1.0])
    np.testing.assert_allclose(net.denoise(x, 0.3), x - jax.grad(net.energy)(x, 0.3), atol=1e-5)
    np.testing.assert_allclose(float(dsm_loss(net, x, 0.3, jnp.zeros(2), 0.7)),
                               0.7 / 0.3 * float(jnp.sum((net.denoise(x, 0.3) - x) ** 2)), rtol=1e-5)


# ---------------------------------------------------------------- bad inputs: clear errors before any tracing
def test_empty_memory_rejected():
    with pytest.raises(ValueError, match=r"Xi has shape \(0, 2\).*K >= 1"):
        EmpiricalMemory(jnp.zeros((0, 2)))


def test_nonpositive_sigma_rejected():
    mem = EmpiricalMemory(circle_points(3, key=jr.key(0)))
    with pytest.raises(ValueError, match=r"sigma=0.0: expected a noise level > 0"):
        mem.energy(jnp.zeros(2), 0.0)
    with pytest.raises(ValueError, match=r"sigma=-1.0: expected a noise level > 0"):
        mem.score(jnp.zeros(2), -1.0)


def test_mismatched_dimension_rejected():
    mem = EmpiricalMemory(circle_points(3, key=jr.key(0)))
    with pytest.raises(ValueError, match=r"x has shape \(3,\): expected one point of shape \(2,\)"):
        mem.log_density(jnp.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"x has shape \(3,\): expected one point of shape \(2,\)"):
        sample(mem, jnp.zeros(3), sigma_schedule(1.0, 0.01, 5))
    # nearest_distance checks its shapes itself; under the tests' jaxtyping hook the annotation ("N D" vs "K D")
    # catches the mismatch first, as a TypeError naming the argument
    with pytest.raises(TypeError, match=r"parameter 'memories'"):
        nearest_distance(jnp.zeros((4, 3)), mem.Xi)
    with pytest.raises(ValueError, match=r"points \(4, 3\) and memories \(3, 2\): expected \(N, D\) and \(K, D\)"):
        nearest_distance.__wrapped__(jnp.zeros((4, 3)), mem.Xi)  # the function as a notebook user calls it


def test_bad_schedules_rejected():
    with pytest.raises(ValueError, match=r"sigma_max=0.1 must be larger than sigma_min=0.5"):
        sigma_schedule(0.1, 0.5, 10)
    with pytest.raises(ValueError, match=r"sigma_min=0.0: expected a noise level > 0"):
        sigma_schedule(1.0, 0.0, 10)
    with pytest.raises(ValueError, match=r"n_steps=1: expected an integer >= 2"):
        sigma_schedule(1.0, 0.1, 1)
    mem = EmpiricalMemory(circle_points(3, key=jr.key(0)))
    with pytest.raises(ValueError, match=r"expected strictly decreasing noise levels"):
        sample(mem, jnp.zeros(2), jnp.array([0.1, 0.5, 0.0]))


def test_bad_config_and_data_rejected():
    with pytest.raises(ValueError, match=r"sigma_max=0.001 must be larger than sigma_min=0.002"):
        DiffusionConfig(sigma_max=1e-3)
    with pytest.raises(ValueError, match=r"width=0: expected a positive integer"):
        DiffusionConfig(width=0)
    with pytest.raises(ValueError, match=r"learning_rate=-0.1: expected a learning rate > 0"):
        DiffusionConfig(learning_rate=-0.1)
    with pytest.raises(ValueError, match=r"data has shape \(0, 2\): expected \(K, D\) with K >= 1"):
        train_energy_net(jnp.zeros((0, 2)), DiffusionConfig.tiny(), key=jr.key(0))
    with pytest.raises(ValueError, match=r"n=0: expected a positive integer number of points"):
        circle_points(0, key=jr.key(0))
