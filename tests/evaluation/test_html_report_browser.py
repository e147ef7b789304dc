"""report.html and predict.html of a real (tiny, synthetic) fit + test + predict, opened in headless Chromium: no
console errors, every image decoded by the browser, and a screenshot that is not blank.

Chromium is Debian's ``chromium`` package (.ci/run installs it like Slurm); without it the test skips and says why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import fit_tiny_run
from PIL import Image

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Appended to a copy of the page (the report itself has no script): after load, every <img> must be complete and
# decoded (naturalWidth > 0), and no resource may have failed to load.
PROBE = """<script>
window.bloodclsErrors = 0;
window.addEventListener("error", () => { window.bloodclsErrors += 1; }, true);
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const bad = imgs.filter((i) => !i.complete || i.naturalWidth === 0).length;
  document.body.setAttribute("data-probe", `${imgs.length}/${bad}/${window.bloodclsErrors}`);
});
</script>"""


def chromium() -> str:
    for name in (os.environ.get("BLOODCLS_CHROMIUM", ""), *BROWSERS):
        if name and shutil.which(name):
            return str(shutil.which(name))
    pytest.skip("no headless Chromium (install Debian's chromium package; .ci/run does so as root)")


def browse(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(),
        "--headless=new",
        "--no-sandbox",  # tests run as root in CI containers
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        *args,
        page.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def check_in_browser(page: Path, tmp_path: Path, min_images: int) -> np.ndarray:
    """Open ``page``; returns the screenshot as a grey-level array after checking images and console."""
    shot = tmp_path / f"{page.stem}.png"
    result = browse(page, tmp_path, f"--screenshot={shot}", "--window-size=1200,3000")
    assert shot.is_file(), result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # the page logs nothing: no error, no blocked resource

    probe = page.with_name(f"probe_{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = browse(probe, tmp_path, "--dump-dom")
    found = re.search(r'data-probe="(\d+)/(\d+)/(\d+)"', dom.stdout)
    assert found, dom.stderr[-2000:]
    images, broken, errors = (int(g) for g in found.groups())
    assert images >= min_images and broken == 0 and errors == 0, (images, broken, errors)

    grey = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert grey.std() > 20.0  # text, tables and plots, not a blank (or uniformly grey) page
    assert (grey < 200).mean() > 0.02
    return grey


def test_reports_render_in_headless_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bloodcls.data.synthetic import write_image_folder
    from bloodcls.entry import main  # in process: the console script's route is tested in tests/cli

    chromium()  # skip before training when there is no browser
    best = fit_tiny_run(tmp_path)
    quiet = ["--trainer.enable_progress_bar", "false", "--data.init_args.num_workers", "0"]
    monkeypatch.chdir(tmp_path)
    main(["test", "--ckpt_path", str(best), *quiet])
    report = best.parent.parent / "test" / "report.html"
    assert report.is_file()
    text = report.read_text(encoding="utf-8")
    assert "most confident" in text  # the Grad-CAM gallery of a convolutional network
    # ROC, reliability, coverage and at least one gallery pair per class (5 synthetic classes)
    check_in_browser(report, tmp_path, min_images=3 + 5)

    folder = tmp_path / "to_classify"
    write_image_folder(folder, 3, 32, seed=5)
    main(["predict", "--ckpt_path", str(best), "--data.predict_root", str(folder), *quiet])
    [predict_page] = list((best.parent.parent).rglob("predict.html"))
    check_in_browser(predict_page, tmp_path, min_images=1 + 5)  # histogram + thumbnails
