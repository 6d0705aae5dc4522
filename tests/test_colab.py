"""Colab notebooks: colab/ is what tools/export_colab generates, and one exported notebook runs top to bottom in a
fresh kernel against the locally built wheel (in a new virtual environment, not this checkout's package)."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the chapter run end to end from its Colab copy (the site's centrepiece when it exists)
COLAB_NB = next((n for n in ["01_energy_transformer.ipynb", "00_dense_storage.ipynb"]
                 if (ROOT / "colab" / n).exists()), None)


def test_colab_copies_up_to_date():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "export_colab"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for nb in (ROOT / "colab").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert "%pip install -q amtutorial" in "".join(code[0]["source"]), nb.name
        assert all(not c["outputs"] for c in code), f"{nb.name} has outputs"


@pytest.mark.skipif(COLAB_NB is None, reason="no tutorial notebook exported yet")
def test_colab_notebook_runs_against_wheel(tmp_path):
    wheel_dir = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(wheel_dir), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next(wheel_dir.glob("amtutorial-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    work = tmp_path / "work"
    work.mkdir()
    script = textwrap.dedent(f"""
        import os, sys
        from execnb.nbio import read_nb
        from execnb.shell import CaptureShell
        nb = read_nb({str(ROOT / 'colab' / COLAB_NB)!r})
        sh = CaptureShell()
        # the install cell is what Colab runs; here the wheel is already installed in this fresh environment
        sh.run_all(nb, exc_stop=True, preproc=lambda c: c.cell_type != 'code' or '%pip install' in c.source)
        import amtutorial
        print('AMTUTORIAL_FROM', amtutorial.__file__)
    """)
    env = {**os.environ, "AMTUTORIAL_CACHE_DIR": str(tmp_path / "cache"), "MPLBACKEND": "Agg"}
    env.pop("PYTHONPATH", None)
    r = subprocess.run([str(py), "-c", script], cwd=work, capture_output=True, text=True, timeout=1200, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    origin = next(l for l in r.stdout.splitlines() if l.startswith("AMTUTORIAL_FROM")).split()[1]
    assert str(venv) in origin, f"the notebook ran against {origin}, not the wheel"
