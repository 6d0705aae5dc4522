"""Dense storage: energies, recall dynamics, the incremental update, and bad inputs."""
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amtutorial.dense_storage import (_visit_order, AssociativeMemory, ClassicalHopfield, ExponentialAM, PolynomialAM, check_patterns,
                                      corrupt, glyph_patterns, hebbian_weights, render_glyph, retrieval_curve)


def random_patterns(K, D, seed=0):
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=(K, D)).astype(np.float32)


MODELS = {
    "classical": lambda P, p: ClassicalHopfield(P),
    "poly": lambda P, p: PolynomialAM(P, n=p),
    "exp": lambda P, p: ExponentialAM(P, beta=float(p)*4),
}


# --- energies ------------------------------------------------------------------------------------------------------

def test_classical_energy_is_the_hebbian_quadratic_form():
    P = random_patterns(7, 40)
    net = ClassicalHopfield(P)
    W = hebbian_weights(net.Xi)
    assert np.allclose(np.diag(np.asarray(W)), 0)
    for s in range(5):
        x = jnp.asarray(random_patterns(1, 40, seed=10 + s)[0])
        assert np.isclose(float(net.energy(x)), float(-0.5*x @ W @ x), atol=1e-4)


def test_polynomial_n2_is_classical_up_to_a_constant():
    P = random_patterns(6, 32)
    x = jnp.asarray(random_patterns(1, 32, seed=3)[0])
    assert np.isclose(float(PolynomialAM(P, 2).energy(x)), float(ClassicalHopfield(P).energy(x)) - 6/2, atol=1e-4)


def test_lse_energy_matches_logsumexp_and_shift_is_exact():
    P = random_patterns(9, 50)
    model = ExponentialAM(P, beta=7.0)
    x = jnp.asarray(random_patterns(1, 50, seed=4)[0])
    m = model.overlaps(x)
    ref = -50/7.0*jax.nn.logsumexp(7.0*m/50)
    assert np.isclose(float(model.energy(x)), float(ref), atol=1e-4)
    assert np.isclose(float(model.energy_from_overlaps(m, near=ref - 5.0)), float(ref), atol=1e-3)


def test_inverted_pattern_symmetry():
    P = random_patterns(5, 64)
    xi = jnp.asarray(P[0])
    for model, symmetric in [(ClassicalHopfield(P), True), (PolynomialAM(P, 4), True), (PolynomialAM(P, 3), False),
                             (ExponentialAM(P, 10.0), False)]:
        assert bool(model.energy(-xi) == model.energy(xi)) == symmetric


# --- dynamics ------------------------------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(sorted(MODELS)), K=st.sampled_from([1, 4, 12]), D=st.sampled_from([5, 16, 33]),
       p=st.sampled_from([2, 3, 5]), seed=st.integers(0, 2**16), frac=st.floats(0.0, 1.0))
def test_energy_never_increases_and_every_flip_lowers_it(kind, K, D, p, seed, frac):
    P = random_patterns(K, D, seed)
    model = MODELS[kind](P, p)
    key = jax.random.key(seed)
    x0 = corrupt(jnp.asarray(P[0]), frac, key=key)
    tr = model.recall_trajectory(x0, key=key, sweeps=2, every=1)
    E, flips = np.asarray(tr.energies), np.asarray(tr.flips)
    assert np.all(np.diff(E) <= 0)
    assert np.all(np.diff(E)[flips] < 0)
    assert np.all(np.diff(E)[~flips] == 0)
    # the recorded energies are the energies of the recorded states (up to rounding of the shifted log-sum-exp)
    recomputed = np.asarray(jax.vmap(model.energy)(tr.states))
    assert np.allclose(recomputed, E, rtol=1e-5, atol=1e-3*max(1.0, np.abs(E).max()/100))
    # consecutive saved states differ in at most one bit, exactly where a flip was recorded
    changed = np.asarray(jnp.sum(tr.states[1:] != tr.states[:-1], axis=1))
    assert np.array_equal(changed, flips.astype(int))


@settings(max_examples=10, deadline=None)
@given(kind=st.sampled_from(sorted(MODELS)), K=st.sampled_from([1, 7, 20]), D=st.sampled_from([8, 40]),
       p=st.sampled_from([2, 3, 5]), seed=st.integers(0, 2**16))
def test_incremental_equals_full_recompute_bit_for_bit(kind, K, D, p, seed):
    P = random_patterns(K, D, seed)
    model = MODELS[kind](P, p)
    key = jax.random.key(seed)
    x0 = corrupt(jnp.asarray(P[0]), 0.3, key=jax.random.fold_in(key, 1))
    a = model.recall_trajectory(x0, key=key, sweeps=2, every=D)
    b = model.recall_trajectory(x0, key=key, sweeps=2, every=D, incremental=False)
    assert np.array_equal(np.asarray(a.states), np.asarray(b.states))
    assert np.array_equal(np.asarray(a.energies), np.asarray(b.energies))
    assert np.array_equal(np.asarray(a.flips), np.asarray(b.flips))
    r1, r2 = model.recall(x0, key=key), model.recall(x0, key=key, incremental=False)
    assert np.array_equal(np.asarray(r1.x), np.asarray(r2.x)) and float(r1.energy) == float(r2.energy)


def _random_case(wanted):
    "Case number `wanted` of a stream of random (model, probe, key): sizes, densities, n and beta all drawn."
    rng = np.random.default_rng(0)
    for case in range(wanted + 1):
        K, D = int(rng.integers(1, 80)), int(rng.integers(4, 300))
        X = np.where(rng.random((K, D)) < rng.uniform(0.3, 0.7), 1., -1.).astype(np.float32)
        n, beta = int(rng.integers(2, 6)), float(rng.uniform(0.5, 60))
        model = [ClassicalHopfield, lambda X: PolynomialAM(X, n), lambda X: ExponentialAM(X, beta)][case % 3](X)
        x0 = corrupt(jnp.asarray(X[rng.integers(K)]), float(rng.uniform(0, 0.5)), key=jax.random.key(case))
    return model, x0, jax.random.key(wanted + 1000)


@pytest.mark.parametrize("case", [7, 23, 43, 46])
def test_trajectory_energies_agree_to_the_last_bit(case):
    "Cases where an earlier sweep (two steps per loop iteration, decision recomputed per use) differed in the last bit."
    model, x0, key = _random_case(case)
    a, b = (model.recall_trajectory(x0, key=key, sweeps=2, incremental=inc) for inc in (True, False))
    assert np.array_equal(a.energies, b.energies) and np.array_equal(a.flips, b.flips)
    assert np.array_equal(a.states, b.states)


def test_compile_small_loops_rejects_bad_sizes():
    from amtutorial.dense_storage import compile_small_loops
    for bad in [-1, True]:
        with pytest.raises(ValueError, match="max_bytes"): compile_small_loops(bad)


SMALL_LOOPS_SCRIPT = """
import os, warnings
os.environ["XLA_FLAGS"] = "--xla_cpu_enable_fast_math=false --xla_backend_extra_options=xla_cpu_disable_loop_unrolling,xla_cpu_small_while_loop_byte_threshold=5"
from amtutorial.dense_storage import (ClassicalHopfield, ExponentialAM, PolynomialAM, _recall_async,
                                      compile_small_loops, corrupt, loops_compiled_whole)
flags = compile_small_loops(100_000)
assert flags == os.environ["XLA_FLAGS"]
assert flags.split() == ["--xla_cpu_enable_fast_math=false",
                         "--xla_backend_extra_options=xla_cpu_disable_loop_unrolling,xla_cpu_small_while_loop_byte_threshold=100000"], flags
import jax, jax.numpy as jnp, numpy as np
K, D = 64, 512   # the memories take 128 kB: the full recompute's loop stays above the 100 kB limit
P = np.random.default_rng(0).choice([-1.0, 1.0], size=(K, D)).astype(np.float32)
key = jax.random.key(3)
x0 = corrupt(jnp.asarray(P[5]), 0.3, key=jax.random.key(4))
for model in [ClassicalHopfield(P), PolynomialAM(P, 3), ExponentialAM(P, 30.0)]:
    whole = [loops_compiled_whole(lambda x, inc=inc: _recall_async(model, x, key, 2, inc), x0) for inc in (True, False)]
    assert whole[0] == whole[1] + 1, whole
    a, b = (model.recall_trajectory(x0, key=key, sweeps=2, every=64, incremental=inc) for inc in (True, False))
    assert np.array_equal(a.states, b.states) and np.array_equal(a.energies, b.energies)
    assert np.array_equal(a.flips, b.flips) and int(a.flips.sum()) > 0
    r, s = (model.recall(x0, key=key, incremental=inc) for inc in (True, False))
    assert np.array_equal(r.x, s.x) and float(r.energy) == float(s.energy)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    compile_small_loops()
assert any("no effect" in str(x.message) for x in w)
print("ok")
"""


def test_small_loops_compiled_whole_and_still_bit_for_bit():
    "compile_small_loops merges its option into XLA_FLAGS; then the O(K) sweep (only) is one function, results unchanged."
    run = subprocess.run([sys.executable, "-c", SMALL_LOOPS_SCRIPT], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


def test_bit_major_copy_is_the_transpose():
    P = random_patterns(6, 21)
    for model in [ClassicalHopfield(P), PolynomialAM(P, 4), ExponentialAM(P, 3.0)]:
        assert np.array_equal(np.asarray(model.XiT), P.T) and np.array_equal(np.asarray(model.Xi), P)
    with pytest.raises(ValueError, match="XiT must be Xi transposed"):
        class Broken(AssociativeMemory):
            def __init__(self, p): super().__init__(p); self.XiT = self.Xi
        Broken(P)


def test_trajectory_states_match_a_step_by_step_replay():
    P = random_patterns(5, 24)
    model = PolynomialAM(P, 3)
    key = jax.random.key(4)
    x0 = corrupt(jnp.asarray(P[1]), 0.4, key=key)
    tr = model.recall_trajectory(x0, key=key, sweeps=3, every=8)
    order = np.asarray(_visit_order(key, 24))
    x, states = np.asarray(x0).copy(), [np.asarray(x0).copy()]
    for t, flipped in enumerate(np.asarray(tr.flips)):   # replay the recorded flips in the visiting order
        if flipped: x[order[t % 24]] *= -1
        if (t + 1) % 8 == 0: states.append(x.copy())
    assert np.array_equal(np.asarray(tr.states), np.stack(states))


def test_recall_and_trajectory_agree_and_converge_to_a_fixed_point():
    P = random_patterns(10, 200)
    model = ExponentialAM(P, 20.0)
    key = jax.random.key(1)
    x0 = corrupt(jnp.asarray(P[3]), 0.3, key=key)
    r = model.recall(x0, key=key)
    assert bool(r.converged) and np.array_equal(np.asarray(r.x), P[3])
    tr = model.recall_trajectory(x0, key=key, sweeps=int(r.sweeps))
    assert np.array_equal(np.asarray(tr.states[-1]), np.asarray(r.x))
    again = model.recall(r.x, key=jax.random.key(9), max_sweeps=1)   # a fixed point stays put
    assert bool(again.converged) and np.array_equal(np.asarray(again.x), np.asarray(r.x))


def test_classical_capacity_on_random_patterns():
    D = 256
    P = random_patterns(128, D, seed=5)
    c = retrieval_curve(ClassicalHopfield, P, [8, 96], key=jax.random.key(0), n_probes=16, progress=False)
    assert c["exact"][0] == 1.0                   # K = 0.03 D: perfect
    assert c["overlap"][1] < 0.8                   # K = 0.375 D: far beyond 0.138 D, collapsed
    d = retrieval_curve(lambda Q: ExponentialAM(Q, 20.0), P, [96], key=jax.random.key(0), n_probes=16,
                        progress=False)
    assert d["exact"][0] == 1.0                    # the dense memory holds them all


def test_sync_recall_batch():
    P = random_patterns(20, 128)
    model = PolynomialAM(P, 3)
    X = jax.vmap(lambda x, k: corrupt(x, 0.1, key=k))(jnp.asarray(P[:5]), jax.random.split(jax.random.key(0), 5))
    out = jax.vmap(model.recall_sync)(X)
    assert np.array_equal(np.asarray(out.x), P[:5]) and bool(jnp.all(out.converged))


def test_corrupt_flips_exactly():
    x = jnp.ones(100)
    y = corrupt(x, 0.23, key=jax.random.key(0))
    assert int(jnp.sum(y != x)) == 23


# --- glyphs --------------------------------------------------------------------------------------------------------

def test_render_glyph_shapes_and_holes():
    a = render_glyph("O", "DejaVuSans-Bold", 24)
    assert a.shape == (24, 24) and a.dtype == bool
    assert not a[12, 12] and a.any()
    assert render_glyph(" ") is None


def test_glyph_patterns_small_and_cached(cache_dir):
    g = glyph_patterns(12, faces=("DejaVuSans",), ranges=((0x41, 0x5B),), min_distance=0.05, progress=False)
    assert 10 <= len(g.images) <= 26 and set(np.unique(g.images)) <= {-1, 1} and g.images.dtype == np.int8
    assert len(g.chars) == len(g.images) and set(g.faces) == {"DejaVuSans"}
    files = list((cache_dir/"glyphs").glob("*.npz"))
    assert len(files) == 1
    again = glyph_patterns(12, faces=("DejaVuSans",), ranges=((0x41, 0x5B),), min_distance=0.05, progress=False)
    assert np.array_equal(again.images, g.images) and again.chars == g.chars
    X = g.images.reshape(len(g.images), -1).astype(float)
    ov = X @ X.T/X.shape[1]
    np.fill_diagonal(ov, -1)
    assert (1 - ov.max())/2 >= 0.05


# --- bad inputs: each error names the argument, the value and what was expected ---------------------------------

P8 = random_patterns(3, 8)


@pytest.mark.parametrize("make, exc, message", [
    (lambda: ClassicalHopfield(np.zeros((0, 8), np.float32)), ValueError, "no pattern (K = 0"),
    (lambda: ClassicalHopfield(np.zeros((3, 0), np.float32)), ValueError, "D = 0"),
    (lambda: ClassicalHopfield(np.array([[1.0, 0.5, -1.0]])), ValueError, "only -1 and +1"),
    (lambda: ClassicalHopfield(np.array([[1.0, np.nan, -1.0]])), ValueError, "only -1 and +1"),
    (lambda: ClassicalHopfield(np.ones(8, np.float32)), TypeError, "patterns"),
    (lambda: PolynomialAM(P8, n=1), ValueError, "n must be an integer >= 2, got 1"),
    (lambda: PolynomialAM(P8, n=0), ValueError, "n must be an integer >= 2, got 0"),
    (lambda: ExponentialAM(P8, beta=0.0), ValueError, "beta must be a finite number > 0, got 0.0"),
    (lambda: ExponentialAM(P8, beta=-3.0), ValueError, "beta must be a finite number > 0, got -3.0"),
    (lambda: ExponentialAM(P8, beta=float("inf")), ValueError, "beta must be a finite number > 0"),
    (lambda: ClassicalHopfield(P8).energy(jnp.ones(7)), ValueError, "x has 7 bits but the memories have D = 8"),
    (lambda: ClassicalHopfield(P8).recall(jnp.ones(9), key=jax.random.key(0)), ValueError, "x has 9 bits"),
    (lambda: ClassicalHopfield(P8).recall(jnp.zeros(8), key=jax.random.key(0)), ValueError, "only -1 and +1"),
    # a wrong type: our TypeError, or beartype's under the tests' hook; both name the argument
    (lambda: ClassicalHopfield(P8).recall(jnp.ones(8), key=0), TypeError, "key"),
    (lambda: ClassicalHopfield(P8).recall(jnp.ones(8), key=jax.random.key(0), max_sweeps=0), ValueError,
     "max_sweeps must be a positive integer, got 0"),
    (lambda: ClassicalHopfield(P8).recall_batch(jnp.ones((2, 5)), key=jax.random.key(0)), ValueError,
     "X has 5 bits"),
    (lambda: ClassicalHopfield(P8).recall_trajectory(jnp.ones(8), key=jax.random.key(0), sweeps=1, every=3),
     ValueError, "every must be a positive integer dividing sweeps*D = 8, got 3"),
    (lambda: corrupt(jnp.ones(8), 1.5, key=jax.random.key(0)), ValueError, "frac must be in [0, 1], got 1.5"),
    (lambda: check_patterns(np.array([["a", "b"]])), TypeError, "numeric array"),
    (lambda: render_glyph("ab"), ValueError, "char must be one character"),
    (lambda: render_glyph("a", face="Comic"), ValueError, "face 'Comic' is not a font"),
    (lambda: glyph_patterns(16, min_distance=0.7), ValueError, "min_distance must be in [0, 0.5), got 0.7"),
    (lambda: retrieval_curve(ClassicalHopfield, P8, [4, 9], key=jax.random.key(0)), ValueError,
     "every K must be in [1, 3]"),
])
def test_bad_inputs(make, exc, message):
    with pytest.raises(exc) as e:
        make()
    assert message in str(e.value), str(e.value)


def test_bad_input_is_rejected_before_tracing(monkeypatch):
    "A user error must surface as our message, not as an XLA/trace error, and must not compile anything."
    import amtutorial.dense_storage as ds
    calls = []
    monkeypatch.setattr(ds, "_recall_async", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError):
        ClassicalHopfield(P8).recall(jnp.full(8, 2.0), key=jax.random.key(0))
    assert calls == []


# --- the batched animation in bounded memory ------------------------------------------------------------------------

def test_batched_animation_peak_memory(tmp_path):
    "Recall 16 glyphs (trajectories) and render their video in a fresh process: its peak memory stays under 2 GB."
    script = textwrap.dedent(f"""
        import os
        os.environ["AMTUTORIAL_CACHE_DIR"] = {str(tmp_path)!r}
        import jax, jax.numpy as jnp, numpy as np
        from einops import rearrange
        from amtutorial.dense_storage import ExponentialAM, corrupt
        from amtutorial.viz import peak_rss_mb, read_video, trajectory_video
        P = np.random.default_rng(0).choice([-1.0, 1.0], size=(64, 32*32)).astype(np.float32)
        model = ExponentialAM(P, 20.0)
        keys = jax.random.split(jax.random.key(0), 16)
        X = jax.vmap(lambda x, k: corrupt(x, 0.3, key=k))(jnp.asarray(P[:16]), keys)
        tr = jax.vmap(lambda x, k: model.recall_trajectory(x, key=k, sweeps=2, every=64))(X, keys)
        states = rearrange(np.asarray(tr.states), "b T (h w) -> T b h w", h=32)
        v = trajectory_video("batch", states, np.asarray(tr.energies).T, n_frames=40, ncols=4, vmin=-1, vmax=1,
                             progress=False)
        frames = read_video(v.mp4)
        assert len(frames) == 33 and np.abs(frames[0].astype(int) - frames[-1]).mean() > 1, len(frames)
        print(peak_rss_mb())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    peak = float(out.stdout.split()[-1])
    print(f"peak memory: {peak:.0f} MB")
    assert peak < 2048
