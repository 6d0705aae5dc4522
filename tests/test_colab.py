"""Colab notebooks: colab/ is what tools/export_colab generates, the first cell installs *this* package and refuses
another one of the same name, and one exported notebook runs top to bottom in a fresh kernel against the locally
built wheel (in a new virtual environment, not this checkout's package)."""
import configparser
import importlib.machinery
import importlib.util
import json
import os
import re
import site
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the chapter run end to end from its Colab copy (the site's centrepiece when it exists)
COLAB_NB = next((n for n in ["01_energy_transformer.ipynb", "00_dense_storage.ipynb"]
                 if (ROOT / "colab" / n).exists()), None)


def _export_colab():
    "tools/export_colab as a module (it has no .py suffix)."
    loader = importlib.machinery.SourceFileLoader("export_colab", str(ROOT / "tools" / "export_colab"))
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader("export_colab", loader))
    loader.exec_module(mod)
    return mod


def _git_url():
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini", encoding="utf-8")
    return cfg["DEFAULT"]["git_url"]


def test_colab_copies_up_to_date():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "export_colab"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for nb in (ROOT / "colab").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        first = "".join(code[0]["source"])
        assert '%pip install -q "amtutorial>=0.1"' in first, nb.name
        assert f"git+{_git_url()}" in first, nb.name  # the documented alternative
        assert "amtutorial.__version__" in first or '"__version__"' in first, nb.name
        assert all(not c["outputs"] for c in code), f"{nb.name} has outputs"


def _run_first_cell(tmp_path, version):
    """Run the Colab install cell (without its `%pip` line) where `import amtutorial` finds a stand-in package
    with `__version__ = version` (None: no version attribute, as a foreign package may have)."""
    pkg = tmp_path / "site" / "amtutorial"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("" if version is None else f"__version__ = {version!r}\n")
    code = re.sub(r"(?m)^%pip .*$", "", _export_colab().install_cell_source())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)


@pytest.mark.parametrize("version", ["0.0.9", "0.0.1", None])
def test_first_cell_refuses_the_other_amtutorial(tmp_path, version):
    r = _run_first_cell(tmp_path, version)
    assert r.returncode != 0
    msg = r.stderr.splitlines()[-1]
    assert msg.startswith("RuntimeError: This notebook needs amtutorial>=0.1"), r.stderr[-2000:]
    assert f"imported amtutorial {version or '(no version)'}" in msg
    assert '%pip install -U "amtutorial>=0.1"' in msg
    assert _git_url() in msg and "Restart session" in msg


@pytest.mark.parametrize("version", ["0.1.0", "0.2", "1.0.0.dev3"])
def test_first_cell_accepts_this_package(tmp_path, version):
    r = _run_first_cell(tmp_path, version)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"amtutorial {version} is ready" in r.stdout


def _site_dirs():
    "The folders this interpreter imports installed packages from (a venv's own and, if it sees them, the base's)."
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE: dirs.append(site.getusersitepackages())
    dirs.append(sysconfig.get_paths()["purelib"])
    return list(dict.fromkeys(d for d in dirs if Path(d).is_dir()))


@pytest.mark.skipif(COLAB_NB is None, reason="no tutorial notebook exported yet")
def test_colab_notebook_runs_against_wheel(tmp_path):
    wheel_dir = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(wheel_dir), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wheel = next(wheel_dir.glob("amtutorial-*.whl"))
    # A new environment that sees the packages of the one running this test (execnb, jax, ...) but imports
    # amtutorial from the wheel. `venv --system-site-packages` is not enough: run from a virtual environment, it
    # sees the *base* interpreter's packages, not the venv's. So the new environment adds this interpreter's
    # site folders itself, after its own (its own site-packages, holding the wheel, comes first on sys.path).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # The wheel goes in first, while the new environment sees nothing else: once it sees this one's packages, pip
    # would find this checkout's amtutorial (same version) already installed and skip the wheel. --ignore-installed
    # never uninstalls anything from the outer environment.
    pip_args = ["install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)]
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), *pip_args], capture_output=True, text=True)
    (purelib / "_outer_env.pth").write_text(
        "".join(f"import site; site.addsitedir({d!r})\n" for d in _site_dirs()))
    if r.returncode != 0:  # pip older than 22.3 has no --python: use the copy of pip the new environment now sees
        r = subprocess.run([str(py), "-m", "pip", *pip_args], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (purelib / "amtutorial" / "__init__.py").is_file(), "the wheel was not installed in the new environment"
    work = tmp_path / "work"
    work.mkdir()
    script = textwrap.dedent(f"""
        import re
        from execnb.nbio import read_nb
        from execnb.shell import CaptureShell
        nb = read_nb({str(ROOT / 'colab' / COLAB_NB)!r})
        # Colab runs the `%pip install` line; here the wheel is already installed in this fresh environment, so
        # the line goes and the rest of the first cell (the version check) runs
        for c in nb.cells:
            if c.cell_type == 'code': c.source = re.sub(r'(?m)^%pip .*$', '', c.source)
        sh = CaptureShell()
        sh.run_all(nb, exc_stop=True, preproc=lambda c: c.cell_type != 'code')
        import sys
        import amtutorial
        print('AMTUTORIAL_FROM', amtutorial.__file__, amtutorial.__version__)
        print('AMTUTORIAL_MODULES', *sorted({{m.__file__ for n, m in list(sys.modules.items())
                                            if n.split('.')[0] == 'amtutorial' and getattr(m, '__file__', None)}}))
    """)
    env = {**os.environ, "AMTUTORIAL_CACHE_DIR": str(tmp_path / "cache"), "MPLBACKEND": "Agg"}
    env.pop("PYTHONPATH", None)
    r = subprocess.run([str(py), "-c", script], cwd=work, capture_output=True, text=True, timeout=1200, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    origin = next(l for l in r.stdout.splitlines() if l.startswith("AMTUTORIAL_FROM")).split()[1]
    assert str(venv) in origin, f"the notebook ran against {origin}, not the wheel"
    modules = next(l for l in r.stdout.splitlines() if l.startswith("AMTUTORIAL_MODULES")).split()[1:]
    assert len(modules) > 1 and all(m.startswith(str(venv)) for m in modules), modules
