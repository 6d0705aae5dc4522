"""Energy Transformer inference at the paper's ImageNet size, against two references measured in the same run.

    python bench/et_inference.py [--batch 8] [--steps 12] [--rounds 5]

What is timed (random weights from `rand_init(ImageETConfig.imagenet())`: N = 197 tokens, D = 768, H = 12, Y = 64,
M = 3072; a batch of token states through `jax.vmap`; float32 on the CPU):

1. ours: `model.descend(x, nsteps, alpha)` (closed-form update, one `lax.scan`), vmapped over the batch and jitted;
1b. ours, safeguarded: `model.descend(x, nsteps, alpha, safeguard=True)`: the same, with each step checked and halved
   while it would raise the energy (here every first try is accepted, so the ratio to 1. is the safeguard's overhead);
2. reference: the same descent written the plain way, `jax.value_and_grad` of `energy_g` inside a `lax.scan`;
3. roofline: one 2048 x 2048 float32 matrix product (what this CPU's BLAS does at its best).

Each is compiled first, then the three are timed in interleaved rounds and the best round of each is kept (other
jobs share the machine; the minimum is the least disturbed measurement).

FLOP count, analytic, for one descent step of one example. Only matrix products are counted, at 2 FLOPs per
multiply-add; element-wise work (layer norm, exponentials, ReLU) is O(N D + H N^2), under 1% of the total here, and
printed separately. With F = 2HY + M (keys, queries and memory overlaps computed by one product):
    tokens -> keys, queries, overlaps      2 N D F
    scores K.Q for every head              2 H N^2 Y
    attention-weighted queries and keys    2 * 2 H N^2 Y
    back to token space (transpose)        2 N F D
The energy after the last step costs 2 N D F + 2 H N^2 Y more. Both implementations do these same products (autograd
of the energy needs exactly them), so one count serves both and the GFLOP/s compare like with like.
"""
import argparse
import platform
import resource
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from amtutorial.energy_transformer import rand_init
from amtutorial.image_et import ImageETConfig


def step_flops(N, D, H, Y, M):
    F = 2 * H * Y + M
    matmul = 2 * N * D * F + 2 * H * N * N * Y + 2 * 2 * H * N * N * Y + 2 * N * F * D
    final = 2 * N * D * F + 2 * H * N * N * Y
    elementwise = 10 * N * D + 5 * H * N * N + 3 * N * M  # layer norm, softmax, ReLU: a generous estimate
    return matmul, final, elementwise


def reference_descend(et, x, nsteps, alpha):
    "The plain way: autograd of the energy with respect to the activations, in a scan."
    value_and_grad = jax.value_and_grad(et.energy_g)
    def step(x, _):
        E, dEdg = value_and_grad(jax.vmap(et.lnorm)(x))
        return x - alpha * dEdg, E
    x_final, Es = jax.lax.scan(step, x, None, length=nsteps)
    return x_final, jnp.append(Es, et.energy_g(jax.vmap(et.lnorm)(x_final)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--alpha", type=float, default=0.1)
    a = ap.parse_args()

    cfg = ImageETConfig.imagenet()
    c = cfg.et
    N, D, H, Y, M = cfg.n_tokens, c.D, c.H, c.Y, c.M
    model = rand_init(jr.key(0), cfg)
    x = jr.normal(jr.key(1), (a.batch, N, D))
    A = jr.normal(jr.key(2), (2048, 2048))

    ours = eqx.filter_jit(lambda et, xb: jax.vmap(lambda x: et.descend(x, a.steps, a.alpha))(xb))
    guarded = eqx.filter_jit(lambda et, xb: jax.vmap(lambda x: et.descend(x, a.steps, a.alpha, safeguard=True))(xb))
    ref = eqx.filter_jit(lambda et, xb: jax.vmap(lambda x: reference_descend(et, x, a.steps, a.alpha))(xb))
    matmul = jax.jit(lambda A: A @ A)

    runs = {"ours (closed form)": lambda: ours(model.et, x), "ours, safeguarded": lambda: guarded(model.et, x),
            "reference (autograd)": lambda: ref(model.et, x),
            "matmul 2048^2": lambda: matmul(A)}
    outs = {k: jax.block_until_ready(f()) for k, f in runs.items()}  # compile and warm up
    E_ours, E_ref = np.asarray(outs["ours (closed form)"][1]), np.asarray(outs["reference (autograd)"][1])
    agree = float(np.abs(E_ours - E_ref).max() / np.abs(E_ref).max())
    assert agree < 1e-4, f"ours and the reference disagree: relative energy difference {agree:.2e}"
    assert np.all(np.diff(E_ours, axis=1) <= 1e-5 * np.abs(E_ours[:, :-1])), "energy increased"
    E_guard = np.asarray(outs["ours, safeguarded"][1])
    assert np.all(np.diff(E_guard, axis=1) <= 0), "the safeguarded energy increased"
    assert np.allclose(E_guard, E_ours, rtol=1e-6, atol=0), "every first try is accepted here: the safeguard must change nothing"

    times = {k: [] for k in runs}
    for _ in range(a.rounds):
        for k, f in runs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}

    mm, final, elem = step_flops(N, D, H, Y, M)
    et_flops = a.batch * (a.steps * mm + final)
    flops = {"ours (closed form)": et_flops, "ours, safeguarded": et_flops, "reference (autograd)": et_flops,
             "matmul 2048^2": 2 * 2048**3}
    gflops = {k: flops[k] / best[k] / 1e9 for k in runs}

    print(f"Energy Transformer inference, ImageNet size: N={N} D={D} H={H} Y={Y} M={M}, batch {a.batch} (vmap), "
          f"{a.steps} steps, alpha={a.alpha}")
    print(f"machine: {platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, "
          f"jax {jax.__version__}; best of {a.rounds} interleaved rounds")
    print(f"analytic FLOPs per step per example: {mm/1e9:.3f} GFLOP in matrix products "
          f"(+{elem/1e6:.1f} MFLOP element-wise, {100*elem/mm:.2f}%, not counted); run total {et_flops/1e9:.1f} GFLOP")
    for k in runs:
        print(f"  {k:22s} best {best[k]*1e3:8.1f} ms ({gflops[k]:6.1f} GFLOP/s)   median "
              f"{np.median(times[k])*1e3:8.1f} ms ({flops[k] / np.median(times[k]) / 1e9:6.1f} GFLOP/s)")
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"ratios of medians: ours vs reference {med['reference (autograd)'] / med['ours (closed form)']:.2f}x, "
          f"ours vs matmul roofline {(flops['ours (closed form)'] / med['ours (closed form)']) / (2 * 2048**3 / med['matmul 2048^2']):.2f}x")
    speedup = best["reference (autograd)"] / best["ours (closed form)"]
    roof = gflops["ours (closed form)"] / gflops["matmul 2048^2"]
    print(f"ratio ours vs reference (best time_ref / time_ours): {speedup:.2f}x   [bar >= 1.0: "
          f"{'PASS' if speedup >= 1.0 else 'FAIL'}]")
    overhead = best["ours, safeguarded"] / best["ours (closed form)"]
    print(f"ratio safeguarded vs plain (best time_guarded / time_plain): {overhead:.2f}x")
    print(f"ratio ours vs matmul roofline (best GFLOP/s):  {roof:.2f}x   [bar >= 0.8: "
          f"{'PASS' if roof >= 0.8 else 'FAIL'}]")
    print(f"energies agree with the reference to {agree:.1e} (relative); peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
