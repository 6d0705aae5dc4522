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
from hypothesis import settings as _hypothesis_settings  # noqa: E402

# Hypothesis loads a derandomized "ci" profile by itself when the CI variable is set; property tests here must see
# fresh random draws on every run, in CI too (known hard cases are pinned with @example in the tests).
_hypothesis_settings.register_profile("fresh", derandomize=False, print_blob=True)
_hypothesis_settings.load_profile("fresh")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    "A fresh, empty cache directory, used by everything `amtutorial` downloads or writes during the test."
    d = tmp_path / "cache"
    monkeypatch.setenv("AMTUTORIAL_CACHE_DIR", str(d))
    return d


# --- a loopback HTTP server for download tests -------------------------------------------------------------------
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402


class _FaultyHandler(BaseHTTPRequestHandler):
    """Serves files of `server.root`. The first path segment picks the behaviour:
    /ok/<f> the file; /drop/<f> promises the whole file, sends half, then drops the connection;
    /trunc/<f> a well-formed response holding only the first half; /404/<f> and /500/<f> those statuses."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        _, mode, name = self.path.split("/", 2)
        if mode in ("404", "500"):
            self.send_error(int(mode))
            return
        f = self.server.root / name
        if not f.is_file():
            self.send_error(404)
            return
        body = f.read_bytes()
        half = body[: len(body) // 2]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(half) if mode == "trunc" else len(body)))
        self.end_headers()
        if mode == "ok":
            self.wfile.write(body)
        elif mode == "trunc":
            self.wfile.write(half)
        elif mode == "drop":
            self.wfile.write(half)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)


@pytest.fixture
def http_server(tmp_path):
    "A loopback HTTP server (127.0.0.1) serving the files put in `server.root`, with fault modes (see above)."
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FaultyHandler)
    server.root, server.requests = root, []
    server.url = f"http://127.0.0.1:{server.server_port}"
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def dead_url():
    "An http URL on 127.0.0.1 where nothing listens."
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


SHARED = Path(__file__).resolve().parents[2] / "shared"
ET_FIGS = SHARED / "data" / "et-figs"


@pytest.fixture
def et_figs():
    "The folder of the ET paper's eleven demo pictures, `../shared/data/et-figs` beside the checkout; a test that needs it fails (never skips) where it is absent."
    from amtutorial.data_utils import ET_IMG_SHA256
    missing = [n for n in ET_IMG_SHA256 if not (ET_FIGS / n).is_file()]
    if missing:
        pytest.fail(f"the ET paper's demo pictures are needed in {ET_FIGS} (the project's shared data, beside the "
                    f"checkout; CI has it there): {len(missing)} of {len(ET_IMG_SHA256)} missing, e.g. {missing[0]}")
    return ET_FIGS


# --- headless Chromium, for the tests of the website and of the JavaScript ET -------------------------------------
import shutil  # noqa: E402

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and Path(p).exists()), None)
CHROMEDRIVER = next((p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver")) if p and Path(p).exists()), None)


@pytest.fixture(scope="session")
def start_chromium():
    """A function `(profile_dir, why, extra_args=(), logs=("browser",))` that starts a selenium driver for headless
    Chromium with a fresh profile in `profile_dir`; where Chromium is absent the test fails (never skips) with a
    message saying what it is needed for (`why`) and which Debian packages to install. The caller quits it."""
    def start(profile_dir, why, extra_args=(), logs=("browser",)):
        if not (CHROMIUM and CHROMEDRIVER):
            pytest.fail(f"headless Chromium is needed {why}: install Debian's packages `chromium` and "
                        "`chromium-driver` (sudo apt-get install chromium chromium-driver)")
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                  "--disable-background-networking", f"--user-data-dir={profile_dir}", *extra_args]:
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {log: "ALL" for log in logs})
        return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    return start


# --- no test may skip: a resource a test needs and cannot find fails the test with a message naming it -------------
_SKIPPED = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED:
        terminalreporter.write_line(f"{len(_SKIPPED)} tests skipped, and no test may skip here: {_SKIPPED[:5]}", red=True)


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED and exitstatus == 0:
        session.exitstatus = 1
