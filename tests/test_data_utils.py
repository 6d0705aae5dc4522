"""amtutorial.data_utils: downloads under fault injection (loopback HTTP server), file validation, bad inputs."""
import gzip
import hashlib
import json
import shutil
import warnings

import numpy as np
import pytest

from amtutorial import data_utils as du
from amtutorial.data_utils import (CacheDirError, CheckpointError, DownloadError, ET_CKPT_KEYS, fetch_file,
                                   get_cache_dir, get_et_checkpoint, get_et_imgs, load_fashion_mnist, parse_idx,
                                   read_et_checkpoint, write_et_checkpoint, atomic_savez)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def leftovers(d):
    "Every file under `d` (a download that failed must leave none)."
    return sorted(p.name for p in d.rglob("*") if p.is_file()) if d.exists() else []


def toy_arrays(H=2, Y=3, D=4, M=5, P=6, N=7, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    shapes = dict(Wk=(H, Y, D), Wq=(H, Y, D), Xi=(D, M), Wenc=(P, D), Benc=(D,), Wdec=(D, P), Bdec=(P,),
                  POS_embed=(N, D), CLS_token=(D,), MASK_token=(D,), LNORM_gamma=(), LNORM_bias=(D,))
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


# --- the cache directory -----------------------------------------------------------------------------------------
def test_cache_dir_from_env(cache_dir):
    assert get_cache_dir() == cache_dir and cache_dir.is_dir()
    assert get_cache_dir("a/b") == cache_dir / "a" / "b"


def test_cache_dir_in_repo(monkeypatch):
    monkeypatch.delenv("AMTUTORIAL_CACHE_DIR", raising=False)
    assert get_cache_dir() == du._package_dir().parent / "cache"


def test_unwritable_cache_dir(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("AMTUTORIAL_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(CacheDirError, match="cannot be created or written to.*AMTUTORIAL_CACHE_DIR"):
        get_cache_dir()


def test_unwritable_cache_dir_stops_download(tmp_path, monkeypatch, http_server):
    (http_server.root / "f.bin").write_bytes(b"x" * 100)
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("AMTUTORIAL_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(CacheDirError):
        fetch_file(f"{http_server.url}/ok/f.bin", "f.bin", sha(b"x" * 100), progress=False)
    assert http_server.requests == []  # refused before touching the network


# --- fetch_file under faults ----------------------------------------------------------------------------------------
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def served(http_server):
    (http_server.root / "data.bin").write_bytes(PAYLOAD)
    return http_server


def test_fetch_ok_and_cached(cache_dir, served):
    p = fetch_file(f"{served.url}/ok/data.bin", "data.bin", sha(PAYLOAD), progress=False)
    assert p.read_bytes() == PAYLOAD and p.parent == cache_dir / "downloads"
    n = len(served.requests)
    assert fetch_file(f"{served.url}/ok/data.bin", "data.bin", sha(PAYLOAD), progress=False) == p
    assert len(served.requests) == n  # the verified copy in the cache is used, no new request


@pytest.mark.parametrize("mode, message", [
    ("drop", "Could not download"),        # connection dropped mid-file
    ("trunc", "checksum is wrong"),        # a complete response holding only half the file
    ("404", "404"),
    ("500", "500"),
])
def test_fetch_faults_leave_nothing(cache_dir, served, mode, message):
    url = f"{served.url}/{mode}/data.bin"
    with pytest.raises(DownloadError, match=message) as e:
        fetch_file(url, "data.bin", sha(PAYLOAD), progress=False)
    msg = str(e.value)
    assert url in msg and "'data.bin'" in msg and "place it at" in msg and str(cache_dir) in msg
    assert leftovers(cache_dir) == []


def test_fetch_wrong_hash(cache_dir, served):
    with pytest.raises(DownloadError, match="checksum is wrong.*discarded") as e:
        fetch_file(f"{served.url}/ok/data.bin", "data.bin", "sha256:" + "0" * 64, progress=False)
    assert "sha256:" + "0" * 64 in str(e.value)
    assert leftovers(cache_dir) == []


def test_fetch_no_server(cache_dir, dead_url):
    with pytest.raises(DownloadError, match="Could not download 'x.bin'.*ConnectionError"):
        fetch_file(f"{dead_url}/x.bin", "x.bin", "sha256:" + "0" * 64, progress=False)
    assert leftovers(cache_dir) == []


def test_fetch_replaces_corrupt_cached_copy(cache_dir, served):
    (cache_dir / "downloads").mkdir(parents=True)
    (cache_dir / "downloads" / "data.bin").write_bytes(PAYLOAD[:10])  # a stale, corrupt copy
    p = fetch_file(f"{served.url}/ok/data.bin", "data.bin", sha(PAYLOAD), progress=False)
    assert p.read_bytes() == PAYLOAD


@pytest.mark.parametrize("url, fname, err, message", [
    ("ftp:/x", "f", ValueError, "url must be"),
    ("file:///etc/passwd", "f", ValueError, "url must be"),
    ("http://127.0.0.1/x", "../escape", ValueError, "fname must be a plain file name"),
    ("http://127.0.0.1/x", "", ValueError, "fname must be a plain file name"),
])
def test_fetch_bad_arguments(cache_dir, url, fname, err, message):
    with pytest.raises(err, match=message):
        fetch_file(url, fname, None, progress=False)


# --- the ET paper's images ----------------------------------------------------------------------------------------
def test_et_img_pins_match_shared_copy(et_figs):
    for name, h in du.ET_IMG_SHA256.items():
        assert hashlib.sha256((et_figs / name).read_bytes()).hexdigest() == h, name


def test_get_et_imgs_from_loopback(cache_dir, http_server, et_figs):
    shutil.copytree(et_figs, http_server.root / "et-figs")
    imgs = get_et_imgs(f"{http_server.url}/ok", progress=False)
    assert imgs.shape == (11, 224, 224, 3) and imgs.dtype == np.uint8
    assert len({hashlib.sha256(i.tobytes()).hexdigest() for i in imgs}) == 11
    # a tampered picture on the server is refused and not cached
    (cache_dir / "et-figs" / "05_bus.png").unlink()
    (http_server.root / "et-figs" / "05_bus.png").write_bytes(b"not the bus")
    with pytest.raises(DownloadError, match="05_bus.png.*checksum is wrong"):
        get_et_imgs(f"{http_server.url}/ok", progress=False)
    assert not (cache_dir / "et-figs" / "05_bus.png").exists()


# --- checkpoints -------------------------------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path):
    arrs = toy_arrays()
    p = write_et_checkpoint(tmp_path / "c.npz", arrs, {"D": 4, "name": "toy"})
    ck = read_et_checkpoint(p)
    assert ck.config == {"D": 4, "name": "toy"}
    assert ck.dims == dict(H=2, Y=3, D=4, M=5, P=6, N=7)
    for k in ET_CKPT_KEYS:
        np.testing.assert_array_equal(ck.arrays[k], arrs[k])
        assert ck.arrays[k].dtype == arrs[k].dtype
    assert [f.name for f in tmp_path.iterdir()] == ["c.npz"]  # no temporary file left


def test_checkpoint_paper_layout_without_config(tmp_path):
    arrs = toy_arrays(H=12, Y=64, D=768, M=3072, P=768, N=197)
    np.savez(tmp_path / "et_ckpt.npz", **arrs)
    ck = read_et_checkpoint(tmp_path / "et_ckpt.npz")
    assert ck.config is None and ck.dims == dict(H=12, Y=64, D=768, M=3072, P=768, N=197)


def _bad(arrs, **changes):
    out = dict(arrs)
    for k, v in changes.items():
        if v is None:
            out.pop(k)
        else:
            out[k] = v
    return out


A = toy_arrays()
BAD_CHECKPOINTS = {
    "missing key": (_bad(A, MASK_token=None), "missing key.*MASK_token"),
    "extra key": (_bad(A, Wv=A["Wk"]), "unexpected key.*Wv"),
    "Wq shape differs from Wk": (_bad(A, Wq=A["Wq"][:, :2]), "Wq has shape .* expected \\(H, Y, D\\)"),
    "transposed Xi": (_bad(A, Xi=A["Xi"].T), "Xi looks transposed"),
    "vector LNORM_gamma": (_bad(A, LNORM_gamma=np.ones(4, np.float32)), "LNORM_gamma .* expected 0 dimensions"),
    "integer dtype": (_bad(A, Benc=np.zeros(4, np.int32)), "Benc has dtype int32, expected a floating-point"),
    "NaN weights": (_bad(A, Wdec=np.full((4, 6), np.nan, np.float32)), "Wdec contains NaN"),
    "POS_embed of the wrong width": (_bad(A, POS_embed=np.zeros((7, 5), np.float32)), "POS_embed has shape"),
    "3-D Xi": (_bad(A, Xi=A["Xi"][None]), "Xi has shape .* expected 2 dimensions"),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_arrays(tmp_path, case):
    arrs, message = BAD_CHECKPOINTS[case]
    np.savez(tmp_path / "bad.npz", **arrs)
    with pytest.raises(CheckpointError, match=message):
        read_et_checkpoint(tmp_path / "bad.npz")
    with pytest.raises(CheckpointError, match=message):  # and it is never written either
        write_et_checkpoint(tmp_path / "out.npz", arrs)
    assert not (tmp_path / "out.npz").exists()


def test_checkpoint_object_arrays_never_unpickled(tmp_path):
    np.savez(tmp_path / "p.npz", **_bad(A, Benc=np.array([object()] * 4, dtype=object)))
    with pytest.raises(CheckpointError, match="pickled Python objects, which are never loaded"):
        read_et_checkpoint(tmp_path / "p.npz")


@pytest.mark.parametrize("config, message", [
    (np.array("{not json"), "'config' is not valid JSON"),
    (np.array([1.0, 2.0]), "'config' must be a 0-d unicode"),
    (np.array("[1, 2]"), "config must be a JSON object"),
])
def test_bad_checkpoint_config(tmp_path, config, message):
    np.savez(tmp_path / "c.npz", config=config, **A)
    with pytest.raises(CheckpointError, match=message):
        read_et_checkpoint(tmp_path / "c.npz")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"\x93NUMPY not an npz"])
def test_checkpoint_not_an_archive(tmp_path, content):
    (tmp_path / "c.npz").write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable .npz archive"):
        read_et_checkpoint(tmp_path / "c.npz")


def test_checkpoint_truncated(tmp_path):
    write_et_checkpoint(tmp_path / "c.npz", A)
    data = (tmp_path / "c.npz").read_bytes()
    (tmp_path / "c.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable .npz archive"):
        read_et_checkpoint(tmp_path / "c.npz")


def test_checkpoint_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        read_et_checkpoint(tmp_path / "nope.npz")


def test_write_checkpoint_is_atomic(tmp_path, monkeypatch):
    good = write_et_checkpoint(tmp_path / "c.npz", A)
    before = good.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("crash in the middle of writing")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        write_et_checkpoint(tmp_path / "c.npz", toy_arrays(seed=1))
    assert good.read_bytes() == before  # the old file is untouched
    assert [f.name for f in tmp_path.iterdir()] == ["c.npz"]  # and no temporary file is left


def test_get_et_checkpoint_from_loopback(cache_dir, http_server):
    np.savez(http_server.root / "et_ckpt.npz", **toy_arrays(H=12, Y=8, D=16, M=32, P=12, N=5))
    p = get_et_checkpoint(f"{http_server.url}/ok/et_ckpt.npz", progress=False)
    assert p == cache_dir / "checkpoints" / "et_ckpt.npz"
    assert read_et_checkpoint(p).dims["H"] == 12


def test_get_et_checkpoint_invalid_is_moved_aside(cache_dir, http_server):
    np.savez(http_server.root / "et_ckpt.npz", **_bad(A, Xi=None))
    with pytest.raises(CheckpointError, match="missing key.*Xi.*moved to"):
        get_et_checkpoint(f"{http_server.url}/ok/et_ckpt.npz", progress=False)
    assert leftovers(cache_dir) == ["et_ckpt.npz.invalid"]  # never read again as if it were good


def test_get_et_checkpoint_dropped(cache_dir, http_server):
    np.savez(http_server.root / "et_ckpt.npz", **A)
    with pytest.raises(DownloadError, match="Could not download 'et_ckpt.npz'"):
        get_et_checkpoint(f"{http_server.url}/drop/et_ckpt.npz", progress=False)
    assert leftovers(cache_dir) == []


# --- IDX and Fashion-MNIST -------------------------------------------------------------------------------------------
def idx(shape, data=None, magic=(0, 0, 8)):
    body = bytes(int(np.prod(shape))) if data is None else data
    return bytes([*magic, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape) + body


@pytest.mark.parametrize("data, err, message", [
    (idx((2, 3))[:-1], ValueError, "truncated or corrupt"),
    (idx((2, 3)) + b"\0", ValueError, "truncated or corrupt"),
    (idx((2, 3), magic=(0, 0, 0x0D)), ValueError, "bad IDX magic number 0x00000d02"),
    (idx((2, 3), magic=(1, 0, 8)), ValueError, "bad IDX magic number"),
    (b"\0\0", ValueError, "too short for an IDX header"),
    (bytes([0, 0, 8, 3, 0, 0]), ValueError, "ends inside its IDX header"),
    (bytes([0, 0, 8, 0]), ValueError, "0 dimensions"),
])
def test_parse_idx_rejects(data, err, message):
    with pytest.raises(err, match=message):
        parse_idx(data)


def test_parse_idx_ok():
    a = parse_idx(idx((2, 3), bytes(range(6))))
    assert a.shape == (2, 3) and a[1, 2] == 5


@pytest.mark.parametrize("split", ["validation", "Train", ""])
def test_fashion_mnist_bad_split(split):
    with pytest.raises(ValueError, match="split must be one of \\['test', 'train'\\]"):
        load_fashion_mnist(split)


@pytest.fixture
def fashion_server(http_server, monkeypatch, cache_dir):
    "A loopback server holding a tiny fake Fashion-MNIST whose pins are patched in; no system copy."
    images, labels = idx((3, 28, 28), bytes(range(256)) * 9 + bytes(3 * 784 - 2304)), idx((3,), bytes([0, 9, 4]))
    files = {}
    for name, data in [("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)]:
        gz = gzip.compress(data, mtime=0)
        (http_server.root / f"{name}.gz").write_bytes(gz)
        files[name] = (hashlib.sha256(gz).hexdigest(), hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(du, "FASHION_MNIST_FILES", files)
    monkeypatch.setattr(du, "FASHION_MNIST_SPLITS", {"test": (*files, 3)})
    monkeypatch.setattr(du, "FASHION_MNIST_SYSTEM_DIRS", [])
    du._load_fashion_mnist.cache_clear()
    yield http_server
    du._load_fashion_mnist.cache_clear()


def test_fashion_mnist_download(fashion_server, cache_dir):
    x, y = load_fashion_mnist("test", base_url=f"{fashion_server.url}/ok", progress=False)
    assert x.shape == (3, 28, 28) and x.dtype == np.uint8 and list(y) == [0, 9, 4]
    assert sorted(leftovers(cache_dir)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_fashion_mnist_corrupt_cache_is_replaced(fashion_server, cache_dir):
    d = cache_dir / "fashion-mnist"
    d.mkdir(parents=True)
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="Ignoring a bad copy.*not a valid gzip"):
        x, y = load_fashion_mnist("test", base_url=f"{fashion_server.url}/ok", progress=False)
    assert list(y) == [0, 9, 4]


def test_fashion_mnist_download_fails_cleanly(fashion_server, cache_dir):
    with pytest.raises(DownloadError, match="t10k-images-idx3-ubyte.gz.*place it at"):
        load_fashion_mnist("test", base_url=f"{fashion_server.url}/drop", progress=False)
    assert leftovers(cache_dir) == []


MISSING_FASHION_MNIST = ("these tests read Fashion-MNIST from Debian's package `dataset-fashion-mnist` (no network "
                         "needed): sudo apt-get install dataset-fashion-mnist")


def test_fashion_mnist_from_debian(cache_dir):
    if not du.FASHION_MNIST_SYSTEM_DIRS[0].is_dir(): pytest.fail(MISSING_FASHION_MNIST)
    x, y = load_fashion_mnist("test")
    assert x.shape == (10_000, 28, 28) and np.bincount(y).tolist() == [1000] * 10
    assert leftovers(cache_dir) == []  # read in place, nothing downloaded or copied
    assert not x.flags.writeable


def test_sample_asset_matches_test_split():
    xs, ys = du.load_fashion_mnist_sample()
    assert xs.shape == (500, 28, 28) and xs.dtype == np.uint8 and ys.shape == (500,)
    if not du.FASHION_MNIST_SYSTEM_DIRS[0].is_dir(): pytest.fail(MISSING_FASHION_MNIST)
    x, y = load_fashion_mnist("test")
    np.testing.assert_array_equal(xs, x[:500])
    np.testing.assert_array_equal(ys, y[:500])


def test_cache_contents(cache_dir):
    (cache_dir / "a").mkdir(parents=True)
    (cache_dir / "a" / "f.bin").write_bytes(b"123")
    assert du.cache_contents() == [("a/f.bin", 3)]
    assert du.cache_contents("missing") == []


def test_atomic_savez_compressed_round_trip(tmp_path):
    a = np.zeros((200, 200), np.float32)
    plain, packed = atomic_savez(tmp_path/"p.npz", a=a), atomic_savez(tmp_path/"c.npz", compressed=True, a=a)
    for p in (plain, packed):
        with np.load(p, allow_pickle=False) as z: assert np.array_equal(z["a"], a)
    assert packed.stat().st_size < plain.stat().st_size / 10
    assert sorted(f.name for f in tmp_path.iterdir()) == ["c.npz", "p.npz"]   # no temporary file left


@pytest.mark.parametrize("layout", ["empty", "clone"])
def test_import_beside_a_folder_named_amtutorial(tmp_path, layout):
    """Started from a folder that holds a directory named `amtutorial` without `__init__.py` (the clone itself,
    when the repository was cloned under its own name), Python may import that directory as a namespace package;
    `data_utils` must still find the real package's files (it once crashed on `Path(None)`)."""
    import subprocess
    import sys
    shadow = tmp_path / "amtutorial"
    shadow.mkdir()
    if layout == "clone":
        (shadow / "settings.ini").write_text("[DEFAULT]\n")
        (shadow / "nbs").mkdir()
    code = ("import amtutorial.data_utils as du; print(du.ASSETS); "
            "print(du.load_fashion_mnist_sample()[0].shape)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assets, shape = r.stdout.split("\n")[:2]
    assert assets == str(du.ASSETS) and shape == "(500, 28, 28)"
