"""Benchmark: time and memory per query of the slot-based and the distributed (random-feature) dense associative
memory against the number K of stored memories.

Everything is measured in this one run (jitted, after a warm-up call, `block_until_ready`, fastest of `--repeats`
calls), and the script prints ratios, which mean something on a noisy machine where absolute times do not:

* flatness: distributed time per query at K = 4096 over its time at K = 16 (about 1: its cost does not depend on K);
* speed-up: slot-based time per query at K = 4096 over distributed time per query at K = 4096;
* crossover: the K at which both cost the same, interpolated (log-log) between the measured K.

    python bench/distributed_memory.py [--dim 256] [--freqs 1024] [--queries 256] [--repeats 30]

"stored kB" counts the arrays that hold the memories (Xi, or the feature sum T); the distributed memory also keeps
its fixed random frequencies W (R x D floats, regenerable from a seed), printed once.
"""
import argparse

import jax
import numpy as np
import jax.random as jr

from amtutorial.distributed_memory import (DenseMemory, distributed_memory, memory_footprint, random_features,
                                           time_per_query, unit_memories)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=256, help="dimension D of the memories (256: a 16x16 image)")
    p.add_argument("--freqs", type=int, default=1024, help="random frequencies R (2R features)")
    p.add_argument("--beta", type=float, default=8.0, help="inverse temperature")
    p.add_argument("--queries", type=int, default=256, help="queries per timed batch")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per measurement (the fastest is kept)")
    p.add_argument("--Ks", type=int, nargs="+", default=[16, 256, 4096, 16384], help="numbers of memories")
    a = p.parse_args()
    if 4096 not in a.Ks or 16 not in a.Ks:
        p.error("--Ks must include 16 and 4096 (the ratios are taken there)")

    print(f"device: {jax.devices()[0].platform}, D = {a.dim}, R = {a.freqs} frequencies ({2 * a.freqs} features), "
          f"beta = {a.beta}, {a.queries} queries per batch, fastest of {a.repeats} calls")
    Q = unit_memories(a.queries, a.dim, key=jr.key(0))
    feats = random_features(a.dim, a.freqs, a.beta, key=jr.key(1))
    res = {}
    print(f"distributed memory's fixed frequencies W: {feats.W.nbytes / 1e3:.0f} kB, whatever K")
    print(f"{'K':>6} | {'slot-based µs/query':>20} {'stored kB':>10} {'work B/query':>13} | "
          f"{'distributed µs/query':>21} {'stored kB':>10} {'work B/query':>13}")
    for K in sorted(a.Ks):
        Xi = unit_memories(K, a.dim, key=jr.key(2))
        row = {}
        for name, m in (("dense", DenseMemory(Xi, a.beta)), ("dist", distributed_memory(Xi, feats))):
            row[name] = (time_per_query(m, Q, repeats=a.repeats), memory_footprint(m, Q))
        res[K] = row
        (td, fd), (tr, fr) = row["dense"], row["dist"]
        print(f"{K:6d} | {td * 1e6:20.2f} {fd['stored'] / 1e3:10.1f} {fd['working_per_query']:13.0f} | "
              f"{tr * 1e6:21.2f} {fr['stored'] / 1e3:10.1f} {fr['working_per_query']:13.0f}")
    flat = res[4096]["dist"][0] / res[16]["dist"][0]
    speed = res[4096]["dense"][0] / res[4096]["dist"][0]
    grow = res[4096]["dense"][0] / res[16]["dense"][0]
    print(f"flatness  (distributed, K=4096 vs K=16): time ratio {flat:.2f}, stored-bytes ratio "
          f"{res[4096]['dist'][1]['stored'] / res[16]['dist'][1]['stored']:.2f}")
    print(f"growth    (slot-based,  K=4096 vs K=16): time ratio {grow:.1f}, stored-bytes ratio "
          f"{res[4096]['dense'][1]['stored'] / res[16]['dense'][1]['stored']:.0f}")
    print(f"speed-up at K=4096 (slot-based time / distributed time): {speed:.2f}")
    Ks = sorted(res)
    r = np.log([res[K]["dense"][0] / res[K]["dist"][0] for K in Ks])  # < 0: the slot-based query is cheaper
    cross = [i for i in range(len(Ks) - 1) if r[i] < 0 <= r[i + 1]]
    if cross:
        i = cross[-1]
        K_x = np.exp(np.log(Ks[i]) + (np.log(Ks[i + 1]) - np.log(Ks[i])) * r[i] / (r[i] - r[i + 1]))
        print(f"crossover (slot-based time = distributed time, log-log interpolated between K={Ks[i]} and "
              f"K={Ks[i + 1]}): K ~ {K_x:.0f}")
    else:
        print("crossover: not within the measured K")


if __name__ == "__main__":
    main()
