"""The `amtutorial` console script: fetch and info, through the installed entry point and in-process."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from amtutorial.cli import main
from conftest import SHARED


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


@pytest.mark.skipif(not (SHARED / "data" / "et-figs").is_dir(), reason="../shared/data/et-figs missing")
def test_fetch_from_loopback(cache_dir, http_server, capsys):
    shutil.copytree(SHARED / "data" / "et-figs", http_server.root / "et-figs")
    assert main(["fetch", "et-imgs", "--et-data-url", f"{http_server.url}/ok", "-q"]) == 0
    assert "✓ et-imgs: 11 images of 224×224" in capsys.readouterr().out
    assert len(list((cache_dir / "et-figs").glob("*.png"))) == 11


def test_inpaint_demo(cache_dir, tmp_path, capsys):
    from amtutorial.viz import read_video
    out = tmp_path / "retrieval.mp4"
    assert main(["inpaint", "--demo", "--out", str(out), "-q"]) == 0
    frames = read_video(out)
    assert frames.shape[0] == 13 and frames.shape[-1] == 3  # the masked input and each of 12 steps
    assert not np.array_equal(frames[0], frames[-1])
    assert out.with_suffix(".gif").stat().st_size > 0
    msg = capsys.readouterr().out
    psnr = float(msg.split("masked PSNR ")[1].split(" dB")[0])
    assert psnr > 14.4, msg  # above what biharmonic inpainting reaches on such masks


def test_inpaint_needs_demo(capsys):
    assert main(["inpaint"]) == 2
    assert "only --demo is available" in capsys.readouterr().err
