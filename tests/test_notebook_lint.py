"""What only Quarto would render, checked on the notebooks themselves: figure cells have labels and captions,
cross-references and citations resolve, links between notebooks work, every notebook is on the site, and the
notebooks are committed clean and executed. Plus: README.md is what nbs/index.ipynb generates."""
import importlib.machinery
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
_loader = importlib.machinery.SourceFileLoader("build_site", str(ROOT / "tools" / "build_site"))
_spec = importlib.util.spec_from_loader("build_site", _loader)
bs = importlib.util.module_from_spec(_spec)
_loader.exec_module(bs)

NOTEBOOKS = sorted(p for p in NBS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
BIB_KEYS = set(re.findall(r"^@\w+\{([^,\s]+),", (NBS / "references.bib").read_text(), re.M))
CROSSREF = ("fig-", "eq-", "tbl-", "sec-")


def load(nb):
    return json.loads(nb.read_text())


def prose(nb):
    "The markdown of a notebook without code blocks and inline code (where @ is not a citation)."
    text = "\n\n".join(bs.src_of(c) for c in load(nb)["cells"] if c["cell_type"] == "markdown")
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def citations(text):
    return set(re.findall(r"(?<![\w.@/])@([A-Za-z][\w:.-]*[\w])", text))


def ids(nb):
    "The labels a notebook defines: figure labels of code cells, {#eq-…} anchors, {#sec-…} headings."
    out = []
    for c in load(nb)["cells"]:
        s = bs.src_of(c)
        if c["cell_type"] == "code":
            lab = bs.directives(s).get("label")
            if lab: out.append(lab)
        else:
            out += re.findall(r"\{#((?:eq|sec|tbl|fig)-[\w-]+)\}", s)
    return out


def nb_id(nb):
    return str(nb.relative_to(NBS))


def test_bibliography_parses():
    assert len(BIB_KEYS) >= 10


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=nb_id)
def test_citations_resolve(nb):
    keys = {k for k in citations(prose(nb)) if not k.startswith(CROSSREF)}
    assert not keys - BIB_KEYS, f"citation keys missing from nbs/references.bib: {sorted(keys - BIB_KEYS)}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=nb_id)
def test_cross_references_resolve(nb):
    labels = ids(nb)
    assert len(labels) == len(set(labels)), f"duplicate labels: {sorted(l for l in labels if labels.count(l) > 1)}"
    refs = {k for k in citations(prose(nb)) if k.startswith(CROSSREF)}
    assert not refs - set(labels), f"unresolved cross-references: {sorted(refs - set(labels))}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=nb_id)
def test_figures_have_label_and_caption(nb):
    bad = []
    for i, c in enumerate(load(nb)["cells"]):
        if c["cell_type"] != "code": continue
        d = bs.directives(bs.src_of(c))
        makes_image = any(k.startswith("image/") for o in c.get("outputs", []) for k in o.get("data", {}))
        labelled = d.get("label", "").startswith("fig-")
        if (makes_image and not bs.hidden(d)) or labelled:
            if not (labelled and d.get("fig-cap")):
                bad.append(f"cell {i}: {bs.src_of(c)[:60]!r}")
    assert not bad, "figure cells without '#| label: fig-…' and '#| fig-cap: …':\n" + "\n".join(bad)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=nb_id)
def test_links_between_notebooks_resolve(nb):
    links = re.findall(r"\]\(([^)\s#:]+\.ipynb)(?:#[^)]*)?\)", prose(nb))
    missing = [l for l in links if not (nb.parent / l).exists()]
    assert not missing, f"links to notebooks that do not exist: {missing}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=nb_id)
def test_notebook_clean_titled_and_executed(nb):
    cells = load(nb)["cells"]
    counts = [c.get("execution_count") for c in cells if c["cell_type"] == "code"]
    assert all(n is None for n in counts), "notebook not cleaned: run nbdev_clean"
    first = bs.src_of(cells[0])
    assert cells[0]["cell_type"] == "markdown" and first.startswith("# "), "first cell must be '# Title'"
    if nb.name != "index.ipynb":
        assert re.search(r"^> \S", first, re.M), "the title cell needs a '> description' line"
        code = [bs.src_of(c) for c in cells if c["cell_type"] == "code"]
        assert code and "default_exp" in bs.directives(code[0]), "first code cell must be '#| default_exp <module>'"
        shown = [c for c in cells if c["cell_type"] == "code" and not bs.hidden(bs.directives(bs.src_of(c)))
                 and not bs.src_of(c).lstrip().startswith("#| export")]
        if shown:
            assert any(c.get("outputs") for c in shown), "notebook has no outputs: execute it (tools/execute_nbs)"


def test_every_notebook_is_on_the_site():
    listed = set(re.findall(r"([\w./-]+\.ipynb)", (NBS / "sidebar.yml").read_text()))
    on_disk = {nb_id(nb) for nb in NOTEBOOKS}
    assert on_disk <= listed, f"notebooks missing from nbs/sidebar.yml: {sorted(on_disk - listed)}"


def test_quarto_config_is_one_file():
    top = ROOT / "_quarto.yml"
    assert top.is_symlink() and top.resolve() == (NBS / "_quarto.yml").resolve()
    assert "html-math-method: mathml" in (NBS / "_quarto.yml").read_text()


def test_readme_is_generated_from_index():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "build_readme"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
