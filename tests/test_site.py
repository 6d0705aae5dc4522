"""The website as a reader sees it: build it with tools/build_site (pandoc here, Quarto in production), serve it on
127.0.0.1 and load every page in headless Chromium. A page fails on a request that leaves the machine, a missing
local resource, a JavaScript error, a broken local link, a figure without a caption, an unresolved citation or
cross-reference, or a <video> that never becomes playable."""
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
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
                                reason="Debian's chromium and chromium-driver are not installed")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "_docs"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "build_site"), "--renderer", "pandoc", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "renderer: pandoc" in r.stdout  # it says which renderer it used
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield out, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1280,1600", "--autoplay-policy=no-user-gesture-required"]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def pages_of(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.html"))


def test_site_has_every_notebook(site):
    out, _ = site
    pages = pages_of(out)
    assert "index.html" in pages and "lib/data_utils.html" in pages
    sidebar = (ROOT / "nbs" / "sidebar.yml").read_text()
    for nb in re.findall(r"([\w./-]+\.ipynb)", sidebar):
        if (ROOT / "nbs" / nb).exists():
            page = re.sub(r"(^|/)\d+_", r"\1", nb).replace(".ipynb", ".html")
            assert page in pages or nb == "index.ipynb", f"{nb} was not rendered"


def test_every_page_in_chromium(site, browser):
    out, base = site
    shots = os.environ.get("AMTUTORIAL_SCREENSHOTS")
    problems = []
    for page in pages_of(out):
        browser.get_log("performance"), browser.get_log("browser")  # drop what earlier pages left
        browser.get(f"{base}/{page}")
        # wait for every <video> to load its metadata (readyState >= 1) with a real duration
        deadline = time.time() + 20
        while time.time() < deadline and not browser.execute_script(
                "return [...document.querySelectorAll('video')].every(v => v.readyState >= 1 && v.duration > 0)"):
            time.sleep(0.2)
        videos = browser.execute_script(
            "return [...document.querySelectorAll('video')].map(v => [v.currentSrc, v.readyState, v.duration])")
        for src, state, dur in videos:
            if not (state >= 1 and dur and dur > 0):
                problems.append(f"{page}: video {src} not playable (readyState {state}, duration {dur})")
        for entry in browser.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            method, params = msg["method"], msg.get("params", {})
            if method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                if not (url.startswith(base) or url.startswith("data:") or url.startswith("blob:")):
                    problems.append(f"{page}: request to the network: {url}")
            elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                problems.append(f"{page}: {params['response']['status']} for {params['response']['url']}")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                problems.append(f"{page}: failed to load a resource: {params.get('errorText')}")
        for entry in browser.get_log("browser"):
            if entry["level"] == "SEVERE":
                problems.append(f"{page}: console error: {entry['message']}")
        # figures carry captions; citations and cross-references are resolved
        uncaptioned = browser.execute_script(
            "return [...document.querySelectorAll('figure')].filter(f => !f.querySelector('figcaption')).length")
        if uncaptioned:
            problems.append(f"{page}: {uncaptioned} figure(s) without a caption")
        text = browser.execute_script(  # the prose: code may mention @labels in comments
            "const b = document.body.cloneNode(true); b.querySelectorAll('pre, code').forEach(e => e.remove());"
            "return b.innerText")
        for bad in re.findall(r"\?\?\?|@(?:fig|eq|tbl)-[\w-]+|\[@[\w:-]+", text):
            problems.append(f"{page}: unresolved reference {bad!r}")
        # local links point at files that exist
        for href in browser.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)"):
            u = urlparse(href)
            if href.startswith(base) and u.path:
                target = out / unquote(u.path).lstrip("/")
                if not target.exists():
                    problems.append(f"{page}: broken link {href}")
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(Path(shots) / (page.replace("/", "__") + ".png")))
    assert not problems, "\n".join(problems)
