"""amtutorial.web_demo: the JavaScript descent agrees with the package's, step by step, in headless Chromium.

Needs Debian's `chromium` and `chromium-driver`; without them the test fails with a message naming them (it never
skips)."""
import json

import jax
import numpy as np
import pytest

from amtutorial.data_utils import load_fashion_mnist_sample
from amtutorial.image_et import get_pretrained_et, reference_masks
from amtutorial.web_demo import browser_model, write_browser_demo

N_PICS = 8


@pytest.fixture(scope="module")
def page(tmp_path_factory, start_chromium):
    d = tmp_path_factory.mktemp("web-demo")
    write_browser_demo(d, n_images=N_PICS)
    (d / "index.html").write_text('<!doctype html><meta charset="utf-8"><script src="et-demo-model.js"></script>'
                                  '<script src="et-demo.js"></script><p id="ok">loaded</p>')
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"), "to run the JavaScript ET")
    driver.get((d / "index.html").as_uri())  # from disk: no server, as a reader's saved copy of the site
    yield driver
    driver.quit()


def test_page_loads_without_console_errors(page):
    assert page.execute_script("return typeof ETDemo === 'function' && typeof ET_DEMO_MODEL === 'object'")
    errors = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_javascript_descent_matches_the_package(page):
    model = get_pretrained_et()
    pics = load_fashion_mnist_sample()[0][:N_PICS].astype(np.float32) / 255
    masks = reference_masks(N_PICS, model.config, seed=4242)
    images = model.normalize(pics[..., None])
    traj, E = jax.vmap(lambda im, m: model.inpaint_trajectory(im, m, keep_visible=True))(images, masks)
    traj, E = np.asarray(traj)[..., 0], np.asarray(E, np.float64)
    out = page.execute_script("""
        const et = new ETDemo(ET_DEMO_MODEL), res = [];
        for (const [im, mask] of arguments[0]) {
          const r = et.inpaint(Float64Array.from(im), mask);
          res.push({images: r.images.map(a => Array.from(a)), energies: r.energies});
        }
        return res;""", [[np.asarray(images[i]).ravel().tolist(), masks[i].tolist()] for i in range(N_PICS)])
    js_imgs = np.array([r["images"] for r in out]).reshape(traj.shape)
    js_E = np.array([r["energies"] for r in out])
    err_img, err_E = np.abs(js_imgs - traj).max(), (np.abs(js_E - E) / np.abs(E)).max()
    print(f"JS vs package over {N_PICS} pictures x 13 states: max |image diff| {err_img:.2e}, "
          f"max relative energy diff {err_E:.2e}")
    assert err_img <= 1e-4 and err_E <= 1e-4


def test_javascript_descent_is_fast(page):
    ms = page.execute_script("""
        const et = new ETDemo(ET_DEMO_MODEL), n = et.side * et.side;
        const raw = atob(ET_DEMO_MODEL.images), px = new Float64Array(n);  // a held-out picture
        for (let i = 0; i < n; i++) px[i] = raw.charCodeAt(i) / 255;
        const im = et.normalize(px), mask = Array.from({length: et.K}, (_, k) => k % 2 === 0);
        et.inpaint(im, mask);  // warm up the JIT
        const times = [];
        for (let i = 0; i < 25; i++) { const t0 = performance.now(); et.inpaint(im, mask); times.push(performance.now() - t0); }
        times.sort((a, b) => a - b); return [times[0], times[12]];""")
    # the fastest run is the machine's speed; the median also counts other tests sharing the CPU (pytest -n 2)
    print(f"12 steps of one 28x28 picture in Chromium: fastest {ms[0]:.1f} ms, median {ms[1]:.1f} ms of 25 runs")
    assert ms[0] < 100


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_images must be"):
        browser_model(n_images=501)
    with pytest.raises(NotADirectoryError, match="out_dir"):
        write_browser_demo(tmp_path / "missing")
    (tmp_path / "et-demo-model.js").write_text("not ours")
    with pytest.raises(FileExistsError, match="not overwriting"):
        write_browser_demo(tmp_path)
    assert (tmp_path / "et-demo-model.js").read_text() == "not ours"
