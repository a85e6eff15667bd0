"""`--checkpoint FILE [--labels FILE]`: the user's weights on the --model architecture, for predict, explain,
report, evaluate, embed and benchmark (in-process `core.cli.main`, so the imports are paid once)."""

import io
import json

import pytest
import torch
from torch import nn

from core.cli import main

CLASSES = ("daisy", "dandelion", "rose", "sunflower", "tulip")
SHAPES = ("circle", "square", "triangle", "star")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from torchvision.models import resnet18

    from core import registry

    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet18(num_classes=5).state_dict().items()}}, buffer)
    (folder / "flowers.pth").write_bytes(buffer.getvalue())
    (folder / "flowers.txt").write_text("\n".join(CLASSES))
    tiny = registry.get("tiny_cnn_for_tests").build(False)
    tiny[7] = nn.Linear(12, 4)
    buffer = io.BytesIO()
    torch.save(tiny.state_dict(), buffer)
    (folder / "shapes.pt").write_bytes(buffer.getvalue())
    (folder / "shapes.json").write_text(json.dumps(list(SHAPES)))
    return folder


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    import numpy as np
    from PIL import Image

    path = tmp_path_factory.mktemp("image") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(path)
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_predict_shows_the_checkpoints_class_names(files, image, capsys):
    rc, out, err = _run(capsys, "predict", image, "--model", "resnet18", "--checkpoint", files / "flowers.pth",
                        "--labels", files / "flowers.txt", "--device", "cpu", "--json")
    assert rc == 0, err
    found = json.loads(out)
    assert found["pretrained"] and {p["label"] for p in found["predictions"]} == set(CLASSES)
    assert "note: stripped the 'module.' prefix from the keys" in err and "5 classes instead of 1000" in err


def test_explain_writes_the_overlay_of_a_checkpoint_class(files, image, tmp_path, capsys):
    out_png = tmp_path / "rose.png"
    rc, out, err = _run(capsys, "explain", image, "--model", "resnet18", "--checkpoint", files / "flowers.pth",
                        "--labels", files / "flowers.txt", "--class", "2", "--layer", "layer4", "--out", out_png,
                        "--device", "cpu")
    assert rc == 0, err
    assert "for class 2 (rose) at layer layer4" in out and out_png.stat().st_size > 1000


def test_report_names_the_users_weights(files, image, tmp_path, capsys):
    html = tmp_path / "r.html"
    rc, out, err = _run(capsys, "report", image, "--models", "tiny_cnn_for_tests", "--methods", "gradcam",
                        "--no-scores", "--checkpoint", files / "shapes.pt", "--labels", files / "shapes.json",
                        "--out", html, "--device", "cpu")
    assert rc == 0, err
    assert "Tiny CNN (tests) (shapes.pt)" in html.read_text() and "triangle" in html.read_text()


def test_evaluate_and_embed_run_on_a_checkpoint(files, tmp_path, capsys):
    common = ["--model", "tiny_cnn_for_tests", "--checkpoint", files / "shapes.pt", "--labels", files / "shapes.json",
              "--limit", "24", "--device", "cpu", "--batch-size", "8"]
    rc, out, err = _run(capsys, "evaluate", "shapes", *common, "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["method"] == "zero-shot" and result["evaluated"] == 24  # the checkpoint's classes are the set's
    rc, out, err = _run(capsys, "embed", "shapes", *common, "--method", "pca", "--out", tmp_path / "e.csv")
    assert rc == 0, err
    assert (tmp_path / "e.csv").read_text().count("\n") == 25


def test_benchmark_measures_the_checkpoint(files, capsys):
    rc, out, err = _run(capsys, "benchmark", "--models", "tiny_cnn_for_tests", "--checkpoint", files / "shapes.pt",
                        "--batch", "1,2", "--repeats", "3", "--warmup", "1", "--device", "cpu", "--json")
    assert rc == 0, err
    rows = json.loads(out)["rows"]
    assert [r["batch"] for r in rows] == [1, 2] and all(r["pretrained"] for r in rows)


@pytest.mark.parametrize("argv, message", [
    (["--labels", "x.txt"], "--labels names the classes of a --checkpoint"),
    (["--checkpoint", "{files}/flowers.pth", "--random-weights"], "choose one"),
    (["--checkpoint", "{files}/nothing.pth"], "No such weights file"),
    (["--checkpoint", "{files}/flowers.txt"], "neither safetensors nor a torch.save file"),
    (["--checkpoint", "{files}/shapes.pt"], "does not fit ResNet-18"),
    (["--checkpoint", "{files}/flowers.pth", "--labels", "{files}/shapes.json"], "lists 4 class names, but the model"),
])
def test_bad_checkpoint_options_exit_2_with_one_line(files, image, capsys, argv, message):
    argv = [a.format(files=files) for a in argv]
    rc, out, err = _run(capsys, "predict", image, "--model", "resnet18", "--device", "cpu", *argv)
    *notes, last = err.strip().split("\n")
    assert rc == 2 and message in last and last.startswith("error: ") and all(n.startswith("note: ") for n in notes)


def test_a_checkpoint_belongs_to_one_of_several_models(files, image, tmp_path, capsys):
    rc, _, err = _run(capsys, "report", image, "--models", "resnet18,resnet50", "--checkpoint", files / "flowers.pth",
                      "--out", tmp_path / "r.html")
    assert rc == 2 and "holds the weights of one architecture; --models lists 2" in err
