"""Bad inputs to the public API: each one is a `ValueError`/`TypeError` whose message names the argument (or the
array inside a checkpoint) at fault, raised before any work, and nothing is written or overwritten on the way.

Each case is `Case(id, call, arg)`: `call(t)` is run in a sandbox (`t.tmp` an empty folder that is also the
working directory, the cache directory set to `t.tmp/cache`, not yet created); `arg` is the name the message must
contain. A message from the tests' jaxtyping hook counts when it says which parameter it was checking. `setup(t)`,
when given, prepares input files before the sandbox is photographed.
"""
import os
import pickle
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from amtutorial import data_utils as du
from amtutorial import dense_storage as ds
from amtutorial import diffusion as df
from amtutorial import distributed_memory as dm

NAN, INF = float("nan"), float("inf")
KEY = jr.key(0)
# ±1 patterns for the binary memories; real-valued memories for the continuous ones
P = np.where(np.random.default_rng(0).standard_normal((6, 16)) > 0, 1, -1).astype(np.float32)
X0 = jnp.asarray(P[0])
XI = jr.normal(jr.key(1), (5, 4))
EM = df.EmpiricalMemory(XI)
DENSE = dm.DenseMemory(XI, 2.0)
FEATS = dm.random_features(4, 8, 2.0, key=KEY)
AM = ds.ExponentialAM(P, 5.0)


def toy_arrays(**changes):
    "A valid ET checkpoint (H=2, Y=3, D=4, M=5, P=6, N=7) with some arrays replaced."
    shapes = {"Wk": (2, 3, 4), "Wq": (2, 3, 4), "Xi": (4, 5), "Wenc": (6, 4), "Benc": (4,), "Wdec": (4, 6),
              "Bdec": (6,), "POS_embed": (7, 4), "CLS_token": (4,), "MASK_token": (4,), "LNORM_gamma": (),
              "LNORM_bias": (4,)}
    rng = np.random.default_rng(0)
    arrs = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    arrs.update(changes)
    return {k: v for k, v in arrs.items() if v is not None}


def with_nan(a, value=NAN):
    a = np.array(a, copy=True)
    a.flat[0] = value
    return a


@dataclass
class Case:
    id: str
    call: Callable  # call(t): the bad call
    arg: str  # the name the message must contain
    setup: Callable | None = None  # setup(t): files the call reads, made before the snapshot
    exc: tuple = (ValueError, TypeError)


def _npz(t, name, **arrays):
    np.savez(t.tmp / name, **arrays)
    return t.tmp / name


def _raw(t, name, data: bytes):
    (t.tmp / name).write_bytes(data)
    return t.tmp / name


def _zip(t, name, members: dict):
    with zipfile.ZipFile(t.tmp / name, "w") as z:
        for k, v in members.items(): z.writestr(k, v)
    return t.tmp / name


def _npy_header(shape, descr="<f4"):
    import io
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
    return f.getvalue()


CASES = [
    # --- data_utils: the cache directory --------------------------------------------------------------------------
    Case("cache-subdir-int", lambda t: du.get_cache_dir(5), "subdir"),
    Case("cache-subdir-parent", lambda t: du.get_cache_dir("../escape"), "subdir"),
    Case("cache-subdir-absolute", lambda t: du.get_cache_dir("/tmp/elsewhere"), "subdir"),
    Case("cache-subdir-empty", lambda t: du.get_cache_dir(""), "subdir"),
    Case("cache-contents-subdir-list", lambda t: du.cache_contents(["a"]), "subdir"),
    Case("cache-contents-subdir-parent", lambda t: du.cache_contents("../.."), "subdir"),
    # --- data_utils: downloads ------------------------------------------------------------------------------------
    Case("fetch-url-int", lambda t: du.fetch_file(123, "f.txt", None), "url"),
    Case("fetch-url-file-scheme", lambda t: du.fetch_file("file:///etc/passwd", "f.txt", None), "url"),
    Case("fetch-url-empty", lambda t: du.fetch_file("", "f.txt", None), "url"),
    Case("fetch-fname-folder", lambda t: du.fetch_file("http://127.0.0.1:9/f", "a/b.txt", None), "fname"),
    Case("fetch-fname-empty", lambda t: du.fetch_file("http://127.0.0.1:9/f", "", None), "fname"),
    Case("fetch-fname-none", lambda t: du.fetch_file("http://127.0.0.1:9/f", None, None), "fname"),
    Case("fetch-hash-short", lambda t: du.fetch_file("http://127.0.0.1:9/f", "f", "abc"), "known_hash"),
    Case("fetch-hash-not-hex", lambda t: du.fetch_file("http://127.0.0.1:9/f", "f", "sha256:" + "z" * 64), "known_hash"),
    Case("fetch-hash-int", lambda t: du.fetch_file("http://127.0.0.1:9/f", "f", 123), "known_hash"),
    Case("fetch-subdir-parent", lambda t: du.fetch_file("http://127.0.0.1:9/f", "f", None, subdir=".."), "subdir"),
    Case("et-imgs-base-url-none", lambda t: du.get_et_imgs(None), "base_url"),
    Case("et-imgs-base-url-path", lambda t: du.get_et_imgs("/no/such/folder"), "base_url"),
    Case("et-ckpt-url-not-url", lambda t: du.get_et_checkpoint("et_ckpt.npz"), "url"),
    # --- data_utils: Fashion-MNIST ----------------------------------------------------------------------------------
    Case("fmnist-split-unknown", lambda t: du.load_fashion_mnist("validation"), "split"),
    Case("fmnist-split-none", lambda t: du.load_fashion_mnist(None), "split"),
    Case("fmnist-split-list", lambda t: du.load_fashion_mnist(["train"]), "split"),
    Case("fmnist-base-url-none", lambda t: du.load_fashion_mnist("test", base_url=None), "base_url"),
    Case("idx-data-str", lambda t: du.parse_idx("not bytes", "images"), "data"),
    Case("idx-empty", lambda t: du.parse_idx(b"", "images"), "images"),
    Case("idx-bad-magic", lambda t: du.parse_idx(bytes([0, 0, 9, 1, 0, 0, 0, 1, 7]), "labels"), "labels"),
    Case("idx-truncated", lambda t: du.parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1]), "labels"), "labels"),
    Case("sample-n-zero", lambda t: du.make_fashion_mnist_sample(0, t.tmp / "s.npz"), "n"),
    Case("sample-n-negative", lambda t: du.make_fashion_mnist_sample(-5, t.tmp / "s.npz"), "n"),
    Case("sample-n-too-many", lambda t: du.make_fashion_mnist_sample(10_001, t.tmp / "s.npz"), "n"),
    Case("sample-n-float", lambda t: du.make_fashion_mnist_sample(2.5, t.tmp / "s.npz"), "n"),
    Case("sample-n-bool", lambda t: du.make_fashion_mnist_sample(True, t.tmp / "s.npz"), "n"),
    Case("sample-n-str", lambda t: du.make_fashion_mnist_sample("10", t.tmp / "s.npz"), "n"),
    Case("sample-path-int", lambda t: du.make_fashion_mnist_sample(10, 5), "path"),
    # --- data_utils: writing checkpoints ----------------------------------------------------------------------------
    Case("validate-arrays-list", lambda t: du.validate_et_arrays([1, 2]), "arrays"),
    Case("write-arrays-list", lambda t: du.write_et_checkpoint(t.tmp / "c.npz", [1, 2]), "arrays"),
    Case("write-nan", lambda t: du.write_et_checkpoint(t.tmp / "c.npz", toy_arrays(Wk=with_nan(toy_arrays()["Wk"]))), "Wk"),
    Case("write-inf", lambda t: du.write_et_checkpoint(t.tmp / "c.npz", toy_arrays(Xi=with_nan(toy_arrays()["Xi"], INF))), "Xi"),
    Case("write-int-dtype", lambda t: du.write_et_checkpoint(t.tmp / "c.npz", toy_arrays(Benc=np.arange(4))), "Benc"),
    Case("write-missing-key", lambda t: du.write_et_checkpoint(t.tmp / "c.npz", toy_arrays(MASK_token=None)), "MASK_token"),
    Case("write-extra-key", lambda t: du.write_et_checkpoint(t.tmp / "c.npz", toy_arrays(extra=np.zeros(1))), "extra"),
    Case("write-xi-transposed", lambda t: du.write_et_checkpoint(t.tmp / "c.npz", toy_arrays(Xi=np.zeros((5, 4), np.float32))), "Xi"),
    Case("write-empty-token", lambda t: du.write_et_checkpoint(t.tmp / "c.npz", toy_arrays(CLS_token=np.zeros(0, np.float32))), "CLS_token"),
    Case("write-gamma-not-scalar", lambda t: du.write_et_checkpoint(t.tmp / "c.npz", toy_arrays(LNORM_gamma=np.ones(4, np.float32))), "LNORM_gamma"),
    Case("write-config-list", lambda t: du.write_et_checkpoint(t.tmp / "c.npz", toy_arrays(), [1, 2]), "config"),
    Case("write-config-set", lambda t: du.write_et_checkpoint(t.tmp / "c.npz", toy_arrays(), {"a": {1, 2}}), "config"),
    Case("write-config-nan", lambda t: du.write_et_checkpoint(t.tmp / "c.npz", toy_arrays(), {"alpha": NAN}), "config"),
    Case("write-path-none", lambda t: du.write_et_checkpoint(None, toy_arrays()), "path"),
    Case("write-path-empty", lambda t: du.write_et_checkpoint("", toy_arrays()), "path"),
    Case("write-path-directory", lambda t: du.write_et_checkpoint(t.tmp, toy_arrays()), "path"),
    # an existing file at the destination is left as it was (the snapshot compares sizes and modification times)
    Case("write-over-existing-nan", lambda t: du.write_et_checkpoint(t.inp, toy_arrays(Wq=with_nan(toy_arrays()["Wq"]))),
         "Wq", setup=lambda t: _raw(t, "precious.npz", b"results of a week of training")),
    Case("write-over-existing-config", lambda t: du.write_et_checkpoint(t.inp, toy_arrays(), {"steps": {1}}), "config",
         setup=lambda t: _npz(t, "precious.npz", **toy_arrays())),
    Case("sample-over-existing-n", lambda t: du.make_fashion_mnist_sample(0, t.inp), "n",
         setup=lambda t: _raw(t, "sample.npz", b"keep me")),
    Case("savez-path-float", lambda t: du.atomic_savez(3.5, a=np.zeros(2)), "path"),
    Case("savez-path-bytes", lambda t: du.atomic_savez(b"x.npz", a=np.zeros(2)), "path"),
    Case("savez-path-directory", lambda t: du.atomic_savez(t.tmp, a=np.zeros(2)), "path"),
    # --- data_utils: reading checkpoints ----------------------------------------------------------------------------
    Case("read-path-none", lambda t: du.read_et_checkpoint(None), "path"),
    Case("read-path-bytes", lambda t: du.read_et_checkpoint(b"c.npz"), "path"),
    Case("read-path-int", lambda t: du.read_et_checkpoint(7), "path"),
    Case("read-max-bytes-zero", lambda t: du.read_et_checkpoint(t.inp, max_bytes=0), "max_bytes",
         setup=lambda t: _npz(t, "ok.npz", **toy_arrays())),
    Case("read-max-bytes-negative", lambda t: du.read_et_checkpoint(t.inp, max_bytes=-1), "max_bytes",
         setup=lambda t: _npz(t, "ok.npz", **toy_arrays())),
    Case("read-max-bytes-float", lambda t: du.read_et_checkpoint(t.inp, max_bytes=1.5e9), "max_bytes",
         setup=lambda t: _npz(t, "ok.npz", **toy_arrays())),
    Case("read-max-bytes-bool", lambda t: du.read_et_checkpoint(t.inp, max_bytes=True), "max_bytes",
         setup=lambda t: _npz(t, "ok.npz", **toy_arrays())),
    Case("read-text-file", lambda t: du.read_et_checkpoint(t.inp), "not an npz checkpoint",
         setup=lambda t: _raw(t, "notes.npz", b"step,loss\n1,0.5\n")),
    Case("read-pickle", lambda t: du.read_et_checkpoint(t.inp), "not an npz checkpoint",
         setup=lambda t: _raw(t, "p.npz", pickle.dumps({"Wk": [1.0, 2.0]}))),
    Case("read-single-npy", lambda t: du.read_et_checkpoint(t.inp), "single .npy array",
         setup=lambda t: _raw(t, "a.npz", _npy_header((2,)) + bytes(8))),
    Case("read-empty-file", lambda t: du.read_et_checkpoint(t.inp), "not an npz checkpoint",
         setup=lambda t: _raw(t, "e.npz", b"")),
    Case("read-zip-of-text", lambda t: du.read_et_checkpoint(t.inp), "not .npy arrays",
         setup=lambda t: _zip(t, "z.npz", {"readme.txt": "hello"})),
    Case("read-header-lies", lambda t: du.read_et_checkpoint(t.inp), "Wk.npy claims shape",
         setup=lambda t: _zip(t, "l.npz", {"Wk.npy": _npy_header((2**30,)) + bytes(64)})),
    Case("read-header-overflows", lambda t: du.read_et_checkpoint(t.inp), "Wq.npy claims shape",
         setup=lambda t: _zip(t, "v.npz", {"Wq.npy": _npy_header((2**62, 4))})),  # 2**66 bytes: 0 in int64
    Case("read-object-array", lambda t: du.read_et_checkpoint(t.inp), "pickled Python objects",
         setup=lambda t: _npz(t, "o.npz", **toy_arrays(Benc=np.array([object()] * 4, dtype=object)))),
    Case("read-nan", lambda t: du.read_et_checkpoint(t.inp), "POS_embed",
         setup=lambda t: _npz(t, "n.npz", **toy_arrays(POS_embed=with_nan(toy_arrays()["POS_embed"])))),
    Case("read-inf", lambda t: du.read_et_checkpoint(t.inp), "Wdec",
         setup=lambda t: _npz(t, "i.npz", **toy_arrays(Wdec=with_nan(toy_arrays()["Wdec"], -INF)))),
    Case("read-truncated", lambda t: du.read_et_checkpoint(t.inp), "not an npz checkpoint",
         setup=lambda t: _raw(t, "t.npz", _npz(t, "full.npz", **toy_arrays()).read_bytes()[:300])),
    Case("read-config-not-json", lambda t: du.read_et_checkpoint(t.inp), "config",
         setup=lambda t: _npz(t, "j.npz", config=np.array("{nope"), **toy_arrays())),
    Case("read-npz-what", lambda t: du.read_npz(t.inp, what="a training state"), "is not a training state",
         setup=lambda t: _raw(t, "s.npz", b"garbage")),
    # --- dense_storage ----------------------------------------------------------------------------------------------
    Case("patterns-empty", lambda t: ds.check_patterns(np.zeros((0, 16))), "patterns"),
    Case("patterns-1d", lambda t: ds.check_patterns(np.ones(16)), "patterns"),
    Case("patterns-not-binary", lambda t: ds.check_patterns(np.full((2, 4), 0.5)), "patterns"),
    Case("patterns-nan", lambda t: ds.check_patterns(with_nan(P)), "patterns"),
    Case("patterns-strings", lambda t: ds.check_patterns(np.array([["a", "b"]])), "patterns"),
    Case("am-beta-inf", lambda t: ds.ExponentialAM(P, INF), "beta"),
    Case("am-beta-nan", lambda t: ds.ExponentialAM(P, NAN), "beta"),
    Case("am-beta-zero", lambda t: ds.ExponentialAM(P, 0.0), "beta"),
    Case("am-beta-negative", lambda t: ds.ExponentialAM(P, -1.0), "beta"),
    Case("am-beta-str", lambda t: ds.ExponentialAM(P, "20"), "beta"),
    Case("poly-n-one", lambda t: ds.PolynomialAM(P, 1), "n"),
    Case("poly-n-float", lambda t: ds.PolynomialAM(P, 2.5), "n"),
    Case("poly-n-bool", lambda t: ds.PolynomialAM(P, True), "n"),
    Case("recall-x-wrong-length", lambda t: AM.recall(jnp.ones(15), key=KEY), "x"),
    Case("recall-x-not-binary", lambda t: AM.recall(jnp.zeros(16), key=KEY), "x"),
    Case("recall-x-batch", lambda t: AM.recall(jnp.asarray(P), key=KEY), "x"),
    Case("recall-key-int", lambda t: AM.recall(X0, key=0), "key"),
    Case("recall-max-sweeps-zero", lambda t: AM.recall(X0, key=KEY, max_sweeps=0), "max_sweeps"),
    Case("recall-max-sweeps-float", lambda t: AM.recall(X0, key=KEY, max_sweeps=2.5), "max_sweeps"),
    Case("recall-batch-1d", lambda t: AM.recall_batch(X0, key=KEY), "X"),
    Case("recall-sync-max-steps-negative", lambda t: AM.recall_sync(X0, max_steps=-1), "max_steps"),
    Case("trajectory-sweeps-zero", lambda t: AM.recall_trajectory(X0, key=KEY, sweeps=0), "sweeps"),
    Case("trajectory-every-not-dividing", lambda t: AM.recall_trajectory(X0, key=KEY, sweeps=1, every=7), "every"),
    Case("corrupt-batch", lambda t: ds.corrupt(jnp.asarray(P), 0.1, key=KEY), "x"),
    Case("corrupt-frac-above-one", lambda t: ds.corrupt(X0, 1.5, key=KEY), "frac"),
    Case("corrupt-frac-nan", lambda t: ds.corrupt(X0, NAN, key=KEY), "frac"),
    Case("corrupt-frac-str", lambda t: ds.corrupt(X0, "0.1", key=KEY), "frac"),
    Case("glyph-char-two", lambda t: ds.render_glyph("ab"), "char"),
    Case("glyph-size-tiny", lambda t: ds.render_glyph("a", size=2), "size"),
    Case("glyphs-min-distance", lambda t: ds.glyph_patterns(min_distance=0.7, progress=False), "min_distance"),
    Case("glyphs-ink-reversed", lambda t: ds.glyph_patterns(ink=(0.6, 0.1), progress=False), "ink"),
    Case("small-loops-negative", lambda t: ds.compile_small_loops(-1), "max_bytes"),
    Case("retrieval-curve-k-zero", lambda t: ds.retrieval_curve(ds.ExponentialAM, P, [0], key=KEY, progress=False), "K"),
    # --- diffusion --------------------------------------------------------------------------------------------------
    Case("circle-n-zero", lambda t: df.circle_points(0, key=KEY), "n"),
    Case("circle-n-bool", lambda t: df.circle_points(True, key=KEY), "n"),
    Case("circle-radius-inf", lambda t: df.circle_points(3, key=KEY, radius=INF), "radius"),
    Case("circle-radius-nan", lambda t: df.circle_points(3, key=KEY, radius=NAN), "radius"),
    Case("circle-radius-negative", lambda t: df.circle_points(3, key=KEY, radius=-1.0), "radius"),
    Case("empirical-xi-1d", lambda t: df.EmpiricalMemory(jnp.ones(4)), "Xi"),
    Case("empirical-xi-float16", lambda t: df.EmpiricalMemory(XI.astype(jnp.float16)), "Xi"),
    Case("empirical-xi-nan", lambda t: df.EmpiricalMemory(XI.at[0, 0].set(NAN)), "Xi"),
    Case("denoise-sigma-nan", lambda t: EM.denoise(XI[0], NAN), "sigma"),
    Case("denoise-sigma-inf", lambda t: EM.denoise(XI[0], INF), "sigma"),
    Case("denoise-sigma-negative", lambda t: EM.denoise(XI[0], -0.5), "sigma"),
    Case("denoise-sigma-zero", lambda t: EM.denoise(XI[0], 0.0), "sigma"),
    Case("denoise-sigma-str", lambda t: EM.denoise(XI[0], "0.5"), "sigma"),
    Case("denoise-x-float16", lambda t: EM.denoise(XI[0].astype(jnp.float16), 0.5), "x"),
    Case("denoise-x-wrong-shape", lambda t: EM.denoise(jnp.ones(3), 0.5), "x"),
    Case("denoise-x-batch", lambda t: EM.denoise(XI, 0.5), "x"),
    Case("energy-sigma-nan", lambda t: EM.energy(XI[0], NAN), "sigma"),
    Case("score-sigma-inf", lambda t: EM.score(XI[0], INF), "sigma"),
    Case("log-density-sigma-negative", lambda t: EM.log_density(XI[0], -1.0), "sigma"),
    Case("schedule-max-inf", lambda t: df.sigma_schedule(INF, 0.01, 5), "sigma_max"),
    Case("schedule-min-nan", lambda t: df.sigma_schedule(1.0, NAN, 5), "sigma_min"),
    Case("schedule-min-zero", lambda t: df.sigma_schedule(1.0, 0.0, 5), "sigma_min"),
    Case("schedule-steps-one", lambda t: df.sigma_schedule(1.0, 0.01, 1), "n_steps"),
    Case("schedule-steps-float", lambda t: df.sigma_schedule(1.0, 0.01, 2.5), "n_steps"),
    Case("sample-sigmas-inf", lambda t: df.sample(EM, XI[0], jnp.array([INF, 1.0, 0.0])), "sigmas"),
    Case("sample-sigmas-nan", lambda t: df.sample(EM, XI[0], jnp.array([1.0, NAN, 0.0])), "sigmas"),
    Case("sample-sigmas-increasing", lambda t: df.sample(EM, XI[0], jnp.array([0.1, 0.5, 0.0])), "sigmas"),
    Case("sample-sigmas-2d", lambda t: df.sample(EM, XI[0], jnp.ones((2, 2))), "sigmas"),
    Case("sample-x-float16", lambda t: df.sample(EM, XI[0].astype(jnp.float16), df.sigma_schedule(1.0, 0.01, 4)), "x"),
    Case("grid-n-zero", lambda t: df.energy_grid(df.EmpiricalMemory(XI[:, :2]).energy, 0.5, n=0), "n"),
    Case("grid-lim-negative", lambda t: df.energy_grid(df.EmpiricalMemory(XI[:, :2]).energy, 0.5, lim=-1.0), "lim"),
    Case("grid-sigma-nan", lambda t: df.energy_grid(df.EmpiricalMemory(XI[:, :2]).energy, NAN), "sigma"),
    Case("config-sigma-min-nan", lambda t: df.DiffusionConfig(sigma_min=NAN), "sigma_min"),
    Case("config-sigma-max-inf", lambda t: df.DiffusionConfig(sigma_max=INF), "sigma_max"),
    Case("config-learning-rate-inf", lambda t: df.DiffusionConfig(learning_rate=INF), "learning_rate"),
    Case("config-learning-rate-negative", lambda t: df.DiffusionConfig(learning_rate=-1e-3), "learning_rate"),
    Case("config-width-zero", lambda t: df.DiffusionConfig(width=0), "width"),
    Case("config-steps-negative", lambda t: df.DiffusionConfig(steps=-1), "steps"),
    Case("config-x-scale-zero", lambda t: df.DiffusionConfig(x_scale=0.0), "x_scale"),
    Case("energy-net-dim-zero", lambda t: df.EnergyNet(0, df.DiffusionConfig.tiny(), key=KEY), "dim"),
    Case("energy-net-sigma-nan", lambda t: df.EnergyNet(2, df.DiffusionConfig.tiny(), key=KEY).denoise(jnp.zeros(2), NAN), "sigma"),
    Case("energy-net-x-float16", lambda t: df.EnergyNet(2, df.DiffusionConfig.tiny(), key=KEY).denoise(jnp.zeros(2, jnp.float16), 0.5), "x"),
    Case("train-data-nan", lambda t: df.train_energy_net(XI.at[1, 1].set(NAN), df.DiffusionConfig.tiny(), key=KEY, progress=False), "data"),
    Case("train-data-float16", lambda t: df.train_energy_net(XI.astype(jnp.float16), df.DiffusionConfig.tiny(), key=KEY, progress=False), "data"),
    Case("train-data-1d", lambda t: df.train_energy_net(XI[0], df.DiffusionConfig.tiny(), key=KEY, progress=False), "data"),
    Case("train-chunks-zero", lambda t: df.train_energy_net(XI, df.DiffusionConfig.tiny(), key=KEY, n_chunks=0, progress=False), "n_chunks"),
    Case("train-chunks-negative", lambda t: df.train_energy_net(XI, df.DiffusionConfig.tiny(), key=KEY, n_chunks=-3, progress=False), "n_chunks"),
    Case("nearest-points-1d", lambda t: df.nearest_distance(XI[0], XI), "points"),
    # --- distributed_memory -----------------------------------------------------------------------------------------
    Case("dense-beta-inf", lambda t: dm.DenseMemory(XI, INF), "beta"),
    Case("dense-beta-nan", lambda t: dm.DenseMemory(XI, NAN), "beta"),
    Case("dense-beta-zero", lambda t: dm.DenseMemory(XI, 0.0), "beta"),
    Case("dense-beta-str", lambda t: dm.DenseMemory(XI, "2"), "beta"),
    Case("dense-xi-float16", lambda t: dm.DenseMemory(XI.astype(jnp.float16), 2.0), "Xi"),
    Case("dense-xi-nan", lambda t: dm.DenseMemory(XI.at[2, 1].set(NAN), 2.0), "Xi"),
    Case("dense-xi-empty", lambda t: dm.DenseMemory(jnp.zeros((0, 4)), 2.0), "Xi"),
    Case("dense-energy-x-float16", lambda t: DENSE.energy(XI[0].astype(jnp.float16)), "x"),
    Case("dense-add-wrong-shape", lambda t: DENSE.add(jnp.ones(3)), "xi"),
    Case("features-dim-zero", lambda t: dm.random_features(0, 8, 2.0, key=KEY), "dim"),
    Case("features-dim-bool", lambda t: dm.random_features(True, 8, 2.0, key=KEY), "dim"),
    Case("features-n-freqs-zero", lambda t: dm.random_features(4, 0, 2.0, key=KEY), "n_freqs"),
    Case("features-beta-inf", lambda t: dm.random_features(4, 8, INF, key=KEY), "beta"),
    Case("features-beta-negative", lambda t: dm.random_features(4, 8, -2.0, key=KEY), "beta"),
    Case("distributed-chunk-zero", lambda t: dm.distributed_memory(XI, FEATS, chunk=0), "chunk"),
    Case("distributed-chunk-negative", lambda t: dm.distributed_memory(XI, FEATS, chunk=-1), "chunk"),
    Case("distributed-chunk-float", lambda t: dm.distributed_memory(XI, FEATS, chunk=2.5), "chunk"),
    Case("distributed-xi-wrong-dim", lambda t: dm.distributed_memory(jnp.ones((3, 5)), FEATS), "Xi"),
    Case("distributed-xi-float16", lambda t: dm.distributed_memory(XI.astype(jnp.float16), FEATS), "Xi"),
    Case("retrieve-steps-zero", lambda t: dm.retrieve(DENSE, XI[0], steps=0), "steps"),
    Case("retrieve-step-size-inf", lambda t: dm.retrieve(DENSE, XI[0], step_size=INF), "step_size"),
    Case("retrieve-step-size-nan", lambda t: dm.retrieve(DENSE, XI[0], step_size=NAN), "step_size"),
    Case("retrieve-step-size-negative", lambda t: dm.retrieve(DENSE, XI[0], step_size=-0.5), "step_size"),
    Case("retrieve-step-size-str", lambda t: dm.retrieve(DENSE, XI[0], step_size="0.5"), "step_size"),
    Case("retrieve-x-float16", lambda t: dm.retrieve(DENSE, XI[0].astype(jnp.float16)), "x"),
    Case("retrieve-x-wrong-shape", lambda t: dm.retrieve(DENSE, jnp.ones(3)), "x"),
    Case("unit-memories-n-zero", lambda t: dm.unit_memories(0, 4, key=KEY), "n"),
    Case("unit-memories-dim-zero", lambda t: dm.unit_memories(3, 0, key=KEY), "dim"),
    Case("time-repeats-zero", lambda t: dm.time_per_query(DENSE, XI, repeats=0), "repeats"),
    Case("time-queries-1d", lambda t: dm.time_per_query(DENSE, XI[0]), "queries"),
    Case("footprint-queries-wrong-dim", lambda t: dm.memory_footprint(DENSE, jnp.ones((2, 3))), "queries"),
    Case("errors-queries-wrong-dim", lambda t: dm.approximation_errors(DENSE, dm.distributed_memory(XI, FEATS),
                                                                      jnp.ones((2, 3))), "queries"),
]


def _tree(root: Path) -> dict:
    "Every path under `root` with its size and modification time (None if `root` does not exist)."
    if not root.exists(): return {}
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def _names(msg: str, arg: str, exc: BaseException) -> bool:
    "Does the error message name `arg`? A jaxtyping hook error must name it as the parameter it was checking."
    if "Type-check error" in msg:
        return f"parameter '{arg}'" in msg
    return re.search(rf"(?<![\w]){arg}(?![\w])" if re.fullmatch(r"\w+", arg) else arg, msg) is not None


# --- the Energy Transformer block, the image model and the metrics ---------------------------------------------
from amtutorial import energy_transformer as etb  # noqa: E402
from amtutorial import image_et as ie  # noqa: E402
from amtutorial import metrics as mt  # noqa: E402

ET = etb.rand_init(KEY, etb.ETConfig.tiny())
ET_X = jr.normal(KEY, (5, 16))
IMG_CFG = ie.ImageETConfig((8, 8, 1), 4, etb.ETConfig.tiny(), (0.5,), (0.25,), nsteps=2)
IM = etb.rand_init(KEY, IMG_CFG)
IMG, MASK = jnp.zeros((8, 8, 1)), jnp.array([True, False, False, True])
PIX, PMASKS = np.full((2, 8, 8), 0.5, np.float32), np.array([[True, False, False, True]] * 2)
HID = np.ones((2, 4, 4), bool)

CASES += [
    Case("descend-x-list", lambda t: ET.descend([[0.0] * 16], 2, 0.1), "x"),
    Case("descend-x-wrong-D", lambda t: ET.descend(jnp.zeros((5, 8)), 2, 0.1), "x"),
    Case("descend-x-int", lambda t: ET.descend(np.zeros((5, 16), np.int32), 2, 0.1), "x"),
    Case("descend-nsteps-negative", lambda t: ET.descend(ET_X, -1, 0.1), "nsteps"),
    Case("descend-nsteps-float", lambda t: ET.descend(ET_X, 2.5, 0.1), "nsteps"),
    Case("descend-nsteps-bool", lambda t: ET.descend(ET_X, True, 0.1), "nsteps"),
    Case("descend-alpha-zero", lambda t: ET.descend(ET_X, 2, 0.0), "alpha"),
    Case("descend-alpha-nan", lambda t: ET.descend(ET_X, 2, NAN), "alpha"),
    Case("descend-alpha-inf", lambda t: ET.descend(ET_X, 2, INF), "alpha"),
    Case("descend-alpha-str", lambda t: ET.descend(ET_X, 2, "0.1"), "alpha"),
    Case("descend-safeguard-str", lambda t: ET.descend(ET_X, 2, 0.1, safeguard="yes"), "safeguard"),
    Case("descend-max-halvings-zero", lambda t: ET.descend(ET_X, 2, 0.1, safeguard=True, max_halvings=0), "max_halvings"),
    Case("descend-max-halvings-float", lambda t: ET.descend(ET_X, 2, 0.1, safeguard=True, max_halvings=1.5), "max_halvings"),
    Case("energy-one-token-exclude-self", lambda t: etb.rand_init(KEY, etb.ETConfig.tiny(exclude_self=True)).energy(jnp.ones((1, 16))), "x"),
    Case("step-bound-x-wrong-shape", lambda t: ET.step_size_bound(jnp.zeros((5, 3))), "x"),
    Case("etconfig-D-zero", lambda t: etb.ETConfig(D=0), "D"),
    Case("etconfig-H-float", lambda t: etb.ETConfig(H=2.5), "H"),
    Case("etconfig-beta-negative", lambda t: etb.ETConfig(beta=-1.0), "beta"),
    Case("etconfig-beta-inf", lambda t: etb.ETConfig(beta=INF), "beta"),
    Case("etconfig-eps-zero", lambda t: etb.ETConfig(eps=0.0), "eps"),
    Case("etconfig-exclude-self-int", lambda t: etb.ETConfig(exclude_self=1), "exclude_self"),
    Case("rand-init-dict", lambda t: etb.rand_init(KEY, {"D": 4}), "config"),
    Case("register-initialiser-not-class", lambda t: etb.register_initialiser(5, lambda k, c: None), "config_type"),
    Case("register-initialiser-not-callable", lambda t: etb.register_initialiser(dict, 5), "init"),
    Case("imageconfig-nsteps-negative", lambda t: IMG_CFG.replace(nsteps=-1), "nsteps"),
    Case("imageconfig-alpha-nan", lambda t: IMG_CFG.replace(alpha=NAN), "alpha"),
    Case("imageconfig-alpha-zero", lambda t: IMG_CFG.replace(alpha=0.0), "alpha"),
    Case("imageconfig-safeguard-str", lambda t: IMG_CFG.replace(safeguard="no"), "safeguard"),
    Case("imageconfig-std-zero", lambda t: IMG_CFG.replace(pixel_std=(0.0,)), "pixel_std"),
    Case("imageconfig-mean-nan", lambda t: IMG_CFG.replace(pixel_mean=(NAN,)), "pixel_mean"),
    Case("imageconfig-patch-does-not-divide", lambda t: IMG_CFG.replace(patch_size=3), "patch size"),
    Case("imageconfig-from-dict-junk", lambda t: ie.ImageETConfig.from_dict({"nonsense": 1}), "config"),
    Case("inpaint-image-wrong-shape", lambda t: IM.inpaint(IMG[:4], MASK), "image"),
    Case("inpaint-image-nan", lambda t: IM.inpaint(IMG.at[0, 0, 0].set(NAN), MASK), "image"),
    Case("inpaint-image-int", lambda t: IM.inpaint(IMG.astype(jnp.int32), MASK), "image"),
    Case("inpaint-image-float16", lambda t: IM.inpaint(IMG.astype(jnp.float16), MASK), "image"),
    Case("inpaint-mask-float", lambda t: IM.inpaint(IMG, MASK.astype(jnp.float32)), "mask"),
    Case("inpaint-mask-wrong-length", lambda t: IM.inpaint(IMG, MASK[:3]), "mask"),
    Case("inpaint-nsteps-negative", lambda t: IM.inpaint(IMG, MASK, nsteps=-1), "nsteps"),
    Case("inpaint-alpha-negative", lambda t: IM.inpaint(IMG, MASK, alpha=-1.0), "alpha"),
    Case("trajectory-safeguard-int", lambda t: IM.inpaint_trajectory(IMG, MASK, safeguard=2), "safeguard"),
    Case("with-settings-alpha-inf", lambda t: IM.with_settings(alpha=INF), "alpha"),
    Case("pixel-mask-wrong-length", lambda t: IMG_CFG.patcher.pixel_mask(jnp.zeros(3, bool)), "mask"),
    Case("random-patch-mask-too-many", lambda t: ie.random_patch_mask(4, 5, key=KEY), "n_hidden"),
    Case("random-masks-n-zero", lambda t: ie.random_masks(KEY, 0, IMG_CFG), "n"),
    Case("reference-masks-frac", lambda t: ie.reference_masks(3, IMG_CFG, hidden_frac=1.5), "hidden_frac"),
    Case("reconstruct-empty", lambda t: ie.reconstruct(IM, PIX[:0], PMASKS[:0]), "pixels"),
    Case("reconstruct-nan", lambda t: ie.reconstruct(IM, with_nan(PIX), PMASKS), "pixels"),
    Case("reconstruct-uint8", lambda t: ie.reconstruct(IM, (PIX * 255).astype(np.uint8), PMASKS), "pixels"),
    Case("reconstruct-masks-shape", lambda t: ie.reconstruct(IM, PIX, PMASKS[:, :3]), "masks"),
    Case("reconstruct-batch-zero", lambda t: ie.reconstruct(IM, PIX, PMASKS, batch=0), "batch"),
    Case("reconstruct-model-block", lambda t: ie.reconstruct(ET, PIX, PMASKS), "model"),
    Case("save-et-block", lambda t: ie.save_et(ET, t.tmp / "m.npz"), "model"),
    Case("retrieval-video-name", lambda t: ie.retrieval_video("bad name", IM, IMG[None], MASK[None], progress=False), "name"),
    Case("retrieval-video-hold", lambda t: ie.retrieval_video("v", IM, IMG[None], MASK[None], hold=-1, progress=False), "hold"),
    Case("retrieval-video-empty", lambda t: ie.retrieval_video("v", IM, IMG[None][:0], MASK[None][:0], progress=False), "images"),
    Case("psnr-shape-mismatch", lambda t: mt.masked_psnr(PIX, PIX[:1], np.ones_like(PIX, bool)), "pred"),
    Case("psnr-hidden-float", lambda t: mt.masked_psnr(PIX, PIX, np.ones_like(PIX)), "hidden"),
    Case("psnr-hidden-none", lambda t: mt.masked_psnr(PIX, PIX, np.zeros_like(PIX, bool)), "hidden"),
    Case("psnr-pred-nan", lambda t: mt.psnr(with_nan(PIX), PIX), "pred"),
    Case("psnr-empty", lambda t: mt.psnr(PIX[:0], PIX[:0]), "pred"),
    Case("ssim-colour", lambda t: mt.masked_ssim(np.zeros((2, 4, 4, 3)), np.zeros((2, 4, 4, 3)), np.ones((2, 4, 4, 3), bool)), "grey"),
    Case("mean-interval-one", lambda t: mt.mean_interval([1.0]), "values"),
    Case("mean-interval-nan", lambda t: mt.mean_interval([1.0, NAN]), "values"),
    Case("mean-fill-hidden-int", lambda t: mt.mean_fill(PIX[:, :4, :4], HID.astype(int)), "hidden"),
    Case("nn-fill-memory-shape", lambda t: mt.nearest_neighbour_fill(PIX[:, :4, :4], HID, np.zeros((3, 4, 5))), "memory"),
    Case("nn-fill-memory-empty", lambda t: mt.nearest_neighbour_fill(PIX[:, :4, :4], HID, np.zeros((0, 4, 4))), "memory"),
    Case("nn-fill-chunk-zero", lambda t: mt.nearest_neighbour_fill(PIX[:, :4, :4], HID, PIX[:, :4, :4], chunk=0), "chunk"),
]


# --- training's output path and the command line: refused before any work, nothing written or overwritten ---------
from amtutorial import cli  # noqa: E402
from amtutorial import training as tr  # noqa: E402

TRAIN_CFG = tr.TrainConfig.tiny()
TRAIN_IMGS = np.zeros((64, 8, 8), np.uint8)


def _cli(argv):
    "Run the command line; a user error (exit status 2, one line on stderr) is raised as that line."
    import contextlib, io
    with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(argv)
    lines = err.getvalue().strip().splitlines()
    if rc == 2 and len(lines) == 1 and lines[0].startswith("amtutorial: error: "): raise ValueError(lines[0])
    raise AssertionError(f"exit status {rc}, stderr {err.getvalue()!r}")


def _train(t, out, **kw):
    return tr.train(TRAIN_CFG, IMG_CFG, out, images=TRAIN_IMGS, progress=False, **kw)


def _run_files(t, a="a.npz", b="b.npz"):
    "Two finished tiny training runs in t.tmp (their files are the inputs of the case)."
    for name in (a, b): tr.train(TRAIN_CFG, IMG_CFG, t.tmp / name, images=TRAIN_IMGS, progress=False, stop_after=1 + (name == b))
    return t.tmp / a


CASES += [
    Case("train-out-csv", lambda t: _train(t, t.inp), "out", setup=lambda t: _raw(t, "results.csv", b"step,loss\n1,0.5\n")),
    Case("train-out-csv-resume", lambda t: _train(t, t.inp, resume=True), "out", setup=lambda t: _raw(t, "results.csv", b"a,b\n")),
    Case("train-out-device", lambda t: _train(t, "/dev/null"), "out"),
    Case("train-out-folder", lambda t: _train(t, t.tmp), "out"),
    Case("train-out-under-a-file", lambda t: _train(t, t.inp / "m.npz"), "out", setup=lambda t: _raw(t, "notes.txt", b"x")),
    Case("train-out-checkpoint-without-state", lambda t: _train(t, t.inp, resume=True), "out",
         setup=lambda t: du.write_et_checkpoint(t.tmp / "paper.npz", toy_arrays())),
    Case("train-out-orphan-state", lambda t: _train(t, t.tmp / "m.npz", resume=True), "out",
         setup=lambda t: _npz(t, "m.state.npz", opt_0=np.zeros(3))),
    Case("train-out-existing-run-without-resume", lambda t: _train(t, t.inp), "resume=True", setup=_run_files),
    Case("train-out-mismatched-pair", lambda t: _train(t, t.inp, resume=True), "do not belong together",
         setup=lambda t: (_run_files(t), (t.tmp / "a.state.npz").write_bytes((t.tmp / "b.state.npz").read_bytes()))[0]),
    Case("train-resume-str", lambda t: _train(t, t.tmp / "m.npz", resume="yes"), "resume"),
    Case("train-checkpoint-every-zero", lambda t: _train(t, t.tmp / "m.npz", checkpoint_every=0), "checkpoint_every"),
    Case("train-stop-after-negative", lambda t: _train(t, t.tmp / "m.npz", stop_after=-2), "stop_after"),
    Case("train-cfg-dict", lambda t: tr.train({"steps": 2}, IMG_CFG, t.tmp / "m.npz", images=TRAIN_IMGS), "cfg"),
    Case("train-images-float", lambda t: tr.train(TRAIN_CFG, IMG_CFG, t.tmp / "m.npz", images=TRAIN_IMGS.astype(np.float32),
                                                  progress=False), "images"),
    Case("cli-train-out-csv", lambda t: _cli(["train", "--steps", "2", "--out", str(t.inp), "-q"]), "refusing to overwrite",
         setup=lambda t: _raw(t, "results.csv", b"step,loss\n")),
    Case("cli-train-steps-zero", lambda t: _cli(["train", "--steps", "0", "--out", "m.npz", "-q"]), "steps"),
    Case("cli-train-checkpoint-every-zero", lambda t: _cli(["train", "--checkpoint-every", "0", "--out", "m.npz", "-q"]),
         "checkpoint_every"),
    Case("cli-inpaint-n-zero", lambda t: _cli(["inpaint", "--n", "0", "-q"]), "--n"),
    Case("cli-inpaint-n-too-many", lambda t: _cli(["inpaint", "--n", "501", "-q"]), "--n 501 asks for more pictures"),
    Case("cli-inpaint-out-webm", lambda t: _cli(["inpaint", "--out", "v.webm", "-q"]), "--out"),
    Case("cli-inpaint-out-no-suffix", lambda t: _cli(["inpaint", "--out", "video", "-q"]), "--out"),
    Case("cli-inpaint-out-folder", lambda t: _cli(["inpaint", "--out", str(t.inp), "-q"]), "--out",
         setup=lambda t: (t.tmp / "v.mp4").mkdir() or t.tmp / "v.mp4"),
    Case("cli-inpaint-out-under-a-file", lambda t: _cli(["inpaint", "--out", str(t.inp / "v.mp4"), "-q"]), "--out",
         setup=lambda t: _raw(t, "notes.txt", b"x")),
    Case("cli-inpaint-model-missing", lambda t: _cli(["inpaint", "--model", "nope.npz", "-q"]), "--model"),
    Case("cli-inpaint-model-csv", lambda t: _cli(["inpaint", "--model", str(t.inp), "-q"]), "--model",
         setup=lambda t: _raw(t, "m.csv", b"a,b\n")),
    Case("cli-inpaint-model-truncated", lambda t: _cli(["inpaint", "--model", str(t.inp), "-q"]), "--model",
         setup=lambda t: _raw(t, "m.npz", du.write_et_checkpoint(t.tmp / "full.npz", toy_arrays()).read_bytes()[:300])),
    Case("cli-inpaint-model-pickle", lambda t: _cli(["inpaint", "--model", str(t.inp), "-q"]), "--model",
         setup=lambda t: _raw(t, "m.npz", pickle.dumps({"Wk": 1}))),
    Case("cli-inpaint-images-missing", lambda t: _cli(["inpaint", "--images", "nope.npz", "-q"]), "--images"),
    Case("cli-inpaint-images-no-array", lambda t: _cli(["inpaint", "--images", str(t.inp), "-q"]), "--images",
         setup=lambda t: _npz(t, "x.npz", pictures=np.zeros((2, 28, 28), np.uint8))),
    Case("cli-inpaint-images-wrong-size", lambda t: _cli(["inpaint", "--images", str(t.inp), "-q"]), "--images",
         setup=lambda t: _npz(t, "x.npz", images=np.zeros((2, 32, 32), np.uint8))),
    Case("cli-inpaint-images-out-of-range", lambda t: _cli(["inpaint", "--images", str(t.inp), "-q"]), "--images",
         setup=lambda t: _npz(t, "x.npz", images=np.full((2, 28, 28), 255.0, np.float32))),
    Case("cli-inpaint-images-int64", lambda t: _cli(["inpaint", "--images", str(t.inp), "-q"]), "--images",
         setup=lambda t: _npz(t, "x.npz", images=np.zeros((2, 28, 28), np.int64))),
    Case("cli-inpaint-images-txt", lambda t: _cli(["inpaint", "--images", str(t.inp), "-q"]), "--images",
         setup=lambda t: _raw(t, "x.txt", b"hello")),
    Case("cli-inpaint-images-fake-png", lambda t: _cli(["inpaint", "--images", str(t.inp), "-q"]), "--images",
         setup=lambda t: _raw(t, "x.png", b"not a png")),
    Case("cli-inpaint-nsteps-zero", lambda t: _cli(["inpaint", "--nsteps", "0", "-q"]), "--nsteps"),
    Case("cli-inpaint-fps-nan", lambda t: _cli(["inpaint", "--fps", "nan", "-q"]), "--fps"),
    Case("cli-inpaint-alpha-zero", lambda t: _cli(["inpaint", "--alpha", "0", "-q"]), "alpha"),
]


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("AMTUTORIAL_CACHE_DIR", str(work / "cache"))
    return SimpleNamespace(tmp=work, inp=None)


def test_enough_cases():
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, sandbox):
    t = sandbox
    if case.setup is not None: t.inp = case.setup(t)
    watched = [t.tmp, du.ASSETS]  # (the repository's cache/ is not watched: the sandbox moved the cache away)
    before = [_tree(r) for r in watched]
    flags = os.environ.get("XLA_FLAGS")
    with pytest.raises(case.exc) as info:
        case.call(t)
    msg = str(info.value)
    assert _names(msg, case.arg, info.value), f"{case.id}: the message does not name {case.arg!r}: {msg[:500]}"
    assert [_tree(r) for r in watched] == before, f"{case.id}: something was written"
    assert os.environ.get("XLA_FLAGS") == flags, f"{case.id}: XLA_FLAGS changed"


# --- a zip bomb: a small file that would inflate to 1 GiB ------------------------------------------------------------
@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    "A ~1 MB .npz whose one array (Wk, 2**28 float32 zeros) takes 1 GiB once decompressed."
    path = tmp_path_factory.mktemp("bomb") / "bomb.npz"
    n = 2**28
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("Wk.npy", "w", force_zip64=True) as f:
            f.write(_npy_header((n,)))
            chunk = bytes(2**24)
            for _ in range(n * 4 // len(chunk)): f.write(chunk)
    return path


def test_bomb_refused_before_reading(bomb, monkeypatch):
    assert bomb.stat().st_size < 2 * 2**20
    def no_load(*a, **k): raise AssertionError("np.load was called on a bomb")
    monkeypatch.setattr(np, "load", no_load)
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: no_load())
    with pytest.raises(du.CheckpointError, match=r"would take 1,024.0 MiB once decompressed .*over the limit of 512.0 MiB"):
        du.read_et_checkpoint(bomb)
    with pytest.raises(du.CheckpointError, match=r"over the limit"):
        du.read_npz(bomb)


def test_max_bytes_lets_a_trusted_large_file_through(tmp_path):
    p = du.write_et_checkpoint(tmp_path / "ok.npz", toy_arrays())
    size = sum(i.file_size for i in zipfile.ZipFile(p).infolist())
    assert du.read_et_checkpoint(p, max_bytes=size).dims["D"] == 4
    with pytest.raises(du.CheckpointError, match="over the limit"):
        du.read_et_checkpoint(p, max_bytes=size - 1)


def test_bad_inputs_without_the_type_hook(tmp_path):
    """The same cases as a user meets them: in a fresh interpreter without the tests' jaxtyping/beartype hook, so
    the package's own checks (not the hook) must catch every one."""
    script = f"""
import os, sys, tempfile
from pathlib import Path
from types import SimpleNamespace
sys.path.insert(0, {str(Path(__file__).parent)!r})
import test_bad_inputs as T
failed = []
for c in T.CASES:
    d = Path(tempfile.mkdtemp(dir={str(tmp_path)!r})); os.chdir(d); os.environ["AMTUTORIAL_CACHE_DIR"] = str(d / "cache")
    t = SimpleNamespace(tmp=d, inp=None)
    if c.setup: t.inp = c.setup(t)
    before = T._tree(d)
    try: c.call(t); failed.append(f"{{c.id}}: no error")
    except (ValueError, TypeError) as e:
        if "Type-check error" in str(e): failed.append(f"{{c.id}}: the hook is active")
        elif not T._names(str(e), c.arg, e): failed.append(f"{{c.id}}: {{c.arg!r}} not named: {{str(e)[:300]}}")
        elif T._tree(d) != before: failed.append(f"{{c.id}}: something was written")
    except Exception as e: failed.append(f"{{c.id}}: {{type(e).__name__}}: {{str(e)[:300]}}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-3000:]

