"""CLI: `explain --method all` over a folder writes one overlay per method and faithfulness scores."""

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
from PIL import Image

from core import cams, registry

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_method_all_on_a_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(ROOT / "assets" / "samples" / "coffee.jpg", folder / "coffee.jpg")
    (folder / "readme.txt").write_text("not an image, ignored")
    out = tmp_path / "out"
    done = _cli("explain", str(folder), "--method", "all", "--out", str(out))
    assert done.returncode == 0, done.stderr
    # 'all': every method that applies to the CNN except the one-forward-per-channel ones (13, not only the 10
    # of the shared pass); Score-CAM and Ablation-CAM need --include-slow
    every = cams.applicable(types.SimpleNamespace(spec=registry.get(registry.DEFAULT)))
    assert len(every) == 13 and {"fullgrad", "finercam", "shapleycam"} <= set(every)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"coffee_{m}.png" for m in every)
    for method in every:
        overlay = Image.open(out / f"coffee_{method}.png")
        assert overlay.size == (600, 400)
        heat = np.load(out / f"coffee_{method}.npy")
        assert heat.shape == (400, 600) and heat.dtype == np.float32 and 0 <= heat.min() <= heat.max() <= 1
    scores = json.loads((out / "scores.json").read_text())
    entry = scores["images"]["coffee.jpg"]
    assert entry["target"] == 967 and set(entry["methods"]) == set(every)
    gradcam = entry["methods"]["gradcam"]
    assert gradcam["faithfulness"] > 0 and gradcam["beats_random"]  # the espresso map is faithful
    assert set(entry["baselines"]) == {"random", "inverted", "edges"}
    for baseline in entry["baselines"].values():  # the same score fields as the methods
        assert set(baseline) == set(gradcam) - {"beats_random"}
        assert baseline["fractions_removed"] == [0.2, 0.4, 0.6, 0.8]
    assert gradcam["faithfulness"] > entry["baselines"]["random"]["faithfulness"]
    assert entry["inverted_method"] in every and len(gradcam["most_relevant_first_by_fraction"]) == 4
    assert "noisy linear imputation" in scores["about"]["removal"]


def test_several_images_need_an_output_folder(tmp_path):
    image = str(ROOT / "assets" / "samples" / "chelsea.jpg")
    done = _cli("explain", image, image, "--out", str(tmp_path / "x.png"))
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "folder" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _cli("explain", str(empty), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "no image files" in done.stderr


def test_a_folder_of_phone_photos_heic_and_avif(tmp_path):
    from core import images  # noqa: F401  (registers pillow-heif: Pillow can write HEIC)

    folder = tmp_path / "phone"
    folder.mkdir()
    Image.open(ROOT / "assets" / "samples" / "coffee.jpg").save(folder / "IMG_0001.HEIC", format="HEIF", quality=80)
    Image.open(ROOT / "assets" / "samples" / "chelsea.jpg").save(folder / "IMG_0002.avif", format="AVIF", quality=80)
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    out = tmp_path / "out"
    done = _cli("explain", str(folder), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert Image.open(out / "IMG_0001_gradcam.png").size == (600, 400)
    assert Image.open(out / "IMG_0002_gradcam.png").size == (451, 300)
    assert "espresso" in done.stdout
