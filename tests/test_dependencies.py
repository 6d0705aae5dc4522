"""The runtime requirements in settings.ini are exactly what the package imports: nothing listed that nothing imports
(moviepy once was), nothing imported that is not listed (requests and scikit-image once were)."""
import ast
import configparser
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Imported by the package but deliberately not a requirement, with the reason.
NOT_REQUIRED = {
    "IPython": "viz.show_video displays a video in a notebook, where IPython always is",
}
# Required but never imported by name: the reason each is listed.
LISTED_NOT_IMPORTED = {
    "jaxlib": "jax's compiled backend; pinned beside jax",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> set:
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini", encoding="utf-8")
    return {_norm(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in cfg["DEFAULT"]["requirements"].split()}


def _imported_top_level() -> dict:
    "Top-level module name → files of the package importing it (lazy imports inside functions included)."
    found = {}
    for f in sorted((ROOT / "amtutorial").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import): names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module: names = [node.module]
            else: continue
            for n in names:
                top = n.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("amtutorial", "__future__"):
                    found.setdefault(top, set()).add(f.name)
    return found


def test_every_import_is_a_requirement():
    dists = packages_distributions()
    reqs = _requirements()
    missing = {}
    for mod, files in _imported_top_level().items():
        if mod in NOT_REQUIRED: continue
        names = {_norm(d) for d in dists.get(mod, [mod])}
        if not names & reqs: missing[mod] = sorted(files)
    assert not missing, f"imported but not in settings.ini requirements: {missing}"


def test_every_requirement_is_imported():
    dists = packages_distributions()
    imported = {_norm(d) for mod in _imported_top_level() for d in dists.get(mod, [mod])}
    unused = _requirements() - imported - {_norm(n) for n in LISTED_NOT_IMPORTED}
    assert not unused, f"listed in settings.ini requirements but imported by no module of amtutorial: {sorted(unused)}"
