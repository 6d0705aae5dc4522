"""The README's Python quick start runs as written, with the package's public API, and scores what it says."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_quick_start_runs(capsys):
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"``` *python\n(.*?)```", readme, re.S)
    assert blocks, "README.md has no ```python quick start block"
    namespace = {}
    exec(compile(blocks[0], "README quick start", "exec"), namespace)
    psnr = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 13.0 < psnr < 40.0, psnr  # a real fill-in (mean fill scores about 10 dB on these masks)
    assert namespace["filled"].shape == (8, 28, 28)
