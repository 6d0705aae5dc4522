"""Figures and videos: tiling, streamed encoding, caching, atomic writes, embedding, bad inputs."""
import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from amtutorial import viz
from amtutorial.viz import (VideoFiles, cached_video, content_key, frame_steps, image_grid, plot_energy, read_video,
                            render_figure, tile_images, trajectory_video, video_html, write_video)


def square_frame(i, n=12, size=(1.0, 0.7), dpi=50):
    "A figure 50x35 px (odd height: padded to even) with a black square that moves right."
    fig = Figure(figsize=size, dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1]); ax.set_xlim(0, n); ax.set_ylim(0, 1); ax.axis("off")
    ax.fill_between([i, i + 1], 0, 1, color="k")
    return fig


def test_tile_images_layout():
    imgs = np.arange(5*2*3, dtype=float).reshape(5, 2, 3)
    g = tile_images(imgs, ncols=2, pad=1, pad_value=-1)
    assert g.shape == (3*2 + 2, 2*3 + 1)
    assert np.array_equal(g[3:5, 4:7], imgs[3])
    assert np.all(g[6:, 4:] == -1)                       # empty sixth cell
    assert tile_images(np.zeros((3, 4, 4, 3))).shape == (9, 9, 3)


def test_render_figure_even_size():
    rgb = render_figure(square_frame(0))
    assert rgb.dtype == np.uint8 and rgb.shape[0] % 2 == 0 and rgb.shape[1] % 2 == 0 and rgb.shape[2] == 3


def test_write_video_decodes_with_all_frames(tmp_path):
    mp4 = write_video(square_frame, 12, tmp_path/"sq.mp4", fps=6, gif_path=tmp_path/"sq.gif", progress=False)
    frames = read_video(mp4)
    assert frames.shape[0] == 12 and frames.shape[1] % 2 == 0 and frames.shape[2] % 2 == 0
    assert np.abs(frames[0].astype(int) - frames[-1]).max() > 100         # the square moved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sq.gif", "sq.mp4"]   # no temporary file left
    from PIL import Image
    with Image.open(tmp_path/"sq.gif") as im:
        assert im.n_frames == 12


def test_write_video_is_atomic_on_failure(tmp_path):
    def bad(i):
        if i == 3: raise RuntimeError("boom")
        return square_frame(i)
    with pytest.raises(RuntimeError, match="boom"):
        write_video(bad, 6, tmp_path/"x.mp4", progress=False)
    assert list(tmp_path.iterdir()) == []
    # an existing good video is not clobbered by a failed re-render
    write_video(square_frame, 4, tmp_path/"x.mp4", progress=False)
    before = (tmp_path/"x.mp4").read_bytes()
    with pytest.raises(RuntimeError):
        write_video(bad, 6, tmp_path/"x.mp4", progress=False)
    assert (tmp_path/"x.mp4").read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_frames_of_different_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="every frame_fn figure must have the same size"):
        write_video(lambda i: square_frame(i, size=(1.0 + 0.2*i, 0.7)), 3, tmp_path/"y.mp4", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cached_video_renders_once(cache_dir):
    calls = []
    def frame(i):
        calls.append(i)
        return square_frame(i)
    a = cached_video("sq", frame, 5, key=content_key(np.ones(3), k=1), fps=5, progress=False)
    n = len(calls)
    b = cached_video("sq", frame, 5, key=content_key(np.ones(3), k=1), fps=5, progress=False)
    assert a == b and len(calls) == n == 5
    c = cached_video("sq", frame, 5, key=content_key(np.ones(3), k=2), fps=5, progress=False)
    assert c.mp4 != a.mp4 and len(calls) == 10
    assert a.mp4.parent == cache_dir/"videos" and a.gif.exists()


def test_video_html_embeds_or_links(cache_dir, tmp_path):
    files = cached_video("sq", square_frame, 4, key="k", fps=4, progress=False)
    emb = video_html(files, media_dir=None)
    assert emb.startswith("<video") and "data:video/mp4;base64," in emb
    media, page = tmp_path/"site"/"media", tmp_path/"site"/"tutorial"
    page.mkdir(parents=True)
    html = video_html(files, media_dir=media, page_dir=page)
    assert 'src="../media/sq.mp4"' in html and 'src="../media/sq.gif"' in html
    assert (media/"sq.mp4").read_bytes() == files.mp4.read_bytes()
    mtime = os.stat(media/"sq.mp4").st_mtime_ns
    video_html(files, media_dir=media, page_dir=page)            # same bytes: the copy is left alone
    assert os.stat(media/"sq.mp4").st_mtime_ns == mtime


def test_video_html_refuses_large_files_for_media(cache_dir, tmp_path, monkeypatch):
    files = cached_video("sq", square_frame, 4, key="k2", fps=4, progress=False)
    monkeypatch.setattr(viz, "MEDIA_LIMIT", 10)
    with pytest.warns(UserWarning, match="over the"):
        html = video_html(files, media_dir=tmp_path/"media", page_dir=tmp_path)
    assert "data:video/mp4;base64," in html and not (tmp_path/"media"/"sq.mp4").exists()


def test_trajectory_video_subsamples(cache_dir):
    rng = np.random.default_rng(0)
    states = np.cumsum(rng.normal(size=(50, 4, 6, 6)), axis=0)
    E = -np.arange(50, dtype=float)[:, None]*np.ones(4)
    v = trajectory_video("traj", states, E, n_frames=10, fps=5, progress=False)
    frames = read_video(v.mp4)
    assert len(frames) == len(frame_steps(50, 10)) == 10
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 1
    # colour images and a finer energy record (every state saved every 2 steps)
    col = rng.random(size=(6, 2, 5, 5, 3))
    v2 = trajectory_video("traj-col", col, np.linspace(0, -1, 11), n_frames=6, fps=3, gif=False, progress=False)
    assert len(read_video(v2.mp4)) == 6 and v2.gif is None


def test_frame_steps():
    s = frame_steps(100, 7)
    assert s[0] == 0 and s[-1] == 99 and len(s) == 7 and np.all(np.diff(s) > 0)
    assert list(frame_steps(3, 10)) == [0, 1, 2]


def test_content_key_sensitivity():
    a = np.zeros((2, 2))
    assert content_key(a, x=1) == content_key(a.copy(), x=1)
    assert len({content_key(a), content_key(a.T.copy().reshape(4)), content_key(a.astype(np.float32)),
                content_key(a, x=1)}) == 4


def test_plot_and_grid_return_axes():
    ax = image_grid(np.zeros((3, 4, 4)), vmin=-1, vmax=1)
    assert ax.images and ax.get_xticks().size == 0
    ax = plot_energy(np.arange(10.0)[::-1], upto=4)
    assert len(ax.lines) == 2


@pytest.mark.parametrize("make, exc, message", [
    # wrong number of axes: a TypeError (under the tests' jaxtyping hook, jaxtyping's own, naming the argument)
    (lambda: tile_images(np.zeros((4, 4))), TypeError, "images"),
    (lambda: tile_images(np.zeros((0, 4, 4))), ValueError, "images is empty (B = 0)"),
    (lambda: tile_images(np.zeros((2, 4, 4)), ncols=0), ValueError, "ncols must be a positive integer, got 0"),
    (lambda: plot_energy(np.zeros((2, 3, 4))), TypeError, "energies"),
    (lambda: plot_energy(np.zeros(0)), ValueError, "energies must have T >= 1 steps"),
    (lambda: plot_energy(np.zeros(5), upto=5), ValueError, "upto must be in [0, 4], got 5"),
    # a wrong type: our TypeError, or beartype's under the tests' hook; both name the argument
    (lambda: write_video("nope", 3, "/tmp/x.mp4"), TypeError, "frame_fn"),
    (lambda: write_video(square_frame, 0, "/tmp/x.mp4"), ValueError, "n_frames must be a positive integer, got 0"),
    (lambda: write_video(square_frame, 2, "/tmp/x.mp4", fps=0), ValueError, "fps must be a positive number, got 0"),
    (lambda: write_video(lambda i: None, 2, Path("/tmp")/"amt-none.mp4", progress=False), TypeError,
     "frame_fn(0) must return a matplotlib Figure, got NoneType"),
    (lambda: cached_video("a b", square_frame, 2, key="k"), ValueError, "name must be a non-empty string"),
    (lambda: video_html("x.mp4"), TypeError, "files"),
    (lambda: read_video("/nonexistent/v.mp4"), FileNotFoundError, "no video at"),
    (lambda: trajectory_video("t", np.zeros((5, 2, 3, 3)), np.zeros(3)), ValueError, "energies has 3 steps and states 5"),
    (lambda: frame_steps(0, 5), ValueError, "T and n_frames must be >= 1"),
])
def test_bad_inputs(make, exc, message):
    with pytest.raises(exc) as e:
        make()
    assert message in str(e.value), str(e.value)


def test_video_html_auto_uses_the_pages_own_clone(cache_dir, tmp_path, monkeypatch):
    "The media folder is found from the notebook's folder, not from wherever the package is installed."
    files = cached_video("sq", square_frame, 4, key="k3", fps=4, progress=False)
    clone = tmp_path/"clone"
    (clone/"nbs"/"tutorial").mkdir(parents=True)
    (clone/"settings.ini").write_text("[DEFAULT]\n"); (clone/"nbs"/"_quarto.yml").write_text("project: {}\n")
    html = video_html(files, page_dir=clone/"nbs"/"tutorial")
    assert 'src="../media/sq.mp4"' in html and (clone/"nbs"/"media"/"sq.mp4").is_file()
    monkeypatch.chdir(clone/"nbs")
    assert 'src="media/sq.gif"' in video_html(files)
    outside = tmp_path/"elsewhere"; outside.mkdir()
    assert "data:video/mp4;base64," in video_html(files, page_dir=outside)
