"""amtutorial.training: the training smoke test, data-parallel sharding = single device, resume, the shipped model
on held-out data it never saw, the baselines and metrics, and bad inputs."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from amtutorial.data_utils import ASSETS, FASHION_MNIST_SYSTEM_DIRS, load_fashion_mnist, load_fashion_mnist_sample
from amtutorial.energy_transformer import ETConfig, rand_init
from amtutorial.image_et import (ImageETConfig, get_pretrained_et, pretrained_path, random_masks, reconstruct,
                                 reference_masks)
from amtutorial.metrics import biharmonic_fill, masked_psnr, masked_ssim, mean_fill, nearest_neighbour_fill
from amtutorial.training import (TrainConfig, make_optimizer, shard_batch, data_parallel, shipped_recipe, train,
                                 train_step, training_record)

SMALL = ImageETConfig((28, 28, 1), 4, ETConfig(D=32, H=2, Y=8, M=64), (0.286,), (0.353,), nsteps=3)  # a short descent: fast
SHIPPED = pretrained_path("fashion_mnist")


def small_images(n=400):
    return load_fashion_mnist_sample()[0][:n]


def test_training_smoke_loss_falls(tmp_path):
    cfg = TrainConfig(steps=40, batch_size=16, warmup=5, n_val=64, eval_every=20, lr=3e-3)
    _, meta = train(cfg, SMALL, tmp_path / "m.npz", images=small_images(), progress=False)
    h = meta["history"]
    assert meta["step"] == 40 and h["step"] == [20, 40]
    assert h["loss"][-1] < 0.8 * h["loss"][0], h
    assert h["val_psnr"][-1] > h["val_psnr"][0], h
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "m.state.npz"]


def test_training_is_deterministic_and_resumes_exactly(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=8, warmup=2, n_val=16, eval_every=3)
    a, _ = train(cfg, SMALL, tmp_path / "a.npz", images=small_images(64), progress=False)
    b, _ = train(cfg, SMALL, tmp_path / "b.npz", images=small_images(64), progress=False, stop_after=4)
    b, meta = train(cfg, SMALL, tmp_path / "b.npz", images=small_images(64), progress=False, resume=True)
    assert meta["step"] == 6
    for x, y in zip(jax.tree.leaves(eqx.filter(a, eqx.is_array)), jax.tree.leaves(eqx.filter(b, eqx.is_array))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


SHARDING_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, jax.random as jr, equinox as eqx, numpy as np
    from amtutorial.energy_transformer import ETConfig, rand_init
    from amtutorial.image_et import ImageETConfig, random_masks
    from amtutorial.training import (TrainConfig, make_optimizer, train_step, data_parallel,
                                     shard_batch, replicate)
    assert jax.device_count() == 4, jax.devices()
    conf = ImageETConfig((28, 28, 1), 4, ETConfig(D=32, H=2, Y=8, M=64), (0.286,), (0.353,), nsteps=3)
    cfg = TrainConfig(batch_size=8)
    model = rand_init(jr.key(0), conf)
    opt = make_optimizer(cfg)
    state = opt.init(eqx.filter(model, eqx.is_array))
    x = jr.normal(jr.key(1), (8, 28, 28, 1)); m = random_masks(jr.key(2), 8, conf, cfg.mask_frac)
    one, _, loss1 = train_step(jax.device_put(model, jax.devices()[0]), state, x, m, cfg, opt)
    ds, rs = data_parallel()
    xs = shard_batch(x, ds)
    assert len(xs.sharding.device_set) == 4 and xs.addressable_shards[0].data.shape == (2, 28, 28, 1)
    four, _, loss4 = train_step(replicate(model, rs), replicate(state, rs), xs, shard_batch(m, ds), cfg, opt)
    assert len(jax.tree.leaves(four)[0].sharding.device_set) == 4
    d = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(jax.tree.leaves(eqx.filter(one, eqx.is_array)),
                                                       jax.tree.leaves(eqx.filter(four, eqx.is_array))))
    print("LOSS", float(loss1), float(loss4), "MAXDIFF", d)
    assert abs(float(loss1) - float(loss4)) <= 1e-5 * abs(float(loss1)), (loss1, loss4)
    assert d < 1e-5, d
""")


def test_sharded_step_equals_single_device():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    r = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    assert "LOSS" in r.stdout


def test_shard_batch_rejects_indivisible_batch():
    ds, _ = data_parallel(jax.devices()[:1] * 1)
    assert shard_batch(jnp.zeros((3, 2)), ds).shape == (3, 2)


# --- metrics and baselines ------------------------------------------------------------------------------------
def test_metrics_and_baselines_on_known_cases():
    rng = np.random.default_rng(0)
    x = rng.random((4, 28, 28)).astype(np.float32)
    m = np.asarray(random_masks(jr.key(0), 4, SMALL))
    h = np.asarray(SMALL.patcher.pixel_mask(m))
    assert h.sum((1, 2)).tolist() == [24 * 16] * 4
    np.testing.assert_allclose(masked_psnr(np.where(h, x + 0.1, x), x, h), 20.0, rtol=1e-5)
    np.testing.assert_allclose(masked_ssim(x, x, h), 1.0)
    mf = mean_fill(x, h)
    np.testing.assert_allclose(mf[~h], x[~h])
    np.testing.assert_allclose(mf[0][h[0]], x[0][~h[0]].mean(), rtol=1e-5)
    # the nearest stored picture on the visible pixels is the picture itself when it is stored
    nn = nearest_neighbour_fill(x, h, np.concatenate([rng.random((50, 28, 28)), x]).astype(np.float32))
    np.testing.assert_allclose(nn, x, atol=1e-6)
    bh = biharmonic_fill(x[:1], h[:1])
    assert bh.shape == (1, 28, 28) and np.allclose(bh[~h[:1]], x[:1][~h[:1]])


@pytest.mark.parametrize("call, err, message", [
    (lambda: TrainConfig(steps=0), ValueError, "steps must be a positive integer"),
    (lambda: TrainConfig(batch_size=-3), ValueError, "batch_size must be a positive integer"),
    (lambda: TrainConfig(mask_frac=1.0), ValueError, "mask_frac must be in \\(0, 1\\)"),
    (lambda: TrainConfig(lr=0.0), ValueError, "lr must be > 0"),
    (lambda: ImageETConfig.fashion_mnist().replace(alpha=-0.1), ValueError, "alpha \\(the step size\\) must be"),
    (lambda: TrainConfig(clip=0.0), ValueError, "clip must be > 0"),
    (lambda: TrainConfig(visible_weight=-1.0), ValueError, "visible_weight must be >= 0"),
    (lambda: get_pretrained_et("imagenet"), ValueError, "no pretrained model 'imagenet'; available"),
    (lambda: masked_psnr(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), np.zeros((2, 4, 4), bool)), ValueError,
     "at least one pixel of every image"),
    (lambda: mean_fill(np.zeros((2, 4, 4)), np.zeros((3, 4, 4), bool)), ValueError, "same shape"),
    (lambda: nearest_neighbour_fill(np.zeros((2, 4, 4)), np.ones((2, 4, 4), bool), np.zeros((5, 4, 5))), ValueError,
     "memory must be a non-empty batch"),
])
def test_bad_inputs(call, err, message):
    with pytest.raises(err, match=message):
        call()


def test_train_rejects_bad_images_and_changed_recipe(tmp_path):
    cfg = TrainConfig(steps=2, batch_size=8, warmup=1, n_val=16, eval_every=2)
    with pytest.raises(ValueError, match="images must be uint8 of shape \\(n, 28, 28\\)"):
        train(cfg, SMALL, tmp_path / "m.npz", images=small_images(64).astype(np.float32), progress=False)
    with pytest.raises(ValueError, match="too few"):
        train(cfg, SMALL, tmp_path / "m.npz", images=small_images(20), progress=False)
    train(cfg, SMALL, tmp_path / "m.npz", images=small_images(64), progress=False)
    with pytest.raises(ValueError, match="was trained with"):
        train(TrainConfig(steps=2, batch_size=8, warmup=1, n_val=16, eval_every=2, lr=1.0), SMALL,
              tmp_path / "m.npz", images=small_images(64), progress=False, resume=True)


def test_interrupted_training_keeps_a_checkpoint(tmp_path, monkeypatch):
    import amtutorial.training as tr
    cfg = TrainConfig(steps=10, batch_size=8, warmup=1, n_val=16, eval_every=100)
    real, calls = tr.train_step, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 4: raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(tr, "train_step", flaky)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, SMALL, tmp_path / "m.npz", images=small_images(64), progress=False)
    meta = json.loads(str(np.load(tmp_path / "m.state.npz")["meta"]))
    assert meta["step"] == 3  # the three finished steps were saved
    assert meta["pending_losses"] and len(meta["pending_losses"]) == 3  # and their losses, for the next validation


# --- the shipped model, on pictures and masks the project never used ------------------------------------------


def test_shipped_checkpoint_loads_and_is_small():
    model = get_pretrained_et()
    assert model.config == ImageETConfig.fashion_mnist()
    assert SHIPPED.stat().st_size < 8e6
    rec = training_record()
    assert [TrainConfig.from_dict(s["train_config"]) for s in rec["stages"]] == shipped_recipe()
    assert [s["step"] for s in rec["stages"]] == [c.steps for c in shipped_recipe()] and rec["wall_seconds"] > 0
    assert rec["stages"][0]["init"] == "random" and rec["stages"][1]["init"].startswith("weights ")
    assert rec["step"] == sum(c.steps for c in shipped_recipe()) and rec["levers"]


def test_shipped_model_beats_baselines_on_unseen_data():
    assert FASHION_MNIST_SYSTEM_DIRS[0].is_dir(), (
        "the full Fashion-MNIST test split is needed: apt-get install dataset-fashion-mnist (Debian)")
    model = get_pretrained_et()
    x = load_fashion_mnist("test")[0][5000:6000].astype(np.float32) / 255  # not the pictures of the notebook
    m = reference_masks(len(x), model.config, seed=987654321)  # nor its masks
    h = np.asarray(model.config.patcher.pixel_mask(m))
    memory = load_fashion_mnist("train")[0].astype(np.float32) / 255  # all 60,000, validation pictures included
    fills = {"ET": reconstruct(model, x, m), "nearest": nearest_neighbour_fill(x, h, memory),
             "biharmonic": biharmonic_fill(x, h), "mean fill": mean_fill(x, h)}
    psnr = {k: masked_psnr(v, x, h).mean() for k, v in fills.items()}
    ssim = {k: masked_ssim(v, x, h).mean() for k, v in fills.items()}
    print("held-out:", {k: (round(float(psnr[k]), 2), round(float(ssim[k]), 3)) for k in fills})
    for k in ("nearest", "biharmonic", "mean fill"):  # on both scores, against each
        assert psnr["ET"] > psnr[k] and ssim["ET"] > ssim[k], k


# --- training never loses work ---------------------------------------------------------------------------------
from amtutorial.data_utils import CheckpointError
from amtutorial.image_et import save_et
from amtutorial.training import TrainingStopped, check_train_out, read_state_meta, state_path

TINY = dict(steps=6, batch_size=8, warmup=2, n_val=16, eval_every=3)


def snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_resume_only_when_asked_and_the_history_continues(tmp_path):
    cfg, imgs = TrainConfig(**TINY), small_images(64)
    a, meta_a = train(cfg, SMALL, tmp_path / "a.npz", images=imgs, progress=False)
    _, meta_b = train(cfg, SMALL, tmp_path / "b.npz", images=imgs, progress=False, stop_after=4)  # 4: not an eval step
    assert meta_b["step"] == 4 and meta_b["history"]["step"] == [3] and len(meta_b["pending_losses"]) == 1
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="already holds a training run \\(step 4\\); pass resume=True"):
        train(cfg, SMALL, tmp_path / "b.npz", images=imgs, progress=False)
    assert snapshot(tmp_path) == before
    b, meta_b = train(cfg, SMALL, tmp_path / "b.npz", images=imgs, progress=False, resume=True)
    assert meta_b["history"]["step"] == meta_a["history"]["step"] == [3, 6]  # strictly increasing, no step twice
    np.testing.assert_allclose(meta_b["history"]["loss"], meta_a["history"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(meta_b["history"]["val_psnr"], meta_a["history"]["val_psnr"], rtol=1e-5)
    assert meta_b["run_id"] != meta_a["run_id"]
    # --resume on a finished run does nothing more; on an empty path it starts afresh
    _, again = train(cfg, SMALL, tmp_path / "b.npz", images=imgs, progress=False, resume=True)
    assert again["step"] == 6 and again["history"] == meta_b["history"]


def test_checkpoint_every(tmp_path, monkeypatch):
    import amtutorial.training as tr
    saved = []
    real = tr._save_state
    monkeypatch.setattr(tr, "_save_state", lambda out, m, o, meta: saved.append(meta["step"]) or real(out, m, o, meta))
    train(TrainConfig(**TINY), SMALL, tmp_path / "m.npz", images=small_images(64), progress=False, checkpoint_every=2)
    assert saved == [2, 4, 6]
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
        train(TrainConfig(**TINY), SMALL, tmp_path / "n.npz", images=small_images(64), progress=False, checkpoint_every=0)


def test_out_that_is_not_a_run_is_never_overwritten(tmp_path):
    cfg, imgs = TrainConfig(**TINY), small_images(64)
    (tmp_path / "results.csv").write_text("step,loss\n")
    (tmp_path / "folder.npz").mkdir()
    save_et(get_pretrained_et(), tmp_path / "model.npz")  # a checkpoint without a training state
    np.savez(tmp_path / "orphan.state.npz", x=np.zeros(2))  # a state-like file without its model
    before = snapshot(tmp_path)
    for name, message in [("results.csv", "is not an Energy Transformer checkpoint"), ("folder.npz", "not a regular file"),
                          ("model.npz", "no training state"), ("orphan.npz", "is not a training state"),
                          ("results.csv/m.npz", "is a file, not a folder")]:
        for resume in (False, True):
            with pytest.raises(ValueError, match=message):
                train(cfg, SMALL, tmp_path / name, images=imgs, progress=False, resume=resume)
    with pytest.raises(ValueError, match="not a regular file"):
        train(cfg, SMALL, "/dev/null", images=imgs, progress=False)
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "folder.npz"])


def test_mismatched_pair_is_refused(tmp_path):
    cfg, imgs = TrainConfig(**TINY), small_images(64)
    train(cfg, SMALL, tmp_path / "a.npz", images=imgs, progress=False, stop_after=3)
    train(cfg, SMALL, tmp_path / "b.npz", images=imgs, progress=False, stop_after=4)
    state_path(tmp_path / "a.npz").write_bytes(state_path(tmp_path / "b.npz").read_bytes())  # b's state beside a's model
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="do not belong together: the state is of step 4 of run [0-9a-f]+.*mismatched"):
        train(cfg, SMALL, tmp_path / "a.npz", images=imgs, progress=False, resume=True)
    with pytest.raises(CheckpointError, match="do not belong together"):
        read_state_meta(tmp_path / "a.npz")
    assert snapshot(tmp_path) == before
    assert check_train_out(tmp_path / "b.npz", resume=True)["step"] == 4


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import amtutorial.training as tr
    from test_training import SMALL, small_images
    real = tr.train_step
    def slow(*a, **k):
        out = real(*a, **k)
        print("STEP", flush=True); time.sleep(0.15)
        return out
    tr.train_step = slow
    cfg = tr.TrainConfig(steps=40, batch_size=8, warmup=2, n_val=16, eval_every=10)
    try: tr.train(cfg, SMALL, {out!r}, images=small_images(64), progress=False, checkpoint_every=1000)
    except tr.TrainingStopped as e:
        print("STOPPED", e.step, flush=True); sys.exit(128 + e.signum)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_that_resumes(tmp_path, sig):
    out = tmp_path / "run.npz"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    p = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    steps = 0
    for line in p.stdout:
        steps += line.startswith("STEP")
        if steps == 12: break  # past the first validation (step 10), long before any periodic checkpoint
    p.send_signal(sig)
    rest, err = p.communicate(timeout=300)
    assert p.returncode == 128 + sig, err[-3000:]
    stopped = int(rest.split("STOPPED ")[1].split()[0])
    assert 12 <= stopped < 40
    meta, _ = read_state_meta(out)
    assert meta["step"] == stopped and meta["history"]["step"] == [10]
    cfg = TrainConfig(steps=40, batch_size=8, warmup=2, n_val=16, eval_every=10)
    _, resumed = train(cfg, SMALL, out, images=small_images(64), progress=False, resume=True)
    _, whole = train(cfg, SMALL, tmp_path / "whole.npz", images=small_images(64), progress=False)
    assert resumed["step"] == 40 and resumed["history"]["step"] == whole["history"]["step"] == [10, 20, 30, 40]
    np.testing.assert_allclose(resumed["history"]["loss"], whole["history"]["loss"], rtol=1e-4)


def test_signal_handlers_are_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    train(TrainConfig(**TINY), SMALL, tmp_path / "m.npz", images=small_images(64), progress=False)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
