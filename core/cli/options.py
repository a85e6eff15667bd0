"""The command line's options: one argparse parser with a subcommand per task.

The `train` options are a table over `TrainConfig`'s fields: their defaults and the "(default ...)" in their help
are read from the dataclass, so the command line and the library cannot disagree.
"""

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import NamedTuple

from core import registry
from core.errors import InvalidInputError
from core.training import TrainConfig

MODEL_HELP = (f"backbone (default {registry.DEFAULT}): a name of `models`, any torchvision classifier, or a timm "
              "pretrained config as timm/NAME (`models --search TEXT` lists them)")
DEVICE_HELP = "auto (CUDA if present), cpu or cuda"
DATASET_HELP = "digits, shapes, torchvision:NAME (CIFAR10, MNIST, ...), a .zip of class folders, or a folder"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


class TrainOption(NamedTuple):
    flag: str
    field: str  # the TrainConfig field it sets
    type: type | None  # None: a switch (store_true)
    help: str  # without the default, which comes from TrainConfig


TRAIN_OPTIONS = (
    TrainOption("--strategy", "strategy", str,
                "feature-extraction (frozen backbone, new head), fine-tune, small-cnn or deeper-cnn"),
    TrainOption("--head", "head", str, "linear or mlp (hidden layer + dropout)"),
    TrainOption("--hidden", "hidden", int, "mlp head: hidden units"),
    TrainOption("--dropout", "dropout", float, "mlp head: dropout"),
    TrainOption("--unfreeze", "unfreeze_stages", str, "fine-tune: how many of the last stages train, or 'all'"),
    TrainOption("--optimizer", "optimizer", str, "sgd (momentum 0.9), adam or adamw"),
    TrainOption("--lr-head", "lr_head", float, "learning rate of the head and of baselines"),
    TrainOption("--lr-backbone", "lr_backbone", float, "fine-tune: learning rate of the backbone"),
    TrainOption("--weight-decay", "weight_decay", float, "weight decay"),
    TrainOption("--batch-size", "batch_size", int, "images per step"),
    TrainOption("--epochs", "epochs", int, "passes over the training set"),
    TrainOption("--patience", "patience", int, "early stopping after N epochs without a lower val loss"),
    TrainOption("--clip", "clip_norm", float, "clip the gradients' global norm to this"),
    TrainOption("--crop", "random_crop", None, "augment with random resized crops (not feature-extraction)"),
    TrainOption("--flip", "flip", None, "augment with horizontal flips (not feature-extraction)"),
    TrainOption("--train-fraction", "train_fraction", float, "share of the images that trains"),
    TrainOption("--val-fraction", "val_fraction", float, "share that validates; the test set is the rest"),
    TrainOption("--image-size", "image_size", int, "square side (default: the backbone's; 64 for baselines)"),
    TrainOption("--seed", "seed", int, "sample, split, initialisation and shuffling"),
)


def train_defaults() -> dict[str, object]:
    """{field: default} of TrainConfig, the command line's defaults."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _add_train_options(sub: argparse.ArgumentParser) -> None:
    defaults = train_defaults()
    for option in TRAIN_OPTIONS:
        default = defaults[option.field]
        if option.type is None:
            sub.add_argument(option.flag, dest=option.field, action="store_true", default=default, help=option.help)
            continue
        if option.field == "unfreeze_stages":
            default = "all" if default is None else str(default)
        shown = "" if default is None else f" (default {default})"
        sub.add_argument(option.flag, dest=option.field, type=option.type, default=default, help=option.help + shown,
                         metavar=option.flag.removeprefix("--").replace("-", "_").upper())


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the `train` options ask for, checked.

    Raises:
        InvalidInputError: --unfreeze is neither a number nor 'all', or a setting is out of range.
    """
    given = {option.field: getattr(args, option.field) for option in TRAIN_OPTIONS}
    unfreeze = given["unfreeze_stages"]
    if unfreeze == "all":
        given["unfreeze_stages"] = None
    else:
        try:
            given["unfreeze_stages"] = int(unfreeze)
        except ValueError:
            raise InvalidInputError(f"--unfreeze takes a number of stages or 'all', got '{unfreeze}'.") from None
    return TrainConfig(**given).check()


def checkpoint_options(sub: argparse.ArgumentParser) -> None:
    """--checkpoint and --labels: the user's own weights for the architecture the command names."""
    sub.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                     help="your weights for the architecture (a state dict as .safetensors, or .pth/.pt/.bin read with "
                     "torch.load(weights_only=True)); the number of classes comes from its head")
    sub.add_argument("--labels", type=Path, default=None, metavar="FILE",
                     help="with --checkpoint: class names, one per line (labels.txt) or a JSON list (default: numbered)")


def parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m core", description="Predict and explain images with pretrained classifiers.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def model_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("image", type=Path, help="a JPEG, PNG, WebP, BMP, GIF, TIFF, HEIC or AVIF file")
        sub.add_argument("--model", default=registry.DEFAULT, help=MODEL_HELP)
        sub.add_argument("--device", default="auto", help=DEVICE_HELP)
        sub.add_argument(
            "--random-weights", action="store_true", help="architecture only: meaningless predictions, no download"
        )
        checkpoint_options(sub)

    predict = commands.add_parser("predict", help="top-k classes of one image")
    model_options(predict)
    predict.add_argument("--top", type=int, default=5, help="how many classes (default 5)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")

    explain = commands.add_parser("explain", help="class activation maps of images")
    model_options(explain)
    explain.add_argument("more", nargs="*", type=Path, help="more images, or folders of images")
    explain.add_argument(
        "--method", default="gradcam",
        help="CAM method (see `models --methods`), or 'all': every method that applies to the model except the "
        "one-forward-per-channel ones, one overlay each, plus scores.json with faithfulness scores",
    )
    explain.add_argument(
        "--include-slow", action="store_true",
        help="with --method all: add the one-forward-per-channel methods (Score-CAM, Ablation-CAM)",
    )
    explain.add_argument("--class", dest="target", type=int, default=None, help="class index (default: top-1)")
    explain.add_argument("--layer", default=None, help="dotted layer name (default: the backbone's own)")
    explain.add_argument(
        "--out", type=Path, required=True,
        help="overlay PNG to write; a folder when several images or --method all are given",
    )
    explain.add_argument("--heatmap", type=Path, default=None, help="also write the heatmap as .npy (float32, HxW)")
    explain.add_argument("--opacity", type=float, default=0.5, help="heatmap opacity 0..1 (default 0.5)")
    explain.add_argument("--colormap", default="jet", help="jet, turbo, inferno, magma, viridis, ...")

    report = commands.add_parser("report", help="a self-contained HTML report: models x methods, with scores")
    report.add_argument("image", type=Path, help="a JPEG, PNG, WebP, BMP, GIF, TIFF, HEIC or AVIF file")
    report.add_argument("--models", default=registry.DEFAULT, help="comma-separated backbone names (any --model name)")
    report.add_argument("--methods", default="gradcam,gradcam++,eigencam", help="comma-separated CAM methods")
    report.add_argument("--class", dest="target", type=int, default=None, help="class index (default: each top-1)")
    report.add_argument("--out", type=Path, required=True, help="the .html file to write")
    report.add_argument("--no-scores", action="store_true", help="skip the faithfulness scores (faster)")
    report.add_argument("--device", default="auto", help=DEVICE_HELP)
    report.add_argument("--random-weights", action="store_true", help="architecture only (no download)")
    checkpoint_options(report)

    models = commands.add_parser("models", help="list backbones and whether their weights are here (the short "
                                 "list, or with --search any torchvision or timm classifier)")
    models.add_argument("--json", action="store_true")
    models.add_argument("--search", metavar="TEXT", default=None,
                        help="search the whole zoo: every word in the name ('vit tiny', 'resnet50.a1')")
    models.add_argument("--family", choices=("cnn", "transformer", "hybrid"), default=None, help="only this family")
    models.add_argument("--source", default=None, help="only this source: torchvision, timm, project, ...")
    models.add_argument("--weights-here", action="store_true", help="only models whose weights are on this machine")
    models.add_argument("--methods", action="store_true", help="list CAM methods instead")

    bench = commands.add_parser("benchmark", help="latency, throughput, memory, size and compute of backbones")
    bench.add_argument("--models", required=True, help="comma-separated backbone names, e.g. resnet18,efficientnet_lite0")
    bench.add_argument("--batch", default="1", help="comma-separated batch sizes (default 1)")
    bench.add_argument("--input-size", type=int, default=None, help="square input side (default: each model's own)")
    bench.add_argument("--precision", default="fp32", help="fp32, or bf16/fp16 autocast on GPU")
    bench.add_argument("--device", default="auto", help=DEVICE_HELP)
    bench.add_argument("--repeats", type=int, default=None, help="timed passes (default: until the median is stable)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed warm-up passes (default 3)")
    bench.add_argument("--random-weights", action="store_true", help="random weights even where pretrained ones are here")
    checkpoint_options(bench)
    bench.add_argument("--json", action="store_true", help="print JSON (machine, method, rows) instead of a table")

    def dataset_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("dataset", help=DATASET_HELP)
        sub.add_argument("--model", default=registry.DEFAULT, help=MODEL_HELP)
        sub.add_argument("--device", default="auto", help=DEVICE_HELP)
        sub.add_argument("--random-weights", action="store_true", help="architecture only (meaningless features)")
        checkpoint_options(sub)
        sub.add_argument("--limit", type=int, default=None, help="a stratified sample of at most this many images")
        sub.add_argument("--seed", type=int, default=0, help="seed of the sample, the split and t-SNE (default 0)")
        sub.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
        sub.add_argument("--precision", default="auto", help="auto, fp32, bf16 (GPU, or CPUs with native bf16), fp16 (GPU)")
        sub.add_argument("--image-size", type=int, default=None, help="square side images are resized to (default: the model's)")

    def engine_options(sub: argparse.ArgumentParser, *, results: bool) -> None:
        sub.add_argument("--engine", choices=("in-process", "ray"), default="in-process",
                         help="in-process (default), or ray: Ray Data, decoding in parallel tasks and a pool of model "
                         "actors, on this machine or a cluster; it also reads lists of images (.txt, .csv, .parquet "
                         "with path,label) and folder URIs (s3://...)")
        sub.add_argument("--address", default=None,
                         help="--engine ray: a running cluster ('auto', or host:port; default RAY_ADDRESS, else a "
                         "local instance on 127.0.0.1)")
        sub.add_argument("--actors", type=int, default=None,
                         help="--engine ray: model actors (default one per GPU, else one per node)")
        if results:
            sub.add_argument("--results", type=Path, default=None,
                             help="--engine ray: folder to write the feature shards and summary.json into "
                             "(the dashboard opens it)")

    embed = commands.add_parser("embed", help="2-D map (t-SNE or PCA) of a dataset's penultimate features")
    dataset_options(embed)
    engine_options(embed, results=True)
    embed.add_argument("--method", choices=("tsne", "pca"), default="tsne", help="tsne (default) or pca")
    embed.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30)")
    embed.add_argument("--iterations", type=int, default=750, help="t-SNE iterations (default 750)")
    embed.add_argument("--out", type=Path, required=True, help="CSV to write: x, y, label, prediction, file")

    evaluate = commands.add_parser("evaluate", help="accuracy, per-class metrics and confusion matrix on a dataset")
    dataset_options(evaluate)
    engine_options(evaluate, results=True)
    evaluate.add_argument("--mode", default="auto", help="auto, zero-shot or 'linear probe' (default auto)")
    evaluate.add_argument("--test-fraction", type=float, default=0.3, help="linear probe: share held out (default 0.3)")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")

    audit = commands.add_parser("audit", help="a heatmap and its statistics for every image of a dataset")
    dataset_options(audit)
    engine_options(audit, results=False)
    audit.add_argument("--method", default="gradcam", help="a one-pass method (default gradcam; on a transformer also rollout, grad_rollout, legrad)")
    audit.add_argument("--target", choices=("predicted", "true", "both"), default="predicted",
                       help="explain each image's predicted class (default), its label, or both (maps_true.npy and "
                       "the statistics again with a _true suffix; the second map only where they differ); true and "
                       "both need a model whose classes are the dataset's")
    audit.add_argument("--layer", default=None, help="target layer (default: the model's)")
    audit.add_argument("--out", type=Path, required=True,
                       help="folder to write audit.parquet, audit.csv, maps.npy and summary.json into")
    audit.add_argument("--features", action="store_true", help="also write features.npy")
    audit.add_argument("--embed", choices=("tsne", "pca"), default=None,
                       help="also a 2-D map of the audit's features (the embed command's, without a second pass): "
                       "embedding.csv (file, label, prediction, x, y) in --out")
    audit.add_argument("--perplexity", type=float, default=30.0, help="--embed tsne: perplexity (default 30)")
    audit.add_argument("--iterations", type=int, default=750, help="--embed tsne: iterations (default 750)")
    audit.add_argument("--json", action="store_true", help="print the per-class summary as JSON")

    download = commands.add_parser("download", help="prefetch pretrained weights into the caches, for offline use later")
    download.add_argument("names", nargs="+", metavar="NAME",
                          help="backbone names (torchvision, e.g. resnet50) or timm/NAME (e.g. timm/vit_tiny_patch16_224)")
    download.add_argument("--json", action="store_true", help="print JSON: what is here, where, and what failed")

    train = commands.add_parser("train", help="transfer learning: a new head (or fine-tuning) on a dataset, exported")
    train.add_argument("dataset", help=DATASET_HELP)
    train.add_argument("--model", default=registry.DEFAULT, help=f"pretrained backbone (default {registry.DEFAULT})")
    _add_train_options(train)
    train.add_argument("--limit", type=int, default=None, help="a stratified sample of at most this many images")
    train.add_argument("--device", default="auto", help=DEVICE_HELP)
    train.add_argument("--random-weights", action="store_true", help="start from random weights (no download)")
    train.add_argument("--json", action="store_true", help="print a JSON summary (the epochs go to stderr)")
    train.add_argument("--out", type=Path, required=True, help="folder to write model.json and model.safetensors into")
    return parser
