"""The Energy Transformer block (descent, safeguard, step-size bound, closed-form update) and the image model
(batching, checkpoints, inference settings, bad inputs).

Run under jaxtyping + beartype and jax_numpy_rank_promotion="raise" (see conftest.py)."""
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import assume, example, given, settings, strategies as st

import amtutorial.energy_transformer as etm
import amtutorial.image_et as iem
from amtutorial.data_utils import CheckpointError
from amtutorial.energy_transformer import EnergyLayerNorm, EnergyTransformer, ETConfig, rand_init
from amtutorial.image_et import ImageETConfig, Patcher, load_et, random_patch_mask, save_et


def non_increasing(E, rtol=1e-5):
    "No step raises the energy by more than float32 round-off."
    E = np.asarray(E, dtype=np.float64)
    return bool(np.all(np.diff(E) <= rtol * np.abs(E[:-1]) + 1e-6))


def assert_close(a, b, rtol=1e-5):
    "`a` equals `b` up to `rtol` times the largest magnitude in `b` (float32 round-off grows with the scale)."
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.abs(b).max())


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def random_block(seed, D, H, Y, M, exclude_self, gamma=1.0, delta_scale=0.0):
    k1, k2 = jr.split(jr.key(seed))
    et = rand_init(k1, ETConfig(D=D, H=H, Y=Y, M=M, exclude_self=exclude_self))
    return eqx.tree_at(lambda m: (m.lnorm.gamma, m.lnorm.delta), et,
                       (jnp.array(gamma, jnp.float32), delta_scale * jr.normal(k2, (D,))))


# ---------------------------------------------------------------------------------------------------------------
# Energy descent: the plain step can climb; the safeguarded one never does

def counterexample_block(dtype=jnp.float32):
    "The chapter's hand-made block: one plain step of 0.1 from COUNTER_X raises its energy."
    e1 = jnp.array([1.0, 0.0, 0.0], dtype)
    return EnergyTransformer(lnorm=EnergyLayerNorm(gamma=jnp.ones((), dtype), delta=jnp.zeros(3, dtype)),
                             Wk=-e1[None, :, None], Wq=e1[None, :, None], Xi=jnp.zeros((1, 3), dtype),
                             config=ETConfig(D=3, H=1, Y=1, M=1))


COUNTER_X = [[0.0, -0.05, 0.0], [0.15, 0.15, 0.1]]


def test_counterexample_plain_step_rises_safeguarded_does_not():
    for dtype in (jnp.float32, jnp.float64):
        with jax.enable_x64(dtype == jnp.float64):
            et, x = counterexample_block(dtype), jnp.array(COUNTER_X, dtype)
            _, E = et.descend(x, 1, 0.1)
            assert E[1] > E[0] + 2, E
            _, E_safe = et.descend(x, 1, 0.1, safeguard=True)
            assert E_safe[1] < E_safe[0]
            assert 0.1 > 2 * float(et.step_size_bound(x))  # the bound says the step is too long


def random_case(seed, D, H, M, N, exclude_self, log_scale, gamma, delta_scale, Y=4):
    k1, k2, k3 = jr.split(jr.key(seed), 3)
    et = rand_init(k1, ETConfig(D=D, H=H, Y=Y, M=M, exclude_self=exclude_self))
    et = eqx.tree_at(lambda m: (m.lnorm.gamma, m.lnorm.delta), et,
                     (jnp.array(gamma, jnp.float32), delta_scale * jr.normal(k2, (D,))))
    return et, 10.0**log_scale * jr.normal(k3, (N, D))


# Fresh random draws on every run (tests/conftest.py never derandomizes); a handful of sizes keeps compilations few.
CASES = dict(seed=st.integers(0, 2**31 - 1), D=st.sampled_from([3, 8]), H=st.sampled_from([1, 2]),
             M=st.sampled_from([2, 16]), N=st.sampled_from([2, 5]), exclude_self=st.booleans(),
             log_scale=st.floats(-3, 2), gamma=st.floats(0.5, 2.0), delta_scale=st.floats(0.0, 1.0))


@settings(max_examples=40, deadline=None)
@given(alpha=st.floats(1e-3, 10.0), **CASES)
@example(alpha=0.1, seed=0, D=3, H=1, M=2, N=2, exclude_self=False, log_scale=-3.0, gamma=2.0, delta_scale=0.0)
@example(alpha=10.0, seed=1, D=8, H=2, M=16, N=5, exclude_self=True, log_scale=-3.0, gamma=0.5, delta_scale=1.0)
def test_safeguarded_descent_never_increases_energy(alpha, seed, D, H, M, N, exclude_self, log_scale, gamma,
                                                    delta_scale):
    et, x0 = random_case(seed, D, H, M, N, exclude_self, log_scale, gamma, delta_scale)
    _, E = et.descend(x0, nsteps=15, alpha=alpha, safeguard=True)
    assert E.shape == (16,) and np.isfinite(E).all()
    assert (np.diff(np.asarray(E)) <= 0).all(), np.diff(np.asarray(E))  # exactly: not even round-off


def test_safeguard_on_the_pinned_counterexample_at_every_scale():
    et = counterexample_block()
    for scale in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e2):
        x = scale * jnp.array(COUNTER_X)
        _, E = et.descend(x, nsteps=10, alpha=0.1, safeguard=True)
        assert (np.diff(np.asarray(E)) <= 0).all(), (scale, E)


@settings(max_examples=40, deadline=None)
@given(frac=st.floats(0.01, 0.5), **CASES)
def test_plain_step_within_half_the_bound_does_not_rise(frac, seed, D, H, M, N, exclude_self, log_scale, gamma,
                                                         delta_scale):
    "The chapter's measured claim: one plain step of at most half of `step_size_bound` never raised the energy."
    et, x0 = random_case(seed, D, H, M, N, exclude_self, log_scale, gamma, delta_scale)
    bound = float(et.step_size_bound(x0))
    assume(np.isfinite(bound) and bound > 0)  # inf only when no token's centred part would move
    _, E = et.descend(x0, nsteps=1, alpha=frac * bound)
    E = np.asarray(E, np.float64)
    assert E[1] <= E[0] + 1e-5 * abs(E[0]) + 1e-6, (bound, E)  # float32 round-off only


def test_step_size_bound_scales_with_the_tokens():
    et = rand_init(jr.key(3), ETConfig.tiny())
    x = 10.0 * jr.normal(jr.key(4), (6, 16))
    b = float(et.step_size_bound(x))
    np.testing.assert_allclose(float(et.step_size_bound(10 * x)), 10 * b, rtol=1e-3)


def test_descent_decreases_strictly_at_first_and_settles():
    et = rand_init(jr.key(0), ETConfig.tiny())
    _, E = et.descend(jr.normal(jr.key(1), (6, 16)), nsteps=400, alpha=0.5, safeguard=True)
    assert non_increasing(E)
    assert E[1] < E[0]
    assert abs(E[-1] - E[-2]) <= 1e-2 * abs(E[1] - E[0])  # it is coming to rest


# ---------------------------------------------------------------------------------------------------------------
# The maths: Lagrangian, closed form, bounds

@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), gamma=st.floats(0.1, 3.0), log_scale=st.floats(-2, 2))
def test_layernorm_is_gradient_of_lagrangian_with_psd_hessian(seed, gamma, log_scale):
    k1, k2 = jr.split(jr.key(seed))
    with jax.enable_x64(True):
        ln = EnergyLayerNorm(gamma=jnp.array(gamma, jnp.float64), delta=jr.normal(k1, (12,), dtype=jnp.float64))
        x = 10.0**log_scale * jr.normal(k2, (12,), dtype=jnp.float64)
        assert rel_err(jax.grad(ln.lagrangian)(x), ln(x)) < 1e-10
        hess = jax.hessian(ln.lagrangian)(x)
        np.testing.assert_allclose(hess, hess.T, atol=1e-10 * np.abs(hess).max())
        assert np.linalg.eigvalsh(np.asarray(hess)).min() >= -1e-9 * np.abs(hess).max()


@eqx.filter_jit
def _closed_form_and_autograd(et, g):
    E, upd = et.energy_and_update(g)
    return E, upd, et.energy_g(g), -jax.grad(et.energy_g)(g)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), exclude_self=st.booleans(), N=st.sampled_from([2, 7]), log_scale=st.floats(-1, 1),
       beta=st.sampled_from([None, 0.05]))
def test_closed_form_update_equals_autograd_float64(seed, exclude_self, N, log_scale, beta):
    with jax.enable_x64(True):
        cfg = ETConfig(D=12, H=3, Y=5, M=20, beta=beta, exclude_self=exclude_self)
        et = jax.tree.map(lambda a: a.astype(jnp.float64), rand_init(jr.key(seed), cfg))
        et = eqx.tree_at(lambda m: m.lnorm.delta, et, 0.3 * jr.normal(jr.key(seed + 1), (12,), dtype=jnp.float64))
        g = jax.vmap(et.lnorm)(10.0**log_scale * jr.normal(jr.key(seed + 2), (N, 12), dtype=jnp.float64))
        E, upd, E_ref, upd_ref = _closed_form_and_autograd(et, g)
        assert upd.dtype == jnp.float64
        assert rel_err(upd, upd_ref) < 1e-5
        assert rel_err(E, E_ref) < 1e-10


def test_energy_is_bounded_below_on_the_layernorm_shell():
    et = random_block(3, 16, 2, 8, 32, False, 1.4, 0.5)
    c = et.config
    r = 1.4 * math.sqrt(16) + float(jnp.linalg.norm(et.lnorm.delta))
    hn_bound = -0.5 * 6 * r**2 * float((et.Xi**2).sum())
    for scale in (1e-3, 1.0, 1e5):
        g = jax.vmap(et.lnorm)(scale * jr.normal(jr.key(4), (6, 16)))
        assert float(jnp.linalg.norm(g - et.lnorm.delta[None, :], axis=1).max()) <= 1.4 * math.sqrt(16) * (1 + 1e-5)
        assert et.hn_energy(g) >= hn_bound
    assert c.attn_beta == 1 / math.sqrt(8)


# ---------------------------------------------------------------------------------------------------------------
# Trajectories, batching

def test_descend_states_and_energies_line_up():
    et = rand_init(jr.key(5), ETConfig.tiny(exclude_self=True))
    x0 = jr.normal(jr.key(6), (5, 16))
    xT, E, S = et.descend(x0, nsteps=4, alpha=0.2, return_states=True)
    assert S.shape == (5, 5, 16) and E.shape == (5,)
    np.testing.assert_array_equal(S[0], x0)
    np.testing.assert_array_equal(S[-1], xT)
    np.testing.assert_allclose(E, [et.energy(s) for s in S], rtol=1e-5)
    x0_back, E0 = et.descend(x0, nsteps=0, alpha=0.1)
    np.testing.assert_array_equal(x0_back, x0)
    assert E0.shape == (1,)


def test_vmap_equals_python_loop():
    model = rand_init(jr.key(7), ImageETConfig.fashion_mnist())
    imgs = jr.normal(jr.key(8), (3, 28, 28, 1))
    masks = jnp.stack([random_patch_mask(49, n, key=k) for n, k in zip((0, 25, 49), jr.split(jr.key(9), 3))])
    out_v, E_v = jax.vmap(model.inpaint)(imgs, masks)
    xs_v, Ed_v = jax.vmap(lambda x: model.et.descend(x, 7, 0.3))(jax.vmap(model.encode)(imgs, masks))
    en_v = jax.vmap(model.et.energy)(xs_v)
    for i in range(3):
        out, E = model.inpaint(imgs[i], masks[i])
        assert_close(out_v[i], out, 1e-5)
        assert_close(E_v[i], E)
        x, Ed = model.et.descend(model.encode(imgs[i], masks[i]), 7, 0.3)
        assert_close(xs_v[i], x)
        assert_close(Ed_v[i], Ed)
        assert_close(en_v[i], model.et.energy(x))


def test_inpaint_is_encode_descend_decode_and_keep_visible():
    model = rand_init(jr.key(10), ImageETConfig.fashion_mnist())
    img = jr.normal(jr.key(11), (28, 28, 1))
    mask = random_patch_mask(49, 20, key=jr.key(12))
    out, E = model.inpaint(img, mask, nsteps=5, alpha=0.2)
    x, E2 = model.et.descend(model.encode(img, mask), 5, 0.2)
    np.testing.assert_allclose(model.decode(x), out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(E2, E, rtol=1e-5)
    kept, _ = model.inpaint(img, mask, nsteps=5, alpha=0.2, keep_visible=True)
    p_in, p_kept, p_out = (model.config.patcher.patchify(a) for a in (img, kept, out))
    np.testing.assert_array_equal(p_kept[~mask], p_in[~mask])
    np.testing.assert_array_equal(p_kept[mask], p_out[mask])


@settings(max_examples=10, deadline=None)
@given(kh=st.integers(1, 4), kw=st.integers(1, 4), p=st.integers(1, 5), c=st.sampled_from([1, 3]))
def test_patcher_round_trip_and_order(kh, kw, p, c):
    pt = Patcher((kh * p, kw * p, c), p)
    img = np.random.default_rng(kh * 100 + kw * 10 + p).normal(size=(kh * p, kw * p, c)).astype(np.float32)
    patches = pt.patchify(img)
    assert patches.shape == (kh * kw, c * p * p)
    np.testing.assert_array_equal(pt.unpatchify(patches), img)
    i, j = kh - 1, kw - 1  # the last patch, in (c h w) order
    np.testing.assert_array_equal(patches[-1], img[i*p:(i+1)*p, j*p:(j+1)*p].transpose(2, 0, 1).ravel())


def test_rand_init_keys_are_distinct():
    m = rand_init(jr.key(13), ImageETConfig(image_shape=(8, 8, 1), patch_size=4, et=ETConfig(D=16, H=1, Y=16, M=16),
                                            pixel_mean=(0.0,), pixel_std=(1.0,)))
    # With H = 1, Y = D = M = 16 and P = 16, six random tensors share the shape (16, 16): all must differ.
    same_shape = [m.et.Wk[0], m.et.Wq[0], m.et.Xi, m.Wenc, m.Wdec]
    for a in range(len(same_shape)):
        for b in range(a):
            assert not np.allclose(np.abs(same_shape[a]), np.abs(same_shape[b]))
            assert not np.allclose(np.abs(same_shape[a]), np.abs(same_shape[b]).T)
    assert not np.allclose(m.cls_token, m.mask_token)


def test_nan_energy_is_reported():
    et = rand_init(jr.key(14), ETConfig.tiny())
    et = eqx.tree_at(lambda m: m.Xi, et, et.Xi * 1e30)
    x = jr.normal(jr.key(15), (4, 16))
    with pytest.raises(FloatingPointError, match="descent diverged: the energy became NaN or infinite.*first at step 0"):
        et.descend(x, 3, 0.1)
    with pytest.raises(RuntimeError, match="energy became NaN or infinite"):  # inside vmap: a runtime error
        jax.block_until_ready(jax.vmap(lambda x: et.descend(x, 3, 0.1))(x[None]))


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints

def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = rand_init(jr.key(16), ImageETConfig.fashion_mnist())
    model = eqx.tree_at(lambda m: (m.et.lnorm.gamma, m.Benc), model,
                        (jnp.array(1.25), jr.normal(jr.key(17), (128,))))
    path = save_et(model, tmp_path / "sub" / "m.npz")
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    loaded = load_et(path)
    assert loaded.config == model.config
    la, ma = jax.tree.leaves(loaded), jax.tree.leaves(model)
    assert len(la) == len(ma) == 12
    for a, b in zip(la, ma):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    with np.load(path, allow_pickle=False) as f:
        assert f["config"].dtype.kind == "U" and f["config"].ndim == 0
        assert json.loads(str(f["config"])) == model.config.to_dict()
        assert f["Xi"].shape == (128, 512) and f["Wk"].shape == (4, 32, 128) and f["LNORM_gamma"].shape == ()
    x = jr.normal(jr.key(18), (50, 128))
    assert loaded.et.energy(x) == model.et.energy(x)


def paper_arrays(rng, H=2, Y=3, D=8, M=10, c=3, p=2, side=2, scale=0.5):
    "Random arrays in the paper's checkpoint format: stored layouts, float32, no config."
    P, N = c * p * p, side * side + 1
    shapes = {"Wk": (H, Y, D), "Wq": (H, Y, D), "Xi": (D, M), "Wenc": (P, D), "Benc": (D,), "Wdec": (D, P),
              "Bdec": (P,), "POS_embed": (N, D), "CLS_token": (D,), "MASK_token": (D,), "LNORM_bias": (D,)}
    raw = {k: scale * rng.normal(size=s) for k, s in shapes.items()}
    raw["LNORM_gamma"] = np.array(0.8 + rng.random())
    return {k: v.astype(np.float32) for k, v in raw.items()}


def independent_pipeline(raw, image, mask, nsteps, alpha, eps=1e-5):
    """The paper's model written again from the raw stored tensors (no code shared with the package): its energy,
    patch encoding in (c h w) order, descent by autograd, and decoding. Returns (image, energies)."""
    Wk, Wq, Xi = raw["Wk"], raw["Wq"], raw["Xi"]  # (H, Y, D), (H, Y, D), (D, M)
    Y = Wk.shape[1]
    beta = 1 / np.sqrt(Y)

    def layer_norm(x):
        xc = x - x.mean(axis=1, keepdims=True)
        return raw["LNORM_gamma"] * xc / jnp.sqrt((xc**2).mean(axis=1, keepdims=True) + eps) + raw["LNORM_bias"][None, :]

    def energy_of_g(g):
        keys = jnp.einsum("hyd,nd->hny", Wk, g)
        queries = jnp.einsum("hyd,nd->hny", Wq, g)
        scores = beta * jnp.einsum("hby,hcy->hbc", keys, queries)
        attn = -jax.scipy.special.logsumexp(scores, axis=1).sum() / beta
        return attn - 0.5 * (jnp.maximum(g @ Xi, 0)**2).sum()

    h, w, c = image.shape
    p = int(np.sqrt(raw["Wenc"].shape[0] // c))
    patches = [image[i:i+p, j:j+p, :].transpose(2, 0, 1).reshape(-1) for i in range(0, h, p) for j in range(0, w, p)]
    tokens = [raw["MASK_token"] if mask[a] else patches[a] @ raw["Wenc"] + raw["Benc"] for a in range(len(patches))]
    x = jnp.asarray(np.stack([raw["CLS_token"], *tokens]) + raw["POS_embed"])
    energies = []
    grad = jax.grad(energy_of_g)
    for _ in range(nsteps):
        energies.append(energy_of_g(layer_norm(x)))
        x = x - alpha * grad(layer_norm(x))
    energies.append(energy_of_g(layer_norm(x)))
    out = np.asarray(layer_norm(x)[1:] @ raw["Wdec"] + raw["Bdec"][None, :])
    img = np.zeros_like(image)
    k = 0
    for i in range(0, h, p):
        for j in range(0, w, p):
            img[i:i+p, j:j+p, :] = out[k].reshape(c, p, p).transpose(1, 2, 0)
            k += 1
    return img, np.array(energies)


@pytest.mark.parametrize("c,p,side", [(3, 2, 2), (1, 3, 3)])
def test_paper_format_checkpoint_matches_independent_implementation(tmp_path, c, p, side):
    rng = np.random.default_rng(c * 10 + p)
    raw = paper_arrays(rng, c=c, p=p, side=side)
    path = tmp_path / "et_ckpt.npz"
    np.savez(path, **raw)  # exactly the paper's format: twelve arrays, no config
    model = load_et(path)
    assert model.config.image_shape == (side * p, side * p, c) and model.config.patch_size == p
    assert not model.config.et.exclude_self
    image = rng.normal(size=(side * p, side * p, c)).astype(np.float32)
    mask = np.zeros(side * side, bool)
    mask[::2] = True
    out, E = model.inpaint(image, mask, nsteps=6, alpha=0.1)
    ref_img, ref_E = independent_pipeline(raw, image, mask, 6, 0.1)
    np.testing.assert_allclose(E, ref_E, rtol=2e-5)
    np.testing.assert_allclose(out, ref_img, rtol=1e-4, atol=1e-4)
    x = rng.normal(size=(side * side + 1, 8)).astype(np.float32)
    _, E_direct = independent_pipeline(raw, image, mask, 0, 0.1)
    assert np.isfinite(E_direct).all()
    np.testing.assert_allclose(model.et.energy(model.encode(image, mask)), E_direct[0], rtol=1e-5)
    assert np.isfinite(model.et.energy(x))


def test_paper_sized_checkpoint_gets_the_imagenet_config(tmp_path):
    rng = np.random.default_rng(0)
    raw = paper_arrays(rng, H=12, Y=64, D=768, M=3072, c=3, p=16, side=14, scale=0.01)
    np.savez(tmp_path / "et_ckpt.npz", **raw)
    model = load_et(tmp_path / "et_ckpt.npz")
    assert model.config == ImageETConfig.imagenet()
    assert model.et.Wk.shape == (12, 768, 64) and model.et.Xi.shape == (3072, 768)
    np.testing.assert_array_equal(model.et.Xi, raw["Xi"].T)
    np.testing.assert_array_equal(model.et.Wq[3], raw["Wq"][3].T)


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs: a clear error, before anything is compiled

@pytest.fixture
def no_trace(monkeypatch):
    "Make any call of the compiled cores fail the test: errors must come before them."
    def boom(*a, **k): raise AssertionError("a compiled core was called before the input was rejected")
    monkeypatch.setattr(etm, "_descend_core", boom)
    monkeypatch.setattr(iem, "_inpaint_core", boom)


FM = ImageETConfig.fashion_mnist()


@pytest.fixture(scope="module")
def fm_model():
    return rand_init(jr.key(20), FM)


def _img(shape=(28, 28, 1)): return jnp.zeros(shape)
def _mask(n=49): return jnp.zeros(n, bool).at[:5].set(True)


BAD_CALLS = {
    "image wrong size": (lambda m: m.inpaint(_img((32, 28, 1)), _mask()), ValueError,
                         r"image must have shape \(height, width, channels\) = \(28, 28, 1\), got \(32, 28, 1\)"),
    "image wrong channels": (lambda m: m.inpaint(_img((28, 28, 3)), _mask()), ValueError,
                             r"= \(28, 28, 1\), got \(28, 28, 3\)"),
    "image NaN": (lambda m: m.inpaint(_img().at[3, 4, 0].set(jnp.nan), _mask()), ValueError,
                  "image contains NaN or infinite values"),
    "image inf": (lambda m: m.inpaint(_img().at[0, 0, 0].set(jnp.inf), _mask()), ValueError,
                  "image contains NaN or infinite values"),
    "image integer dtype": (lambda m: m.inpaint(_img().astype(jnp.int32), _mask()), TypeError, "image"),
    "image a list": (lambda m: m.inpaint([[0.0]], _mask()), TypeError, "image"),
    "mask wrong length": (lambda m: m.inpaint(_img(), _mask(48)), ValueError,
                          r"mask must have shape \(49,\), one entry per patch, got \(48,\)"),
    "mask float dtype": (lambda m: m.inpaint(_img(), _mask().astype(jnp.float32)), TypeError, "mask"),
    "mask int dtype": (lambda m: m.encode(_img(), _mask().astype(jnp.int32)), TypeError, "mask"),
    "alpha zero": (lambda m: m.inpaint(_img(), _mask(), alpha=0.0), ValueError,
                   r"alpha \(the step size\) must be a finite number > 0, got 0.0"),
    "alpha negative": (lambda m: m.et.descend(jnp.zeros((50, 128)), 3, -0.5), ValueError,
                       r"alpha \(the step size\) must be a finite number > 0, got -0.5"),
    "alpha nan": (lambda m: m.et.descend(jnp.zeros((50, 128)), 3, float("nan")), ValueError,
                  r"alpha \(the step size\) must be a finite number > 0, got nan"),
    "nsteps negative": (lambda m: m.inpaint(_img(), _mask(), nsteps=-1), ValueError, "nsteps must be an integer >= 0, got -1"),
    "safeguard not a bool": (lambda m: m.inpaint(_img(), _mask(), safeguard=1), TypeError, "safeguard"),
    "max_halvings zero": (lambda m: m.et.descend(jnp.zeros((50, 128)), 3, 0.1, safeguard=True, max_halvings=0),
                          ValueError, "max_halvings must be a positive integer"),
    "nsteps float": (lambda m: m.et.descend(jnp.zeros((50, 128)), 2.5, 0.1), TypeError, "nsteps"),
    "tokens wrong D": (lambda m: m.et.descend(jnp.zeros((50, 64)), 3, 0.1), ValueError,
                       r"x must have shape \(N, D\) = \(N, 128\), got \(50, 64\)"),
    "tokens wrong count for decode": (lambda m: m.decode(jnp.zeros((49, 128))), ValueError,
                                      r"x must have 50 tokens \(CLS \+ 49 patches\), got 49"),
    "tokens integer": (lambda m: m.et.descend(np.zeros((50, 128), np.int64), 3, 0.1), TypeError, "x"),
    "unpatchify wrong shape": (lambda m: m.config.patcher.unpatchify(jnp.zeros((48, 16))), ValueError,
                               r"patches must have shape \(K, P\) = \(49, 16\), got \(48, 16\)"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_call_is_rejected_before_tracing(case, fm_model, no_trace):
    call, exc, msg = BAD_CALLS[case]
    with pytest.raises(exc, match=msg):
        call(fm_model)


BAD_CONSTRUCTIONS = {
    "patch does not divide height": (lambda: Patcher((225, 224, 3), 16), ValueError,
                                     "image height 225 is not divisible by patch size 16"),
    "patch does not divide width": (lambda: ImageETConfig((28, 30, 1), 4, ETConfig.tiny(), (0.5,), (0.5,)),
                                    ValueError, "image width 30 is not divisible by patch size 4"),
    "mean per channel": (lambda: ImageETConfig((28, 28, 3), 4, ETConfig.tiny(), (0.5,), (0.5,)), ValueError,
                         r"one value per channel \(3\)"),
    "zero heads": (lambda: ETConfig(H=0), ValueError, "H must be a positive integer, got 0"),
    "negative beta": (lambda: ETConfig(beta=-1.0), ValueError, "beta must be a positive finite number"),
    "rand_init of a dict": (lambda: rand_init(jr.key(0), {"D": 8}), TypeError, "config must be one of"),
    "exclude_self with one token": (lambda: rand_init(jr.key(0), ETConfig.tiny(exclude_self=True)).energy(
        jnp.ones((1, 16))), ValueError, r"with exclude_self=True a token needs at least one other token"),
    "n_hidden too large": (lambda: random_patch_mask(49, 50, key=jr.key(0)), ValueError,
                           r"n_hidden must be an integer in \[0, 49\], got 50"),
    "config from unknown keys": (lambda: ImageETConfig.from_dict({"image_shape": [28, 28, 1]}), ValueError,
                                 "config has keys"),
}


@pytest.mark.parametrize("case", list(BAD_CONSTRUCTIONS))
def test_bad_construction_is_rejected(case):
    make, exc, msg = BAD_CONSTRUCTIONS[case]
    with pytest.raises(exc, match=msg):
        make()


def _write(path, raw, **extra):
    np.savez(path, **raw, **extra)
    return path


BAD_CHECKPOINTS = {
    "missing key": (lambda raw: {k: v for k, v in raw.items() if k != "MASK_token"}, r"missing key\(s\) \['MASK_token'\]"),
    "transposed Xi": (lambda raw: dict(raw, Xi=raw["Xi"].T.copy()), "Xi looks transposed"),
    "Wk in the model's layout": (lambda raw: dict(raw, Wk=raw["Wk"].transpose(0, 2, 1).copy()), r"W[kq] has shape"),
    "vector gamma": (lambda raw: dict(raw, LNORM_gamma=np.ones(8, np.float32)), "LNORM_gamma has shape"),
    "integer weights": (lambda raw: dict(raw, Wenc=raw["Wenc"].astype(np.int32)), "Wenc has dtype int32"),
    "NaN weights": (lambda raw: dict(raw, Bdec=np.full_like(raw["Bdec"], np.nan)), "Bdec contains NaN"),
    "pickled object": (lambda raw: dict(raw, CLS_token=np.array([object()] * 8, dtype=object)), "pickled"),
    "geometry not square": (lambda raw: dict(raw, POS_embed=np.zeros((4, 8), np.float32)),
                            "cannot tell the image geometry from 3 patches"),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_rejected(case, tmp_path):
    change, msg = BAD_CHECKPOINTS[case]
    raw = paper_arrays(np.random.default_rng(1))
    path = tmp_path / "bad.npz"
    np.savez(path, **change(raw))
    with pytest.raises(CheckpointError, match=msg):
        load_et(path)


def test_checkpoint_config_must_match_arrays(tmp_path):
    model = rand_init(jr.key(21), FM)
    path = save_et(model, tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as f:
        raw = {k: f[k] for k in f.files}
    cfg = model.config.to_dict()
    cfg["et"]["M"] = 256
    raw["config"] = np.array(json.dumps(cfg))
    np.savez(tmp_path / "mismatch.npz", **raw)
    with pytest.raises(CheckpointError, match="M is 512 in the file but 256 in the config"):
        load_et(tmp_path / "mismatch.npz")
    raw["config"] = np.array(json.dumps({"nonsense": 1}))
    np.savez(tmp_path / "junk.npz", **raw)
    with pytest.raises(CheckpointError, match="invalid config: config has keys"):
        load_et(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="differs from the one stored"):
        load_et(path, config=ImageETConfig.imagenet())
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        load_et(tmp_path / "absent.npz")
    with pytest.raises(TypeError, match="model"):  # jaxtyping's check or ours, both name it
        save_et(model.et, tmp_path / "x.npz")


# ---------------------------------------------------------------------------------------------------------------
# Inference settings live in the image model's configuration and travel with its checkpoint

def test_inference_settings_round_trip_through_a_checkpoint(tmp_path):
    cfg = ImageETConfig.fashion_mnist().replace(nsteps=5, alpha=0.05, safeguard=True)
    model = rand_init(jr.key(30), cfg)
    loaded = load_et(save_et(model, tmp_path / "m.npz"))
    assert loaded.config == cfg and loaded.settings() == (5, 0.05, True)
    img, mask = jr.normal(jr.key(31), (28, 28, 1)), random_patch_mask(49, 20, key=jr.key(32))
    out, E = loaded.inpaint(img, mask)
    assert E.shape == (6,) and (np.diff(np.asarray(E)) <= 0).all()
    out2, E2 = model.et.descend(model.encode(img, mask), 5, 0.05, safeguard=True)
    np.testing.assert_allclose(E, E2, rtol=1e-6)  # (compiled in different contexts: float32 round-off)
    assert loaded.settings(nsteps=2) == (2, 0.05, True)  # a call may override; the config stays
    with pytest.raises(ValueError, match="alpha"):
        loaded.settings(alpha=-1.0)


def test_checkpoint_written_before_the_settings_loads_with_the_defaults(tmp_path):
    model = rand_init(jr.key(33), ImageETConfig.fashion_mnist())
    path = save_et(model, tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as f:
        raw = {k: f[k] for k in f.files}
    old = {k: v for k, v in json.loads(str(raw["config"])).items() if k not in ("nsteps", "alpha", "safeguard")}
    raw["config"] = np.array(json.dumps(old))
    np.savez(tmp_path / "old.npz", **raw)
    assert load_et(tmp_path / "old.npz").settings() == (12, 0.1, False)


def test_shipped_model_plain_descent_is_monotone_on_its_data():
    "The paper's plain step is the shipped model's default: measured monotone on held-out pictures, though its first steps exceed the bound."
    from amtutorial.data_utils import load_fashion_mnist_sample
    model = iem.get_pretrained_et()
    assert model.settings() == (12, 0.1, False)
    pix = load_fashion_mnist_sample()[0][:100].astype(np.float32)[..., None] / 255
    masks = jnp.asarray(iem.reference_masks(100, model.config))
    _, E, S = jax.vmap(lambda im, mk: model.et.descend(model.encode(im, mk), 12, 0.1, return_states=True))(
        model.normalize(pix), masks)
    assert (np.diff(np.asarray(E), axis=1) < 0).all()
    lowest = np.asarray(jax.vmap(jax.vmap(model.et.step_size_bound))(S[:, :-1]).min(0))
    assert lowest[0] < 0.1 and (lowest[6:] >= 0.1).all()  # outside the bound at first, inside it later


def test_attention_weights_axis_convention():
    et = rand_init(jr.key(34), ETConfig.tiny(exclude_self=True))
    g = jax.vmap(et.lnorm)(jr.normal(jr.key(35), (6, 16)))
    A = et.attention_weights(g)  # [h, B, C]: each query C's weights over keys B sum to one
    np.testing.assert_allclose(A.sum(1), np.ones((2, 6)), rtol=1e-6)
    K, Q = et.keys_queries(g)
    b, c = 2, 4
    scores = et.config.attn_beta * jnp.einsum("hby,hy->hb", K, Q[:, c])
    scores = scores.at[:, c].set(-jnp.inf)
    np.testing.assert_allclose(A[:, b, c], jax.nn.softmax(scores, axis=1)[:, b], rtol=1e-5)
