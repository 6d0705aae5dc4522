"""The website as a reader sees it: build it with tools/build_site (pandoc here, Quarto in production), serve it on
127.0.0.1 and load every page in headless Chromium.

A page fails on: a request that leaves the machine or a local resource that is missing, a console error, a <video>
that does not play, an <img> without alt text, a link (or #anchor) that leads nowhere, a figure without a caption,
an unresolved citation or cross-reference, a heading missing from the table of contents, a chapter missing from
the sidebar or a missing previous/next link, and build-machine debris in the text: absolute paths of the build
machine, Python tracebacks, progress bars, raw TeX outside maths, "0.0 s" timings, bare numbers left by a cell.

Needs Debian's `chromium` and `chromium-driver`; without them the test fails (it never skips). Set
AMTUTORIAL_SCREENSHOTS=folder to keep a full-page screenshot of every page."""
import base64
import importlib.machinery
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
_loader = importlib.machinery.SourceFileLoader("build_site", str(ROOT / "tools" / "build_site"))
bs = importlib.util.module_from_spec(importlib.util.spec_from_loader("build_site", _loader))
_loader.exec_module(bs)


# what a reader must never see on a page
MACHINE_PATH = re.compile(r"(?<![\w.:/-])/(?:work|root|tmp|home)/")
TRACEBACK = "Traceback (most recent call last)"
TQDM = re.compile(r"\d{1,3}%\|.*\|\s*[\d.]+[kMGT]?/[\d.?]+[kMGT]?\s*\[")
RAW_TEX = re.compile(r"\$[^$\s][^$\n]{0,200}?\$|\\(?:[A-Za-z]{2,}|_)\b|\$E_")
ZERO_TIMING = re.compile(r"(?<![\d.])0\.0 ?s\b")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "_docs"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "build_site"), "--renderer", "pandoc", "--out", str(out),
                        "--keep-sidebar"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "renderer: pandoc" in r.stdout  # it says which renderer it used
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield out, f"http://127.0.0.1:{server.server_port}", r.stdout
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory, start_chromium):
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"), "to check the website",
                            ["--disable-quic", "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                             "--hide-scrollbars", "--mute-audio", "--autoplay-policy=no-user-gesture-required"],
                            logs=("browser", "performance"))
    yield driver
    driver.quit()


def pages_of(out):
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html"))


def expected_pages():
    return ["index.html" if nb.name == "index.ipynb" and nb.parent == bs.NBS else bs.page_name(nb)
            for nb in bs.chapters()]


def test_sidebar_is_the_notebooks_present():
    "nbs/sidebar.yml (Quarto) lists the chapters by the same rule as the pandoc build: run tools/build_site --sidebar."
    assert (ROOT / "nbs" / "sidebar.yml").read_text() == bs.sidebar_yml(), \
        "nbs/sidebar.yml is stale: run tools/build_site --sidebar and commit it"
    chapters = [nb.relative_to(bs.NBS).as_posix() for nb in bs.chapters()]
    on_disk = sorted(p.relative_to(bs.NBS).as_posix() for p in bs.NBS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    assert sorted(chapters) == on_disk and chapters[0] == "index.ipynb"
    quarto = (ROOT / "nbs" / "_quarto.yml").read_text()  # the production site has the same structure
    assert (ROOT / "_quarto.yml").is_symlink() and "sidebar.yml" in quarto
    for option in ("page-navigation: true", "toc: true", "toc-depth: 3", "html-math-method: mathml"):
        assert option in quarto, f"nbs/_quarto.yml lacks {option!r}"


def test_site_has_every_chapter(site):
    out, _, log = site
    assert pages_of(out) == sorted(expected_pages())
    assert "[WARNING]" not in log and "Could not convert TeX" not in log, log


def _page_text(browser):
    "The rendered prose of the page: without code, maths, scripts and styles."
    return browser.execute_script(
        "const b = document.querySelector('main').cloneNode(true);"
        "b.querySelectorAll('pre, code, math, script, style').forEach(e => e.remove());"
        "return b.innerText")


def _videos_play(browser, timeout=20):
    "Start every <video>; [(src, readyState, duration, currentTime)] of those that did not play."
    browser.execute_script("document.querySelectorAll('video').forEach(v => { v.muted = true; v.play().catch(() => {}); })")
    deadline = time.time() + timeout
    check = ("return [...document.querySelectorAll('video')].filter(v => !(v.readyState >= 2 && v.duration > 0 "
             "&& v.currentTime > 0)).map(v => [v.currentSrc.slice(0, 80), v.readyState, v.duration, v.currentTime])")
    bad = browser.execute_script(check)
    while bad and time.time() < deadline:
        time.sleep(0.25)
        bad = browser.execute_script(check)
    return bad


def _screenshot(browser, dest):
    "A full-page screenshot (capped at 20 000 px)."
    h = min(browser.execute_script("return document.documentElement.scrollHeight"), 20000)
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 1400, "height": h, "deviceScaleFactor": 1, "mobile": False})
    png = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    Path(dest).write_bytes(base64.b64decode(png))


def test_every_page_in_chromium(site, browser):
    out, base, _ = site
    shots = os.environ.get("AMTUTORIAL_SCREENSHOTS")
    pages = pages_of(out)
    problems, anchors, ids, summary = [], [], {}, []
    browser.get("about:blank")  # let the browser's own start-up requests pass before the first page
    for page in pages:
        browser.get_log("performance"), browser.get_log("browser")  # drop what earlier pages left
        browser.get(f"{base}/{page}")
        for src, state, dur, t in _videos_play(browser):
            problems.append(f"{page}: video {src} does not play (readyState {state}, duration {dur}, time {t})")
        # every request stays on this machine and succeeds
        for entry in browser.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            method, params = msg["method"], msg.get("params", {})
            if method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                if url.startswith(("http:", "https:", "ws:", "wss:", "ftp:")) and not url.startswith(base):
                    problems.append(f"{page}: request to the network: {url[:100]}")
            elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                problems.append(f"{page}: {params['response']['status']} for {params['response']['url']}")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                problems.append(f"{page}: failed to load a resource: {params.get('errorText')}")
        for entry in browser.get_log("browser"):
            if entry["level"] == "SEVERE":
                problems.append(f"{page}: console error: {entry['message'][:200]}")
        # every resource named by the page exists on disk (also those the browser did not fetch yet)
        for url in browser.execute_script(
                "return [...document.querySelectorAll('[src], link[href], source[src]')].map(e => e.src || e.href)"):
            if url.startswith(base):
                if not (out / unquote(urlparse(url).path).lstrip("/")).is_file():
                    problems.append(f"{page}: missing resource {url}")
            elif not url.startswith(("data:", "blob:")):
                problems.append(f"{page}: resource from outside the site: {url[:100]}")
        for tag in browser.execute_script(
                "return [...document.querySelectorAll('img')].filter(i => !(i.getAttribute('alt') || '').trim())"
                ".map(i => i.outerHTML.slice(0, 100))"):
            problems.append(f"{page}: image without alt text: {tag}")
        # links: collected here, checked once every page's anchors are known
        ids[page] = set(browser.execute_script(
            "return [...document.querySelectorAll('[id]')].map(e => e.id)"
            ".concat([...document.querySelectorAll('a[name]')].map(a => a.name))"))
        for href in browser.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)"):
            if href.startswith(base):
                anchors.append((page, href))
        # figures carry captions; citations, cross-references and the reference list resolve
        uncaptioned = browser.execute_script(
            "return [...document.querySelectorAll('figure')].filter(f => !f.querySelector('figcaption')).length")
        if uncaptioned:
            problems.append(f"{page}: {uncaptioned} figure(s) without a caption")
        text = _page_text(browser)
        for bad in re.findall(r"\?\?\?|@(?:fig|eq|tbl|sec)-[\w-]+|\[@[\w:-]+", text):
            problems.append(f"{page}: unresolved reference {bad!r}")
        cites = browser.execute_script(
            "return [...document.querySelectorAll('.citation')].flatMap(c => (c.dataset.cites || '').split(' '))")
        for key in sorted(set(cites)):
            if f"ref-{key}" not in ids[page]:
                problems.append(f"{page}: citation {key} is not in the page's References")
        if cites and not browser.execute_script(
                "const h = [...document.querySelectorAll('main h2')].map(h => h.textContent.trim());"
                "return h.includes('References') && !!document.querySelector('#refs .csl-entry')"):
            problems.append(f"{page}: cites the literature but has no References section")
        # the table of contents lists every heading of the text (callout titles are not headings)
        missing = browser.execute_script(
            "const toc = new Set([...document.querySelectorAll('nav.toc a')].map(a => a.getAttribute('href')));"
            "return [...document.querySelectorAll('main h2[id], main h3[id]')]"
            ".filter(h => !h.closest('.callout') && !toc.has('#' + h.id)).map(h => h.textContent.trim())")
        for h in missing:
            problems.append(f"{page}: heading {h!r} is not in the table of contents")
        # navigation: every chapter in the sidebar, previous/next links
        side = {urlparse(h).path.lstrip("/") for h in browser.execute_script(
            "return [...document.querySelectorAll('nav.sidebar a')].map(a => a.href)")}
        if side != set(expected_pages()):
            problems.append(f"{page}: sidebar lists {sorted(side)}, not every chapter")
        order = expected_pages()
        want = {"prev"} if page == order[-1] else {"next"} if page == order[0] else {"prev", "next"}
        have = set(browser.execute_script("return [...document.querySelectorAll('nav.pagenav a')].map(a => a.className)"))
        if have != want:
            problems.append(f"{page}: previous/next links {sorted(have)}, expected {sorted(want)}")
        # build-machine debris
        full = browser.execute_script("return document.body.innerText")
        source = re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+", "data:", (out / page).read_text())
        for where, s in (("text", full), ("HTML", source)):
            for m in set(MACHINE_PATH.findall(s)):
                problems.append(f"{page}: the {where} contains a path of the build machine ({m}…)")
        if TRACEBACK in full:
            problems.append(f"{page}: a Python traceback")
        for line in full.splitlines():
            if TQDM.search(line):
                problems.append(f"{page}: a progress bar: {line.strip()[:100]!r}")
        for line in text.splitlines():
            if line.strip().startswith(":::"):
                problems.append(f"{page}: a fenced div that did not render (unbalanced ':::'?): {line.strip()[:60]!r}")
        for m in RAW_TEX.findall(text):
            problems.append(f"{page}: raw TeX outside maths: {m!r}")
        for m in ZERO_TIMING.findall(text + "\n".join(browser.execute_script(
                "return [...document.querySelectorAll('pre.cell-output')].map(p => p.innerText)"))):
            problems.append(f"{page}: a timing of {m!r} (build-machine output)")
        for v in browser.execute_script(
                "return [...document.querySelectorAll('pre.cell-output-display')].map(p => p.innerText.trim())"
                ".filter(t => /^-?\\d+$/.test(t))"):
            problems.append(f"{page}: a stray return value {v!r}")
        summary.append((page, browser.execute_script(
            "const code = [...document.querySelectorAll('main div.sourceCode')];"
            "return [document.documentElement.scrollHeight, code.filter(e => e.checkVisibility()).length,"
            " code.filter(e => !e.checkVisibility()).length, document.querySelectorAll('main figure').length]")))
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            _screenshot(browser, Path(shots) / (page.replace("/", "__") + ".png"))
    for page, href in anchors:
        u = urlparse(href)
        target = unquote(u.path).lstrip("/") or "index.html"
        if target.endswith("/"):
            target += "index.html"
        if not (out / target).is_file():
            problems.append(f"{page}: broken link {href}")
        elif u.fragment and target in ids and unquote(u.fragment) not in ids[target]:
            problems.append(f"{page}: link to a missing anchor {href}")
    table = "\n".join(f"{p:40s} {h:6d} px  {shown:3d} code blocks shown, {folded:3d} folded, {figs:2d} figures"
                      for p, (h, shown, folded, figs) in summary)
    if shots:
        (Path(shots) / "summary.txt").write_text(table + "\n")
    print(table)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


def test_readme_links_resolve():
    "README.md is read at the top of the repository (GitHub, PyPI): its relative links and images exist there."
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'\b(?:src|href)="([^"]+)"', text)
    relative = [t.split("#")[0] for t in targets if not re.match(r"^(?:[A-Za-z][\w+.-]*:|#)", t)]
    assert relative, "the README links no chapter"
    assert not [t for t in relative if t.startswith(("/", ".."))], "the README points outside the repository"
    missing = [t for t in relative if not (ROOT / unquote(t)).exists()]
    assert not missing, f"README links that do not resolve from the repository root: {missing}"
    assert "../shared" not in text


def _nb(*cells):
    out = []
    for kind, src, *outs in cells:
        c = {"cell_type": kind, "metadata": {}, "source": src}
        if kind == "code":
            c.update(execution_count=None, outputs=outs[0] if outs else [])
        out.append(c)
    return {"cells": out, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_renderer_features(tmp_path, monkeypatch):
    "Quarto's notebook features in the pandoc build: callouts (collapsed too, around code cells), code-fold, echo, hide."
    nbs = tmp_path / "nbs"
    (nbs / "tutorial").mkdir(parents=True)
    for f in ("references.bib", "styles.css", "favicon.svg", "nbdev.yml"):
        shutil.copy(ROOT / "nbs" / f, nbs / f)
    (nbs / "index.ipynb").write_text(json.dumps(_nb(("markdown", "# Home\n\nSee [the chapter](tutorial/00_demo.ipynb)."))))
    stream = lambda text, name="stdout": {"output_type": "stream", "name": name, "text": text}
    demo = _nb(
        ("markdown", "# Demo\n\n> A page.\n\n## First\n\nText with $E_\\beta$ [@hopfield1982neural].\n\n$$\na = b\n$$\n\n"
                     "and, numbered,\n\n$$\nc = d\n$$ {#eq-cd}\n\nas @eq-cd says, unlike @eq-elsewhere."),
        ("code", "#| default_exp demo\nimport os"),
        ("code", "#| hide\nsecret_hidden_cell = 1"),
        ("code", "#| code-fold: true\n#| code-summary: Show the plot code\nfolded_code = 2", [stream("folded output\n")]),
        ("code", "#| echo: false\nnot_echoed = 3", [stream("echo-false output\n")]),
        ("code", "#| warning: true\nloop = 4", [stream("\r 50%|#####     | 1/2 [00:01<00:01, 1.0it/s]\r100%|##########| "
                                                      "2/2 [00:02<00:00, 1.0it/s]\nkept warning\n", "stderr"), stream("kept line\n")]),
        ("code", "quiet = 6", [stream("dropped warning\n", "stderr")]),
        ("code", "#| echo: false\n#| output: asis\nprint('...')", [stream("Printed **as markdown**\n")]),
        ("markdown", '::: {.callout-tip collapse="true"}\n## Checks of the above'),
        ("code", "assert_inside_callout = 5", [stream("checked\n")]),
        ("markdown", ":::\n\n::: {.callout-note}\nA plain note.\n:::\n\n### Later heading\n\nMore."),
    )
    (nbs / "tutorial" / "00_demo.ipynb").write_text(json.dumps(demo))
    monkeypatch.setattr(bs, "NBS", nbs)
    out = tmp_path / "site"
    bs.render_pandoc(out, bs.chapters())
    page = (out / "tutorial" / "demo.html").read_text()
    assert "secret_hidden_cell" not in page and "default_exp" not in page
    assert re.search(r'<details class="code-fold">\s*<summary>\s*Show the plot code\s*</summary>', page)
    assert "folded_code" in page and "folded output" in page
    assert "not_echoed" not in page and "echo-false output" in page
    assert "it/s" not in page and "kept line" in page and "kept warning" in page
    assert "Printed <strong>as markdown</strong>" in page
    assert "dropped warning" not in page  # nbs/_quarto.yml says `warning: false`: stderr only where a cell asks
    m = re.search(r'<details class="callout callout-tip">(.*?)</details>', page, re.S)
    assert m and "Checks of the above" in m.group(1) and "assert_inside_callout" in m.group(1) and "checked" in m.group(1)
    assert '<div class="callout callout-note">' in page and "A plain note." in page
    toc = re.search(r'<nav class="toc".*?</nav>', page, re.S).group(0)
    assert "First" in toc and "Later heading" in toc and "Checks of the above" not in toc
    assert re.search(r'<span id="eq-cd" class="equation">', page) and '<a href="#eq-cd">Equation 1</a>' in page
    assert "?@eq-elsewhere" in page  # a label of another page: shown unresolved, as Quarto does, not a citation
    assert "<math" in page and "$E_" not in page and 'id="ref-hopfield1982neural"' in page
    assert 'href="../index.html"' in page and 'href="tutorial/demo.html">the chapter' in (out / "index.html").read_text()


@pytest.mark.parametrize("page", ["index.html", "lib/web_demo.html", "tutorial/image_et.html"])
def test_the_et_widget_retrieves_like_the_package(site, browser, page):
    import numpy as np
    from amtutorial.data_utils import load_fashion_mnist_sample
    from amtutorial.image_et import get_pretrained_et, reconstruct, reference_masks
    from amtutorial.metrics import masked_psnr
    out, url, _ = site
    browser.get_log("browser")  # drop what earlier pages left
    browser.get(f"{url}/{page}")
    deadline = time.time() + 30
    while not browser.execute_script("const w = document.querySelector('.et-demo'); return !!(w && w.etDemo)"):
        assert time.time() < deadline, f"the widget did not start on {page}"
        time.sleep(0.2)
    model = get_pretrained_et()
    pic = 3
    mask = reference_masks(1, model.config, seed=77)[0]
    res = browser.execute_script("""
        const w = document.querySelector('.et-demo').etDemo;
        w.setPicture(arguments[0]); w.setMask(arguments[1]);
        const r = w.play(); return {psnr: r.psnr, energies: r.energies};""", pic, mask.tolist())
    x = load_fashion_mnist_sample()[0][pic:pic + 1].astype(np.float32) / 255
    hid = np.asarray(model.config.patcher.pixel_mask(mask[None]))
    want = float(masked_psnr(reconstruct(model, x, mask[None]), x, hid)[0])
    print(f"{page} widget: PSNR {res['psnr'][-1]:.4f} dB after {len(res['energies']) - 1} steps; package {want:.4f} dB")
    assert abs(res["psnr"][-1] - want) < 1e-3 and np.all(np.diff(res["energies"]) < 0)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
