"""Train "Shapes CNN" and "Shapes ViT" (core.shapes_models) on the built-in shapes set, on the CPU, in minutes.

    python scripts/train_shapes_models.py [--only shapes_vit] [--train 4000] [--epochs N] [--threads 2]

Writes assets/shapes_models/<name>.safetensors and assets/shapes_models/models.json (how each was made: data,
seeds, optimiser, epochs, held-out accuracy, time, file hash). Train set: shapes seed 1; held-out test set: seed 2;
seed 0 (the Datasets page's default set) is never seen. Deterministic for a given torch version and thread count.
The ViT's stem starts from the trained Shapes CNN (core.shapes_models.vit says why), so the CNN is trained first.
"""

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from core import datasets, preprocessing, runtime, shapes_models  # noqa: E402

RECIPES = {  # name: (epochs, learning rate, weight decay)
    "shapes_cnn": (12, 3e-3, 1e-4),
    "shapes_vit": (6, 1e-3, 0.05),
}
STEM_LR = 0.1  # the ViT's stem starts from the trained Shapes CNN and moves at a tenth of the rate


def start(name: str, lr: float, decay: float) -> tuple[nn.Module, torch.optim.Optimizer, str]:
    """The model, its optimiser, and how it was initialised (the ViT's stem: the trained CNN's conv blocks)."""
    model = shapes_models.ARCHITECTURES[name]()
    if name != "shapes_vit":
        return model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay), "PyTorch's defaults"
    from safetensors.torch import load_file

    cnn_file = shapes_models.weights_file("shapes_cnn")
    trained = {k.removeprefix("features."): v for k, v in load_file(cnn_file).items() if k.startswith("features.")}
    stem = model.conv_proj.stem
    stem.load_state_dict({k: v for k, v in trained.items() if k in stem.state_dict()})
    stem_ids = {id(p) for p in stem.parameters()}
    groups = [{"params": list(stem.parameters()), "lr": lr * STEM_LR},
              {"params": [p for p in model.parameters() if id(p) not in stem_ids]}]
    digest = hashlib.sha256(cnn_file.read_bytes()).hexdigest()[:12]
    return (model, torch.optim.AdamW(groups, lr=lr, weight_decay=decay),
            f"stem from the trained Shapes CNN's features.0-11 (sha256 {digest}...), the rest PyTorch's defaults")


def tensors(dataset, spec) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.cat([preprocessing.to_tensor(image, spec) for image in dataset.images])
    return images, torch.as_tensor(dataset.labels)


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flips and quarter turns: a shape's class does not depend on them (nor on the background's)."""
    k = int(torch.randint(4, (1,), generator=generator))
    batch = torch.rot90(batch, k, dims=(2, 3))
    flip = torch.rand(batch.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], batch.flip(3), batch)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        predicted = torch.cat([model(chunk).argmax(1) for chunk in images.split(256)])
    return float((predicted == labels).float().mean())


def train(name: str, train_set, test_set, epochs: int, batch: int, seed: int) -> dict:
    spec = next(s for s in shapes_models.specs() if s.name == name)
    default_epochs, lr, decay = RECIPES[name]
    epochs = epochs or default_epochs
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model, optimiser, initialised = start(name, lr, decay)
    x, y = tensors(train_set, spec)
    test_x, test_y = tensors(test_set, spec)
    steps = epochs * math.ceil(len(y) / batch)
    rates = [group["lr"] for group in optimiser.param_groups]
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=rates, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for rows in order.split(batch):
            loss = loss_fn(model(augment(x[rows], generator)), y[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        print(f"{name} epoch {epoch + 1}/{epochs}: loss {total / len(y):.3f}, "
              f"test accuracy {accuracy(model, test_x, test_y):.3f} ({time.perf_counter() - started:.0f} s)", flush=True)
    seconds = time.perf_counter() - started
    model.eval()
    path = shapes_models.weights_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return {
        "title": spec.title,
        "architecture": shapes_models.ARCHITECTURES[name].__doc__,
        "params": sum(p.numel() for p in model.parameters()),
        "classes": list(spec.categories),
        "input": f"{spec.input_size[0]} px (the 128 px shapes resized, mean/std {spec.mean}/{spec.std})",
        "train": f"datasets.shapes(seed={train_set.content_hash.split(':')[1]}, n={len(train_set)})",
        "test": f"datasets.shapes(seed={test_set.content_hash.split(':')[1]}, n={len(test_set)})",
        "augmentation": "a random quarter turn per batch, a horizontal flip per image with p = 0.5",
        "initialised": initialised,
        "optimiser": f"AdamW lr {lr} (one-cycle{', the stem at a tenth' if len(rates) > 1 else ''}), "
                     f"weight decay {decay}, batch {batch}, label smoothing 0.1",
        "epochs": epochs,
        "seed": seed,
        "test_accuracy": round(accuracy(model, test_x, test_y), 4),
        "train_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "bytes": path.stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RECIPES))
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=0, help="0: each model's own recipe")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    args = parser.parse_args()
    runtime.configure_threads(args.threads or None)
    train_set = datasets.shapes(1, args.train)
    test_set = datasets.shapes(2, args.test)
    record = shapes_models.FOLDER / "models.json"
    for name in [args.only] if args.only else sorted(RECIPES):
        entry = train(name, train_set, test_set, args.epochs, args.batch, args.seed)
        entry["command"] = "python scripts/train_shapes_models.py " + " ".join(sys.argv[1:])
        made = json.loads(record.read_text()) if record.is_file() else {}  # read late: another run may have written
        made[name] = entry
        record.write_text(json.dumps(made, indent=2) + "\n")
        print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
