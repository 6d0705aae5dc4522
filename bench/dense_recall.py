"""Asynchronous recall: incremental overlaps (O(K) per bit update) against recomputing them (O(K·D)).

Both variants run the same jitted recall (`AssociativeMemory.recall`: a `lax.while_loop` over sweeps, each a
`lax.scan` over the bits in one random order) and make the same decisions; the only difference is how the
overlaps after a candidate flip are obtained: one row of the bit-major memories added to the kept overlaps, or a
K x D matrix-vector product with the candidate state.

Before JAX starts, the benchmark calls `compile_small_loops` (1 MiB): XLA on the CPU then compiles the scan of the
O(K) sweep into one function instead of running each of its operations as a runtime task. The scan of the full
recompute reads the 9.4 MB matrix every step and stays a runtime loop with its matrix-vector product, so the
reference is not slowed; the benchmark checks both with `loops_compiled_whole` and prints them.
`--xla-defaults` measures with XLA's default setting instead.

Timings are taken after a warm-up call, with `block_until_ready`, as the best of several interleaved repeats (the
machines are shared and noisy), and the ratio is of times measured in this run.

    python bench/dense_recall.py                  # K = 1024 glyph memories, D = 48*48 = 2304
    python bench/dense_recall.py --xla-defaults   # the same without compile_small_loops
"""
import argparse, os, time

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange


from amtutorial.dense_storage import (ClassicalHopfield, ExponentialAM, PolynomialAM,
                                      compile_small_loops, corrupt, glyph_patterns, loops_compiled_whole)


def best_time(fn, repeats):
    "Best wall time of `fn()` (already warmed up) over `repeats` calls."
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); jax.block_until_ready(fn()); ts.append(time.perf_counter() - t)
    return min(ts)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--K", type=int, default=1024, help="number of memories")
    p.add_argument("--size", type=int, default=48, help="glyph size: D = size**2")
    p.add_argument("--sweeps", type=int, default=2, help="sweeps over all D bits per recall")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--xla-defaults", action="store_true", help="leave XLA's small-loop setting at its default")
    a = p.parse_args()
    if not a.xla_defaults: compile_small_loops()   # before JAX computes anything
    g = glyph_patterns(a.size, progress=False)
    X = rearrange(g.images, "N H W -> N (H W)").astype(np.float32)
    if len(X) < a.K: raise SystemExit(f"only {len(X)} distinct glyphs at {a.size}px, fewer than K = {a.K}")
    X = X[np.random.default_rng(0).permutation(len(X))[:a.K]]
    K, D = X.shape
    key = jax.random.key(0)
    probe = corrupt(jnp.asarray(X[0]), 0.2, key=jax.random.key(1))
    print(f"K = {K} memories, D = {D} bits, {a.sweeps} sweeps = {a.sweeps*D} bit updates per recall, "
          f"{jax.devices()[0].platform}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    models = {"classical": ClassicalHopfield(X), "polynomial n=3": PolynomialAM(X, 3),
              "exponential beta=20": ExponentialAM(X, 20.0)}
    ratios = {}
    for name, model in models.items():
        run = {inc: (lambda inc=inc: model.recall(probe, key=key, max_sweeps=a.sweeps, incremental=inc))
               for inc in (True, False)}
        out = {inc: run[inc]() for inc in run}  # warm-up (compiles)
        assert bool(jnp.all(out[True].x == out[False].x)) and float(out[True].energy) == float(out[False].energy), \
            f"{name}: incremental and full recall disagree"
        n_updates = int(out[True].sweeps)*D
        whole = {inc: loops_compiled_whole(
            lambda x, inc=inc: model.recall(x, key=key, max_sweeps=a.sweeps, incremental=inc), probe)
                 for inc in (True, False)}
        if not a.xla_defaults:  # the O(K) scan is compiled whole, the reference's scan is not
            assert whole[True] == whole[False] + 1, f"{name}: loops compiled whole {whole}"
        t = {True: [], False: []}
        for _ in range(a.repeats):  # interleave the two variants so that noise hits both alike
            for inc in (True, False): t[inc].append(best_time(run[inc], 1))
        ti, tf = min(t[True]), min(t[False])
        ratios[name] = tf/ti
        print(f"{name:22s} incremental {ti/n_updates*1e6:7.2f} us/update   full recompute {tf/n_updates*1e6:8.1f} "
              f"us/update   ratio {tf/ti:6.1f}x   (identical result, {int(out[True].sweeps)} sweeps; loops compiled whole: "
              f"{whole[True]} / {whole[False]})")
    print(f"min ratio {min(ratios.values()):.1f}x  (bar >= 50x, goal >= 100x)")


if __name__ == "__main__":
    main()
