"""Retrieval with a (trained or random) Energy Transformer: trajectories, retrieval videos, memories and attention,
and the paper's ImageNet demo, both where its files can be had (a synthetic checkpoint in the paper's exact format
and the eleven real pictures, served from a loopback server) and where they cannot (a dead URL).

Run under jaxtyping + beartype and jax_numpy_rank_promotion="raise" (see conftest.py)."""
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import ET_FIGS

import amtutorial.image_et as iem
from amtutorial.data_utils import ET_IMG_NAMES
from amtutorial.energy_transformer import ETConfig, rand_init
from amtutorial.image_et import (HIDDEN_COLOUR, ImageETConfig, load_et, paper_demo, random_patch_mask,
                                 retrieval_pixels, retrieval_video, try_paper_demo)
from amtutorial.viz import VideoFiles, read_video, render_figure, trajectory_frame



def non_increasing(E, rtol=1e-5):
    E = np.asarray(E, dtype=np.float64)
    return bool(np.all(np.diff(E) <= rtol * np.abs(E[:-1]) + 1e-6))


def mean_abs_diff(a, b):
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


# A small image model (12x12 grey pictures in 3x3 patches) keeps the video tests fast.
SMALL = ImageETConfig((12, 12, 1), 3, ETConfig(D=16, H=2, Y=8, M=32), (0.5,), (0.25,))


@pytest.fixture(scope="module")
def small():
    model = rand_init(jr.key(0), SMALL)
    images = jr.normal(jr.key(1), (3, 12, 12, 1))
    masks = jnp.stack([random_patch_mask(16, 8, key=k) for k in jr.split(jr.key(2), 3)])
    return model, images, masks


def test_trajectory_ends_where_inpaint_ends(small):
    model, images, masks = small
    traj, E = model.inpaint_trajectory(images[0], masks[0], 5, 0.1, keep_visible=True)
    final, E2 = model.inpaint(images[0], masks[0], 5, 0.1, keep_visible=True)
    assert traj.shape == (6, 12, 12, 1) and E.shape == (6,)
    np.testing.assert_allclose(traj[-1], final, atol=1e-5)
    np.testing.assert_allclose(E, E2, rtol=1e-6)
    np.testing.assert_allclose(traj[0], model.inpaint(images[0], masks[0], 0, 0.1, keep_visible=True)[0], atol=1e-5)
    assert non_increasing(E)
    # keep_visible: every decoded image shows the visible input pixels unchanged
    hidden = model.hide_patches(jnp.zeros((12, 12, 1)), masks[0], colour=(1.0, 1.0, 1.0))[..., 0] > 0
    np.testing.assert_array_equal(np.asarray(traj)[:, ~np.asarray(hidden)],
                                  np.broadcast_to(np.asarray(images[0])[~np.asarray(hidden)], (6, int((~hidden).sum()), 1)))


def test_vmapped_trajectories_equal_a_loop(small):
    model, images, masks = small
    trajs, Es = jax.vmap(lambda im, mk: model.inpaint_trajectory(im, mk, 4, 0.1))(images, masks)
    for i in range(3):
        t, E = model.inpaint_trajectory(images[i], masks[i], 4, 0.1)
        np.testing.assert_allclose(trajs[i], t, atol=1e-5)
        np.testing.assert_allclose(Es[i], E, rtol=1e-6)


def test_hide_patches_paints_exactly_the_hidden_patches(small):
    model, _, masks = small
    pixels = jnp.linspace(0, 1, 144).reshape(12, 12, 1)
    shown = np.asarray(model.hide_patches(pixels, masks[0]))
    hid = np.asarray(masks[0]).reshape(4, 4).repeat(3, 0).repeat(3, 1)  # patches row by row, 3x3 pixels each
    assert shown.shape == (12, 12, 3)
    np.testing.assert_array_equal(shown[hid], np.broadcast_to(np.float32(HIDDEN_COLOUR), (hid.sum(), 3)))
    np.testing.assert_array_equal(shown[~hid], np.repeat(np.asarray(pixels)[~hid], 3, axis=-1))


def test_retrieval_video_frames_and_cache(small, cache_dir, monkeypatch):
    model, images, masks = small
    v = retrieval_video("small", model, images, masks, 5, 0.1, hold=3, fps=4, ncols=3, size=(6.0, 2.0), dpi=80,
                        progress=False)
    assert v.mp4.parent == cache_dir / "videos" and v.gif.exists()
    frames = read_video(v.mp4)
    assert len(frames) == 5 + 1 + 3
    # the first frame is step 0 and the last is step 5, as retrieval_frame draws them
    masked, traj, E = retrieval_pixels(model, images, masks, 5, 0.1)
    E = np.asarray(E, np.float64) - np.asarray(E, np.float64)[:1]
    frame = lambda t: render_figure(trajectory_frame(traj[t][..., 0], E, t, ncols=3, vmin=0, vmax=1, title=f"step {t}",
                                                     size=(6.0, 2.0), dpi=80, inputs=masked,
                                                     ylabel="energy - energy at step 0"))
    first, last = frame(0), frame(5)
    assert frames.shape[1:] == first.shape
    err = max(mean_abs_diff(frames[0], first), mean_abs_diff(frames[-1], last))
    assert err < 4
    # each end of the video is nearer the step it should show than the other end: the descent visibly changed it
    assert mean_abs_diff(frames[0], first) < mean_abs_diff(frames[0], last) / 2
    assert mean_abs_diff(frames[-1], last) < mean_abs_diff(frames[-1], first) / 2
    np.testing.assert_array_equal(frames[-1], frames[-4])  # held frames repeat the last step
    # asking again draws nothing and descends nothing
    monkeypatch.setattr(iem, "retrieval_pixels", lambda *a, **k: pytest.fail("recomputed a cached video"))
    stamp = v.mp4.stat().st_mtime_ns
    assert retrieval_video("small", model, images, masks, 5, 0.1, hold=3, fps=4, ncols=3, size=(6.0, 2.0), dpi=80,
                           progress=False) == v
    assert v.mp4.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("change", ["model", "images", "masks", "nsteps", "alpha"])
def test_retrieval_video_key_follows_its_inputs(small, cache_dir, monkeypatch, change):
    model, images, masks = small
    args = dict(model=model, images=images, masks=masks, nsteps=2, alpha=0.1)
    # no drawing needed to learn the key: capture what cached_video is asked for
    seen = []
    def fake(name, fn, n, key, **kw):
        seen.append((key, n))
        return VideoFiles(Path(f"{name}.mp4"), None, name)
    monkeypatch.setattr(iem, "cached_video", fake)
    retrieval_video("k", **args)
    other = dict(args)
    other[change] = {"model": rand_init(jr.key(9), SMALL), "images": images.at[0, 0, 0, 0].add(1.0),
                     "masks": masks.at[0, 0].set(~masks[0, 0]), "nsteps": 3, "alpha": 0.2}[change]
    retrieval_video("k", **other)
    assert seen[0][0] != seen[1][0]
    retrieval_video("k", **args)
    assert seen[2] == seen[0]


@pytest.mark.parametrize("make, exc, message", [
    (lambda m, im, mk: retrieval_video("v", m, im[:, :6], mk), ValueError, "images must be an array of shape (n, 12, 12, 1)"),
    (lambda m, im, mk: retrieval_video("v", m, im, mk[:, :5]), ValueError, "masks must have shape (3, 16), one row per image, got (3, 5)"),
    (lambda m, im, mk: retrieval_video("v", m, im, mk.astype(jnp.int32)), TypeError, "masks"),
    (lambda m, im, mk: retrieval_video("v", m.et, im, mk), TypeError, "model"),
    (lambda m, im, mk: retrieval_video("v", m, im, mk, nsteps=-1), ValueError, "nsteps must be an integer >= 0"),
    (lambda m, im, mk: retrieval_video("v", m, im, mk, hold=-2), ValueError, "hold must be an integer >= 0"),
    (lambda m, im, mk: retrieval_video("bad name", m, im, mk), ValueError, "name must be a non-empty string"),
    (lambda m, im, mk: m.inpaint_trajectory(im[0], mk[0], alpha=0.0), ValueError, "alpha (the step size)"),
    (lambda m, im, mk: m.hide_patches(im[0, :6], mk[0]), ValueError, "pixels must have shape"),
])
def test_bad_inputs(small, cache_dir, make, exc, message):
    model, images, masks = small
    with pytest.raises(exc, match=__import__("re").escape(message)):
        make(model, images, masks)


def test_attention_weights_are_a_softmax_over_keys():
    et = rand_init(jr.key(3), ETConfig.tiny())
    g = jax.vmap(et.lnorm)(jr.normal(jr.key(4), (7, 16)))
    A = et.attention_weights(g)  # [h, B, C]: key B, query C, as in the energy
    assert A.shape == (2, 7, 7)
    np.testing.assert_allclose(A.sum(1), 1, rtol=1e-6)
    # d(-E_attn)/d(scores) is the attention: check against autograd
    K, Q = et.keys_queries(g)
    scores = et.config.attn_beta * jnp.einsum("hby,hcy->hbc", K, Q)
    grad = jax.grad(lambda s: jax.nn.logsumexp(s, axis=1).sum())(scores)
    np.testing.assert_allclose(A, grad, atol=1e-6)


def test_memory_patches_decode_the_memories_on_the_shell():
    model = rand_init(jr.key(5), SMALL)
    patches = model.memory_patches()
    assert patches.shape == (32, 3, 3, 1)
    g = jax.vmap(model.et.lnorm)(model.et.Xi[:2])
    np.testing.assert_allclose(patches[1, :, :, 0].reshape(-1), g[1] @ model.Wdec + model.Bdec, atol=1e-5)
    shell = jax.vmap(model.et.lnorm)(jr.normal(jr.key(6), (2000, 16)))
    for mu in range(4):
        xi = model.et.Xi[mu]
        assert float((shell @ xi).max()) <= float(model.et.lnorm(xi) @ xi) + 1e-5


# ---------------------------------------------------------------------------------------------------------------
# The paper's ImageNet demo

def paper_checkpoint(path, seed=0):
    "Random weights of the paper's ImageNet shapes, in its file format: stored layouts, float32, np.savez, no config."
    rng = np.random.default_rng(seed)
    H, Y, D, M, P, N = 12, 64, 768, 3072, 768, 197
    raw = {"Wk": rng.normal(size=(H, Y, D)) / math.sqrt(D), "Wq": rng.normal(size=(H, Y, D)) / math.sqrt(D),
           "Xi": rng.normal(size=(D, M)) / math.sqrt(D), "Wenc": rng.normal(size=(P, D)) / math.sqrt(P),
           "Benc": 0.01 * rng.normal(size=D), "Wdec": rng.normal(size=(D, P)) / math.sqrt(D),
           "Bdec": 0.01 * rng.normal(size=P), "POS_embed": 0.02 * rng.normal(size=(N, D)),
           "CLS_token": 0.02 * rng.normal(size=D), "MASK_token": 0.02 * rng.normal(size=D),
           "LNORM_gamma": np.array(1.0), "LNORM_bias": 0.01 * rng.normal(size=D)}
    np.savez(path, **{k: v.astype(np.float32) for k, v in raw.items()})
    return path


@pytest.fixture
def paper_server(http_server, et_figs):
    "The loopback server holding a synthetic paper checkpoint and the eleven real demo pictures."
    (http_server.root / "et-figs").mkdir()
    for n in ET_IMG_NAMES: shutil.copy(ET_FIGS / n, http_server.root / "et-figs" / n)
    paper_checkpoint(http_server.root / "et_ckpt.npz")
    return http_server


def test_paper_demo_runs_on_served_files(paper_server, cache_dir):
    url = paper_server.url
    demo, message = try_paper_demo(f"{url}/ok/et_ckpt.npz", f"{url}/ok", progress=False, ncols=6)
    assert demo is not None, message
    assert "Inpainted 11 ImageNet pictures" in message and "100 of 196 patches" in message
    assert demo.pixels.shape == demo.recon.shape == demo.masked.shape == (11, 224, 224, 3)
    assert demo.masks.shape == (11, 196) and (demo.masks.sum(1) == 100).all()
    assert demo.energies.shape == (13, 11)
    assert all(non_increasing(e) for e in demo.energies.T)
    # the pictures went in as they are on disk, normalised with the ImageNet mean and std
    import imageio.v3 as iio
    np.testing.assert_array_equal(demo.pixels[0], iio.imread(ET_FIGS / ET_IMG_NAMES[0])[..., :3] / np.float32(255))
    model = load_et(cache_dir / "checkpoints" / "et_ckpt.npz")
    assert model.config == ImageETConfig.imagenet()
    np.testing.assert_allclose(model.normalize(demo.pixels[0])[5, 7],
                               (demo.pixels[0][5, 7] - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
                               rtol=1e-5)
    # visible pixels are the input's (up to float32 round-off of normalise / denormalise), hidden ones painted
    hid = demo.masks[0].reshape(14, 14).repeat(16, 0).repeat(16, 1)
    np.testing.assert_allclose(demo.recon[0][~hid], demo.pixels[0][~hid], atol=1e-5)
    np.testing.assert_array_equal(demo.masked[0][hid], np.broadcast_to(np.float32(HIDDEN_COLOUR), (hid.sum(), 3)))
    # the video: one frame per state, then the held frames; it decodes and the descent shows
    frames = read_video(demo.video.mp4)
    assert len(frames) == 13 + 4
    assert mean_abs_diff(frames[0], frames[-1]) > 1
    assert sorted(p.split("/")[-1] for p in paper_server.requests) == sorted(["et_ckpt.npz", *ET_IMG_NAMES])
    # a second run finds everything in the cache: no download, and the video is not drawn again
    stamp = demo.video.mp4.stat().st_mtime_ns
    demo2, _ = try_paper_demo(f"{url}/ok/et_ckpt.npz", f"{url}/ok", progress=False, ncols=6)
    assert demo2.video == demo.video and demo.video.mp4.stat().st_mtime_ns == stamp
    assert len(paper_server.requests) == 12


def test_paper_demo_reports_unreachable_files(dead_url, cache_dir):
    demo, message = try_paper_demo(f"{dead_url}/et_ckpt.npz", dead_url, progress=False)
    assert demo is None
    assert "amtutorial fetch et-imgs et-checkpoint" in message
    assert str(cache_dir / "checkpoints" / "et_ckpt.npz") in message
    assert str(cache_dir / "et-figs" / "00_parrot.png") in message
    assert "10_wall.png" in message  # every picture is named, not only the first that failed
    assert not any(cache_dir.rglob("*.npz")) and not any(cache_dir.rglob("*.png"))


def test_paper_demo_reports_a_bad_checkpoint(paper_server, cache_dir):
    root = paper_server.root
    with np.load(root / "et_ckpt.npz") as f: arrays = dict(f)
    arrays["Xi"] = arrays["Xi"].T  # memories stored the wrong way round
    np.savez(root / "bad.npz", **arrays)
    demo, message = try_paper_demo(f"{paper_server.url}/ok/bad.npz", f"{paper_server.url}/ok", progress=False)
    assert demo is None and "CheckpointError" in message and "Xi" in message
    assert "amtutorial fetch" in message


def test_paper_demo_reports_an_unwritable_cache(tmp_path, monkeypatch, dead_url):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache should be")
    monkeypatch.setenv("AMTUTORIAL_CACHE_DIR", str(blocker / "cache"))
    demo, message = try_paper_demo(f"{dead_url}/et_ckpt.npz", dead_url, progress=False)
    assert demo is None and "CacheDirError" in message


def test_paper_demo_rejects_bad_pictures(tmp_path, cache_dir):
    ckpt = paper_checkpoint(tmp_path / "et_ckpt.npz")
    with pytest.raises(ValueError, match=r"images must be a uint8 array of shape \(n, 224, 224, 3\)"):
        paper_demo(ckpt, np.zeros((2, 224, 224, 3), np.float32))
    with pytest.raises(ValueError, match="images must be a uint8 array"):
        paper_demo(ckpt, np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="n_hidden must be an integer in"):
        paper_demo(ckpt, np.zeros((1, 224, 224, 3), np.uint8), n_hidden=197, video=False)
