"""The `amtutorial` console script: fetch and info, through the installed entry point and in-process."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from amtutorial.cli import main


def run(*args, env=None):
    exe = shutil.which("amtutorial")
    assert exe, "the console script is not installed (pip install -e .)"
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=300)


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("amtutorial ")
    r = run("--help")
    assert r.returncode == 0 and "fetch" in r.stdout and "info" in r.stdout


def test_info(cache_dir, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "jax" in out and "devices" in out and str(cache_dir) in out


def test_unknown_command_and_target():
    r = run("frobnicate")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = run("fetch", "imagenet")
    assert r.returncode == 2 and "invalid choice: 'imagenet'" in r.stderr


def test_fetch_reports_each_target(cache_dir, dead_url, capsys):
    # nothing listens at dead_url: both ET targets fail with the fix in the message, exit status 1
    assert main(["fetch", "et-imgs", "et-checkpoint", "--et-data-url", dead_url, "-q"]) == 1
    err = capsys.readouterr().err
    assert "✗ et-imgs: DownloadError" in err and "✗ et-checkpoint: DownloadError" in err
    assert "place it at" in err


def test_fetch_from_loopback(cache_dir, http_server, capsys, et_figs):
    shutil.copytree(et_figs, http_server.root / "et-figs")
    assert main(["fetch", "et-imgs", "--et-data-url", f"{http_server.url}/ok", "-q"]) == 0
    assert "✓ et-imgs: 11 images of 224×224" in capsys.readouterr().out
    assert len(list((cache_dir / "et-figs").glob("*.png"))) == 11


def test_inpaint_demo(cache_dir, tmp_path, capsys):
    from amtutorial.viz import read_video
    out = tmp_path / "retrieval.mp4"
    assert main(["inpaint", "--demo", "--out", str(out), "-q"]) == 0
    frames = read_video(out)
    assert frames.shape == (17, 720, 1280, 3)  # 12 steps and the start, then 4 frames held at the end
    diff = lambda a, b: np.abs(a.astype(float) - b.astype(float)).mean()
    assert diff(frames[0], frames[12]) > 1 and diff(frames[12], frames[-1]) < 0.5  # the last frames are held
    from PIL import Image
    with Image.open(out.with_suffix(".gif")) as g: assert g.format == "GIF" and g.size == (960, 540)
    msg = capsys.readouterr().out
    psnr = float(msg.split("masked PSNR ")[1].split(" dB")[0])
    assert psnr > 14.4, msg  # above what biharmonic inpainting reaches on such masks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["retrieval.gif", "retrieval.mp4"]


def test_inpaint_gif_only_and_own_model_and_images(cache_dir, tmp_path, capsys):
    """--out x.gif writes only a GIF; --model takes a checkpoint file written by save_et, --images an npz or png."""
    from PIL import Image
    from amtutorial.data_utils import load_fashion_mnist_sample
    from amtutorial.image_et import get_pretrained_et, save_et
    save_et(get_pretrained_et().with_settings(nsteps=3), tmp_path / "mine.npz")
    imgs = load_fashion_mnist_sample()[0][100:103]
    np.savez(tmp_path / "imgs.npz", images=imgs)
    out = tmp_path / "v.gif"
    assert main(["inpaint", "--model", str(tmp_path / "mine.npz"), "--images", str(tmp_path / "imgs.npz"),
                 "--out", str(out), "-q"]) == 0
    with Image.open(out) as g: assert g.format == "GIF" and g.size == (1280, 720)
    assert not out.with_suffix(".mp4").exists()
    msg = capsys.readouterr().out
    assert "3 pictures from" in msg and "after 3 steps" in msg, msg
    np.savez(tmp_path / "f.npz", images=imgs.astype(np.float32) / 255)
    Image.fromarray(imgs[0]).save(tmp_path / "one.png")
    for src in ("f.npz", "one.png"):
        assert main(["inpaint", "--images", str(tmp_path / src), "--out", str(tmp_path / "w.gif"), "--nsteps", "2", "-q"]) == 0


def user_error(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("amtutorial: error: ") and "Traceback" not in err, err
    return lines[0]


def test_inpaint_user_errors_are_one_line(cache_dir, tmp_path, capsys):
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    np.savez(tmp_path / "three.npz", images=np.zeros((3, 28, 28), np.uint8))
    np.savez(tmp_path / "noimages.npz", pictures=np.zeros((3, 28, 28), np.uint8))
    np.savez(tmp_path / "big.npz", images=np.full((3, 28, 28), 2.0, np.float32))
    np.savez(tmp_path / "small.npz", images=np.zeros((3, 14, 14), np.uint8))
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "three.npz").read_bytes()[:200])
    v = str(tmp_path / "v.mp4")
    cases = {
        ("--n", "0", "--out", v): "--n must be at least 1",
        ("--n", "501", "--out", v): "--n 501 asks for more pictures than the 500",
        ("--images", str(tmp_path / "three.npz"), "--n", "4", "--out", v): "more pictures than the 3",
        ("--out", str(tmp_path / "v.webm")): "unknown video type '.webm'",
        ("--out", str(tmp_path / "v")): "unknown video type",
        ("--out", str(tmp_path)): "expected a name ending in .mp4",
        ("--out", str(tmp_path / "notes.csv" / "v.mp4")): "is a file, not a folder",
        ("--model", str(tmp_path / "missing.npz"), "--out", v): "neither a shipped model",
        ("--model", str(tmp_path / "notes.csv"), "--out", v): "--model: .*not an npz checkpoint",
        ("--model", str(tmp_path / "trunc.npz"), "--out", v): "--model: ",
        ("--model", str(tmp_path / "three.npz"), "--out", v): "--model: ",
        ("--images", str(tmp_path / "missing.npz"), "--out", v): "--images: no file",
        ("--images", str(tmp_path / "notes.csv"), "--out", v): "expected an .npz",
        ("--images", str(tmp_path / "noimages.npz"), "--out", v): "no array named 'images'",
        ("--images", str(tmp_path / "big.npz"), "--out", v): "in \\[0, 1\\]",
        ("--images", str(tmp_path / "small.npz"), "--out", v): "the model takes \\(n, 28, 28\\)",
        ("--images", str(tmp_path / "three.npz"), "--demo", "--out", v): "--demo",
        ("--nsteps", "0", "--out", v): "--nsteps must be at least 1",
        ("--fps", "0", "--out", v): "--fps",
        ("--alpha", "-1", "--out", v): "alpha",
    }
    import re
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, expected in cases.items():
        line = user_error(["inpaint", *args, "-q"], capsys)
        assert re.search(expected, line), (args, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_fetch_choices_have_no_stray_entry():
    r = run("fetch", "--help")
    assert "[]" not in r.stdout and "fashion-mnist, et-imgs, et-" in r.stdout
    r = run("fetch", "[]")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_train_user_errors_are_one_line(tmp_path, capsys):
    csv = tmp_path / "results.csv"
    csv.write_text("step,loss\n1,0.5\n")
    line = user_error(["train", "--steps", "2", "--out", str(csv), "-q"], capsys)
    assert "not an Energy Transformer checkpoint" in line and "refusing to overwrite" in line
    assert csv.read_text() == "step,loss\n1,0.5\n" and sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]
    assert "not a regular file" in user_error(["train", "--out", "/dev/null", "-q"], capsys)
    assert "not a regular file" in user_error(["train", "--out", str(tmp_path), "-q"], capsys)
    assert "steps must be a positive integer" in user_error(["train", "--steps", "0", "--out", str(tmp_path / "m.npz"), "-q"], capsys)
    from amtutorial.image_et import get_pretrained_et, save_et
    save_et(get_pretrained_et(), tmp_path / "model.npz")  # a checkpoint, but not a training run: kept
    assert "no training state" in user_error(["train", "--out", str(tmp_path / "model.npz"), "-q"], capsys)


def test_graph_anomaly_prints_the_table(capsys):
    assert main(["graph-anomaly", "--kinds", "structural", "--ratios", "0.1", "--seeds", "0", "--nodes", "120",
                 "--epochs", "3", "--models", "MLP", "ET", "-q"]) == 0
    out = capsys.readouterr().out
    assert "ROC-AUC" in out and "structural  0.10 ET" in out and "LogReg" not in out


def test_graph_anomaly_user_errors_are_one_line(capsys):
    assert main(["graph-anomaly", "--models", "SVM", "-q"]) == 2
    assert "--models must be among" in capsys.readouterr().err
    assert main(["graph-anomaly", "--ratios", "0.9", "--nodes", "120", "--epochs", "1", "--seeds", "0", "-q"]) == 2
    assert "ratio must be in" in capsys.readouterr().err
    assert main(["graph-anomaly", "--feature-dropout", "1", "-q"]) == 2  # refused before any graph is built
    assert "feature_dropout must be in [0, 1)" in capsys.readouterr().err
