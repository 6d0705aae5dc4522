"""amtutorial.graph_et: bad graphs, the masked energy, the monotone descent, metrics, anomaly injection, a tiny
end-to-end run, and the fraud-benchmark loaders against a loopback HTTP server (and offline)."""
import hashlib
import io
import zipfile

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
import scipy.io
import scipy.sparse

import amtutorial.graph_et as ge
from amtutorial.data_utils import DownloadError
from amtutorial.energy_transformer import ETConfig, rand_init

X3 = np.ones((3, 2), np.float32)
A3 = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])


@pytest.mark.parametrize("features, adjacency, message", [
    (np.zeros((0, 2)), np.zeros((0, 0)), "the graph is empty"),
    (X3, np.eye(3), "no edges between distinct nodes"),
    (X3, np.zeros((3, 3)), "no edges between distinct nodes"),
    (np.array([[np.nan, 0.]] * 3), A3, "features has NaN"),
    (np.array([[np.inf, 0.]] * 3), A3, "features has NaN or infinite"),
    (X3[:2], A3, "features has 2 rows but adjacency has 3"),
    (X3, A3[:2], "adjacency must be a square"),
    (X3, np.triu(A3), "adjacency is not symmetric"),
    (X3, A3 * 0.5, "only 0/1"),
    (X3.ravel(), A3, "features must have shape"),
])
def test_bad_graphs(features, adjacency, message):
    with pytest.raises(ge.GraphError, match=message):
        ge.check_graph(features, adjacency)


def test_bad_graph_types():
    with pytest.raises(TypeError, match="features"):
        ge.check_graph([[1.0]], A3)
    with pytest.raises(TypeError, match="edges must be integers"):
        ge.edges_to_adjacency(np.array([[0.0, 1.0]]), 2)
    with pytest.raises(ge.GraphError, match="outside 0..1"):
        ge.edges_to_adjacency(np.array([[0, 2]]), 2)


def test_bad_graph_cannot_be_made_or_run():
    with pytest.raises(ge.GraphError, match="NaN"):
        ge.AnomalyGraph(np.full((3, 2), np.nan, np.float32), A3.astype(bool), np.zeros(3, np.int8))
    with pytest.raises(ge.GraphError, match="not symmetric"):
        ge.AnomalyGraph(X3, np.triu(A3).astype(bool), np.zeros(3, np.int8))
    with pytest.raises(ge.GraphError, match="kind must be 3 values"):
        ge.AnomalyGraph(X3, A3.astype(bool), np.zeros(2, np.int8))
    with pytest.raises(ValueError, match="at least 3 anomalous"):
        ge.run_on_graph(ge.AnomalyGraph(X3, A3.astype(bool), np.array([0, 1, 0], np.int8)), epochs=1)


def test_run_on_a_users_graph():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 3)).astype(np.float32)
    g = ge.inject_anomalies(X, ge.knn_graph(X, 3), n_cliques=2, clique_size=4, n_contextual=0, seed=1)
    rows = ge.run_on_graph(g, seed=0, epochs=2, models=("GCN", "ET"))
    assert [r["model"] for r in rows] == ["GCN", "ET"] and all(0 <= r["auc"] <= 1 for r in rows)
    assert ge.laplacian_pe(ge.knn_graph(X[:4], 1), 8).shape == (4, 8)  # fewer nodes than eigenvectors: zero columns


def test_roc_auc_hand_cases_and_pairs():
    assert ge.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert ge.roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50); s = rng.integers(0, 5, 50).astype(float)  # many ties
    pairs = [(a > b) + 0.5 * (a == b) for a in s[y == 1] for b in s[y == 0]]
    assert ge.roc_auc(y, s) == pytest.approx(np.mean(pairs))
    with pytest.raises(ValueError, match="both positive and negative"):
        ge.roc_auc(np.array([1, 1]), np.array([0.1, 0.2]))


def test_macro_f1_and_threshold():
    assert ge.macro_f1(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])) == pytest.approx((2 / 3 + 0.8) / 2)
    assert ge.best_threshold(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.9])) == 0.9


def test_inject_anomalies_protocol():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 5)).astype(np.float32)
    g = ge.inject_anomalies(X, ge.knn_graph(X, 4), n_cliques=3, clique_size=5, n_contextual=6, seed=3)
    assert np.bincount(g.kind, minlength=3).tolist() == [59, 15, 6]
    s = np.flatnonzero(g.kind == 1)
    assert (g.adjacency[np.ix_(s, s)].sum(1) >= 4).all()
    assert (g.adjacency == g.adjacency.T).all() and not g.adjacency.diagonal().any()
    for i in np.flatnonzero(g.kind == 2):
        assert any((g.features[i] == X[j]).all() for j in range(80) if j != i)
    with pytest.raises(ValueError, match="more than half"):
        ge.inject_anomalies(X, ge.knn_graph(X, 4), n_cliques=8, clique_size=5, n_contextual=2)


def _small():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    return X, ge.attention_mask(ge.knn_graph(X, 3))


def test_masked_energy_full_mask_is_the_et_energy():
    et = rand_init(jr.key(1), ETConfig.tiny())
    g = jax.vmap(et.lnorm)(jr.normal(jr.key(2), (40, 16)))
    assert float(ge.masked_attn_energy(et, g, jnp.ones((40, 40), bool))) == pytest.approx(float(et.attn_energy(g)),
                                                                                          rel=1e-5)
    _, mask = _small()
    assert float(ge.node_energies(et, g, mask).sum()) == pytest.approx(float(ge.graph_energy_g(et, g, mask)), rel=1e-4)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alpha", [0.1, 3.0, 100.0])
def test_descent_is_monotone(seed, alpha):
    et = rand_init(jr.key(seed), ETConfig.tiny())
    _, mask = _small()
    x = jr.normal(jr.key(seed + 10), (40, 16)) * 10.0 ** (seed - 2)
    xs, Es = ge.graph_descend(et, x, mask, 15, alpha)
    assert xs.shape == (16, 40, 16) and bool(jnp.isfinite(Es).all())
    assert (np.diff(np.asarray(Es, np.float64)) <= 0).all()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([2, 7, 40]), log_scale=st.floats(-3, 2),
       log_alpha=st.floats(-2, 2.5), density=st.floats(0.05, 1.0))
@example(seed=0, n=40, log_scale=-3.0, log_alpha=2.5, density=0.1)  # tiny tokens, a huge step: the layer norm's hard case
@example(seed=1, n=2, log_scale=2.0, log_alpha=-2.0, density=1.0)  # two nodes, one edge
@example(seed=2, n=40, log_scale=0.0, log_alpha=1.0, density=1.0)  # the full mask: the ET's own energy
def test_descent_never_climbs_on_random_graphs(seed, n, log_scale, log_alpha, density):
    "Fresh random graphs, weights, token scales and step sizes: the safeguarded energy never goes up."
    rng = np.random.default_rng(seed)
    A = np.triu(rng.random((n, n)) < density, 1)
    A[0, 1] = True  # at least one edge
    et = rand_init(jr.key(seed), ETConfig.tiny())
    x = jnp.asarray(rng.normal(size=(n, 16)) * 10.0 ** log_scale, jnp.float32)
    _, Es = ge.graph_descend(et, x, ge.attention_mask(A | A.T), 6, 10.0 ** log_alpha)
    Es = np.asarray(Es, np.float64)
    assert np.isfinite(Es).all() and (np.diff(Es) <= 0).all(), Es


def test_gradient_through_descent_is_finite():
    X, mask = _small()
    m = ge.GraphET(ge.GraphETConfig(F=4, P=3, et=ETConfig.tiny()), key=jr.key(0))
    pe = jnp.zeros((40, 3))
    grads = eqx.filter_grad(lambda m: m(jnp.asarray(X), pe, mask).sum())(m)
    assert all(bool(jnp.isfinite(l).all()) for l in jax.tree_util.tree_leaves(grads))


def test_readout_inputs_are_standardised_over_the_nodes():
    X, mask = _small()
    m = ge.GraphET(ge.GraphETConfig(F=4, P=3, et=ETConfig.tiny()), key=jr.key(0))
    xs, _ = m.trajectory(jnp.asarray(X), jnp.ones((40, 3)), mask)
    h = np.asarray(m.readout_inputs(xs, mask), np.float64)
    assert h.shape == (40, ETConfig.tiny().D + 2)
    np.testing.assert_allclose(h.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(h.var(0), 1, rtol=1e-3)


def test_feature_dropout_is_checked_and_changes_training():
    X, mask = _small()
    y = np.zeros(40, np.int32); y[:5] = 1
    args = (jnp.asarray(X), jnp.zeros((40, 3)), mask, y, np.arange(0, 40, 2), np.arange(1, 40, 2))
    m0 = ge.FeatureMLP(4, key=jr.key(0))
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="feature_dropout must be in"): ge.train_node_model(m0, *args, feature_dropout=bad)
    leaves = lambda m: np.concatenate([np.ravel(l) for l in jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_inexact_array))])
    plain = [leaves(ge.train_node_model(m0, *args, epochs=10, feature_dropout=0.0)) for _ in range(2)]
    dropped = leaves(ge.train_node_model(m0, *args, epochs=10, feature_dropout=0.5))
    np.testing.assert_array_equal(plain[0], plain[1])  # without dropout, training is deterministic
    assert not np.allclose(plain[0], dropped)


def test_tiny_experiment_end_to_end():
    rows = ge.run_experiment(kinds=("structural",), ratios=(0.1,), seeds=(0,), n_nodes=120, epochs=3, progress=False)
    assert [r["model"] for r in rows] == list(ge.MODELS)
    assert all(0 <= r["auc"] <= 1 and 0 <= r["f1"] <= 1 for r in rows)
    assert "ET" in ge.results_table(rows)


def _fraud_zip(member: str) -> bytes:
    X = scipy.sparse.csc_matrix(np.arange(12, dtype=np.float64).reshape(4, 3))
    homo = scipy.sparse.csc_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], float))
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"features": X, "label": np.array([[0, 1, 0, 1]]), "homo": homo, "net_x": homo})
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as f: f.writestr(member, buf.getvalue())
    return z.getvalue()


@pytest.mark.parametrize("name", ["yelpchi", "amazon"])
def test_fraud_loader_from_loopback(name, http_server, cache_dir, monkeypatch):
    zname, mname = ge.FRAUD_FILES[name]
    data = _fraud_zip(mname)
    (http_server.root / zname).write_bytes(data)
    monkeypatch.setitem(ge.FRAUD_SHA256, name, "sha256:" + hashlib.sha256(data).hexdigest())
    X, e, y = ge.load_fraud_graph(name, base_url=f"{http_server.url}/ok", progress=False)
    assert X.shape == (4, 3) and X.dtype == np.float32 and X[2, 1] == 7
    assert e.tolist() == [[0, 1], [1, 2]] and y.tolist() == [0, 1, 0, 1]
    X2, _, _ = ge.load_fraud_graph(name, base_url="http://127.0.0.1:9", progress=False)  # from the cache now
    assert (X2 == X).all()


def test_fraud_loader_wrong_hash_and_offline(http_server, cache_dir, monkeypatch, dead_url):
    data = _fraud_zip("Amazon.mat")
    (http_server.root / "FraudAmazon.zip").write_bytes(data)
    monkeypatch.setitem(ge.FRAUD_SHA256, "amazon", "sha256:" + "0" * 64)
    with pytest.raises(DownloadError, match="checksum is wrong"):
        ge.load_fraud_graph("amazon", base_url=f"{http_server.url}/ok", progress=False)
    with pytest.raises(DownloadError, match="Could not download 'FraudYelp.zip'.*place it at"):
        ge.load_fraud_graph("yelpchi", base_url=dead_url, progress=False)
    with pytest.raises(ValueError, match="name must be one of"):
        ge.load_fraud_graph("tfinance")


def test_fraud_loader_bad_archive(http_server, cache_dir):
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as f: f.writestr("other.txt", b"x")
    (http_server.root / "FraudAmazon.zip").write_bytes(z.getvalue())
    with pytest.raises(ge.GraphError, match="holds no Amazon.mat"):
        ge.load_fraud_graph("amazon", base_url=f"{http_server.url}/ok", progress=False)


def test_split_gives_every_part_an_anomaly():
    y = np.array([1, 1, 1] + [0] * 40)
    for seed in range(5):
        s = ge.split_nodes(y, seed)
        assert all(y[s[k]].sum() >= 1 for k in ("train", "val", "test"))
        assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(43))
