"""The wheel: `python -m build` makes one that carries the package data and the console script."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_assets_and_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wheels = list(tmp_path.glob("amtutorial-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as z:
        names = set(z.namelist())
        assert "amtutorial/assets/fashion_mnist_test_sample.npz" in names
        assert {"amtutorial/__init__.py", "amtutorial/data_utils.py", "amtutorial/cli.py"} <= names
        ep = next(n for n in names if n.endswith("entry_points.txt"))
        assert "amtutorial = amtutorial.cli:main" in z.read(ep).decode()
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
        for req in ("jax", "equinox", "einops", "jaxtyping", "fastcore", "pooch", "imageio-ffmpeg", "optax"):
            assert f"Requires-Dist: {req}" in meta, req
