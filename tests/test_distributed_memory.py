"""Tests of `amtutorial.distributed_memory`: the random-feature kernel, writing, energies, retrieval, costs, and
bad inputs."""
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from amtutorial.distributed_memory import (DenseMemory, DistributedMemory, approximation_errors, distributed_memory,
                                           memory_footprint, random_features, retrieve, retrieved, time_per_query,
                                           unit_memories)


@settings(max_examples=6, deadline=None)
@given(D=st.integers(1, 16), log_beta=st.floats(-1.0, 1.3), seed=st.integers(0, 2**16))
def test_kernel_approximation_within_hoeffding_bound(D, log_beta, seed):
    "At R = 4096, the features' kernel is within 0.07 of exp(-beta |x - y|^2 / 2) on 300 random pairs."
    beta = float(10**log_beta)
    k1, k2, k3 = jr.split(jr.key(seed), 3)
    feats = random_features(D, 4096, beta, key=k1)
    x = jr.normal(k2, (300, D)) / np.sqrt(D)
    y = x + jr.normal(k3, (300, D)) / np.sqrt(D) / np.sqrt(beta)  # pairs at distances where the kernel is not ~0
    exact = jnp.exp(-beta / 2 * jnp.sum((x - y) ** 2, -1))
    approx = jnp.sum(jax.vmap(feats)(x) * jax.vmap(feats)(y), -1)
    assert float(jnp.max(jnp.abs(approx - exact))) < 0.07
    np.testing.assert_allclose(jnp.sum(jax.vmap(feats)(x) ** 2, -1), 1.0, atol=1e-4)  # kappa(x, x) = 1 exactly


def test_dense_gradient_is_softmax_retrieval():
    Xi = unit_memories(20, 8, key=jr.key(0))
    m = DenseMemory(Xi, 5.0)
    x = jr.normal(jr.key(1), (8,))
    w = jax.nn.softmax(-5.0 / 2 * jnp.sum((x[None, :] - Xi) ** 2, -1))
    np.testing.assert_allclose(jax.grad(m.energy)(x), x - w @ Xi, atol=1e-5)
    np.testing.assert_allclose(m.energy(x), -jax.nn.logsumexp(-2.5 * jnp.sum((x[None, :] - Xi) ** 2, -1)) / 5.0, rtol=1e-5)


def test_writing_is_incremental_and_fixed_size():
    Xi = unit_memories(10, 4, key=jr.key(0))
    feats = random_features(4, 256, 3.0, key=jr.key(1))
    batch = distributed_memory(Xi, feats, chunk=3)  # several chunks
    inc = distributed_memory(Xi[:1], feats)
    for xi in Xi[1:]:
        inc = inc.add(xi)
        assert inc.T.shape == (512,)
    np.testing.assert_allclose(inc.T, batch.T, atol=1e-4)
    np.testing.assert_allclose(batch.T, jnp.sum(jax.vmap(feats)(Xi), 0), atol=1e-4)
    assert DenseMemory(Xi, 3.0).add(Xi[0]).Xi.shape == (11, 4)  # ... whereas the slot-based memory grows


def test_errors_shrink_with_features():
    Xi = unit_memories(16, 8, key=jr.key(2))
    q = Xi + 0.3 * unit_memories(16, 8, key=jr.key(3))
    dense = DenseMemory(Xi, 6.0)
    small = [approximation_errors(dense, distributed_memory(Xi, random_features(8, 128, 6.0, key=jr.key(s))), q)
             for s in range(3)]
    large = [approximation_errors(dense, distributed_memory(Xi, random_features(8, 8192, 6.0, key=jr.key(s))), q)
             for s in range(3)]
    for i in range(2):  # energy and gradient errors
        assert float(jnp.mean(jnp.stack([e[i] for e in large]))) < 0.5 * float(jnp.mean(jnp.stack([e[i] for e in small])))
    assert float(jnp.mean(jnp.stack([e[0] for e in large]))) < 0.05


@settings(max_examples=10, deadline=None)
@given(K=st.integers(1, 30), D=st.integers(1, 8), log_beta=st.floats(-1.0, 1.5), eta=st.floats(0.05, 1.0),
       seed=st.integers(0, 2**16))
def test_slot_based_retrieval_never_increases_energy(K, D, log_beta, eta, seed):
    k1, k2 = jr.split(jr.key(seed))
    m = DenseMemory(jr.normal(k1, (K, D)), float(10**log_beta))
    xs, es = retrieve(m, 2 * jr.normal(k2, (D,)), steps=20, step_size=eta)
    assert xs.shape == (21, D) and es.shape == (21,)
    assert bool(jnp.all(jnp.diff(es) <= 1e-5 * (1 + jnp.abs(es[:-1]))))


def test_distributed_retrieval_recovers_memories():
    "Retrieval moves the corrupted states much closer to their memories; not moving at all would score 0."
    Xi = unit_memories(8, 8, key=jr.key(4))
    q = Xi + 0.3 * unit_memories(8, 8, key=jr.key(5))
    m = distributed_memory(Xi, random_features(8, 4096, 8.0, key=jr.key(6)))
    xs, _ = jax.vmap(lambda x: retrieve(m, x))(q)
    assert int(retrieved(q, q, Xi).sum()) == 0
    assert float(retrieved(xs[:, -1], q, Xi).mean()) >= 0.75


@settings(max_examples=15, deadline=None)
@given(N=st.sampled_from([1, 5]), D=st.sampled_from([1, 3]), fraction=st.floats(0.05, 0.95), seed=st.integers(0, 2**16))
def test_retrieved_scores_a_state_that_does_not_move_as_failed(N, D, fraction, seed):
    k1, k2, k3 = jr.split(jr.key(seed), 3)
    targets, start = jr.normal(k1, (N, D)), jr.normal(k2, (N, D))
    assert not bool(retrieved(start, start, targets, fraction).any())
    assert bool(retrieved(targets, start, targets, fraction).all())
    t = jr.uniform(k3, (N, 1))  # a point on the way from start to target, at distance (1 - t) * start distance
    ok = retrieved(start + t * (targets - start), start, targets, fraction)
    assert bool(jnp.all((ok == (1 - t[:, 0] <= fraction)) | (jnp.abs(1 - t[:, 0] - fraction) < 1e-5)))


def test_retrieved_rejects_bad_arguments():
    a = jnp.zeros((3, 2))
    with pytest.raises((ValueError, TypeError), match=r"start"):  # (the shape check, or jaxtyping's in the tests)
        retrieved(a, jnp.zeros((3, 3)), a)
    with pytest.raises(ValueError, match=r"fraction=1.5: expected a number in \(0, 1\)"):
        retrieved(a, a, a, 1.5)


def test_cost_helpers_small():
    Q = unit_memories(8, 4, key=jr.key(7))
    feats = random_features(4, 64, 2.0, key=jr.key(8))
    fp = {K: memory_footprint(distributed_memory(unit_memories(K, 4, key=jr.key(9)), feats), Q) for K in (2, 50)}
    assert fp[2]["stored"] == fp[50]["stored"] == 128 * 4 and fp[2]["feature_map"] == 64 * 4 * 4
    fd = {K: memory_footprint(DenseMemory(unit_memories(K, 4, key=jr.key(9)), 2.0), Q) for K in (2, 50)}
    assert fd[2]["stored"] == 2 * 4 * 4 and fd[50]["stored"] == 50 * 4 * 4 and fd[50]["feature_map"] == 0
    t = time_per_query(DenseMemory(unit_memories(5, 4, key=jr.key(9)), 2.0), Q, repeats=3)
    assert 0 < t < 1.0


# ---------------------------------------------------------------- bad inputs: clear errors before any tracing
def test_no_memories_rejected():
    with pytest.raises(ValueError, match=r"Xi has shape \(0, 4\): expected \(K, D\) with K >= 1 memories"):
        DenseMemory(jnp.zeros((0, 4)), 1.0)
    with pytest.raises(ValueError, match=r"Xi has shape \(0, 4\): expected \(K, D\) with K >= 1 memories"):
        distributed_memory(jnp.zeros((0, 4)), random_features(4, 8, 1.0, key=jr.key(0)))
    with pytest.raises(ValueError, match=r"n=0: expected at least one memory \(K >= 1\)"):
        unit_memories(0, 4, key=jr.key(0))


@pytest.mark.parametrize("beta", [0.0, -2.0, float("nan")])
def test_nonpositive_beta_rejected(beta):
    with pytest.raises(ValueError, match=r"beta=.*: expected an inverse temperature > 0"):
        DenseMemory(jnp.ones((3, 2)), beta)
    with pytest.raises(ValueError, match=r"beta=.*: expected an inverse temperature > 0"):
        random_features(2, 16, beta, key=jr.key(0))


def test_mismatched_dimensions_rejected():
    dense = DenseMemory(jnp.ones((3, 4)), 1.0)
    feats = random_features(4, 16, 1.0, key=jr.key(0))
    dist = distributed_memory(jnp.ones((3, 4)), feats)
    with pytest.raises(ValueError, match=r"x has shape \(5,\): expected one state of shape \(4,\)"):
        dense.energy(jnp.ones(5))
    with pytest.raises(ValueError, match=r"x has shape \(5,\): expected one state of shape \(4,\)"):
        dist.energy(jnp.ones(5))
    with pytest.raises(ValueError, match=r"xi has shape \(3,\): expected one state of shape \(4,\)"):
        dist.add(jnp.ones(3))
    with pytest.raises(ValueError, match=r"Xi has dimension 5 but the feature map expects states of dimension 4"):
        distributed_memory(jnp.ones((3, 5)), feats)
    with pytest.raises(ValueError, match=r"x has shape \(2,\): expected one state of shape \(4,\)"):
        retrieve(dense, jnp.ones(2))
    with pytest.raises(ValueError, match=r"queries \(2, 3\), exact memory of dimension 4"):
        approximation_errors(dense, dist, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"T has shape \(7,\): expected \(32,\), the number of features"):
        DistributedMemory(feats, jnp.ones(7))


@pytest.mark.parametrize("n_freqs", [0, -3])
def test_too_few_features_rejected(n_freqs):
    with pytest.raises(ValueError, match=rf"n_freqs={n_freqs}: too few features; expected an integer >= 1"):
        random_features(4, n_freqs, 1.0, key=jr.key(0))


def test_bad_retrieval_settings_rejected():
    dense = DenseMemory(jnp.ones((3, 4)), 1.0)
    with pytest.raises(ValueError, match=r"steps=0: expected a positive integer"):
        retrieve(dense, jnp.ones(4), steps=0)
    with pytest.raises(ValueError, match=r"step_size=-0.5: expected a positive step size"):
        retrieve(dense, jnp.ones(4), step_size=-0.5)
