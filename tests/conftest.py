"""Test-wide settings: every array annotation of the package is checked at run time (jaxtyping + beartype), and
implicit rank promotion is an error, as in equinox's own tests."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

from jaxtyping import install_import_hook

# Must run before anything imports `amtutorial`: every function and method annotated with jaxtyping shapes in the
# package is then wrapped with a beartype check.
_hook = install_import_hook("amtutorial", "beartype.beartype")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_platforms", "cpu")

import pytest  # noqa: E402


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    "A fresh, empty cache directory, used by everything `amtutorial` downloads or writes during the test."
    d = tmp_path / "cache"
    monkeypatch.setenv("AMTUTORIAL_CACHE_DIR", str(d))
    return d
