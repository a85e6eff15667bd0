"""Every JSON the command line prints is a record's `to_dict`, with the keys it has always had; the `train`
options' defaults are TrainConfig's. Run in-process on the tiny test CNN."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from core import checkpoints, models, predictions, records
from core.__main__ import main
from core.cli import data, images, options
from core.training import TrainConfig
from tests.conftest import TINY, sample

ROOT = Path(__file__).resolve().parents[1]
CHELSEA = str(ROOT / "assets" / "samples" / "chelsea.jpg")


@pytest.fixture
def built(monkeypatch):
    """The records the command builds, by class name: each `of` is wrapped to keep what it returns."""
    kept: dict[str, list] = {}
    for cls in (images.PredictOutput, images.ModelRow, images.ScoresFile, data.EvaluateOutput, data.TrainOutput):
        original = cls.of

        def of(*args, _original=original, _name=cls.__name__, **kwargs):
            record = _original(*args, **kwargs)
            kept.setdefault(_name, []).append(record)
            return record

        monkeypatch.setattr(cls, "of", of)
    return kept


def test_predict_json_is_the_record(built, capsys):
    assert main(["predict", CHELSEA, "--model", TINY, "--top", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    (record,) = built["PredictOutput"]
    assert printed == records.to_dict(record)
    assert list(printed) == ["model", "device", "pretrained", "predictions"]
    assert printed["predictions"][0].keys() == {"index", "label", "prob"}
    model = models.load(TINY, device="cpu")  # and the record holds what predictions.predict says
    expected = predictions.predict(model, sample("chelsea"), top_k=3)
    assert [p["index"] for p in printed["predictions"]] == [p.index for p in expected]
    np.testing.assert_allclose([p["prob"] for p in printed["predictions"]], [p.prob for p in expected], rtol=1e-6)


def test_models_json_is_the_records(built, capsys):
    assert main(["models", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == [records.to_dict(row) for row in built["ModelRow"]]
    assert all(list(row)[:5] == ["name", "title", "source", "offline", "weights_file"] for row in printed)
    assert all(list(row)[5:] == ["family", "params", "gmacs", "top1", "input_size", "label_set", "hub_id"]
               for row in printed)
    assert all(row["weights_file"] is None or isinstance(row["weights_file"], str) for row in printed)


def test_explain_all_scores_json_is_the_record(built, tmp_path, capsys):
    out = tmp_path / "maps"
    assert main(["explain", CHELSEA, "--model", TINY, "--method", "all", "--out", str(out)]) == 0
    capsys.readouterr()
    printed = json.loads((out / "scores.json").read_text())
    (record,) = built["ScoresFile"]
    assert printed == records.to_dict(record)
    assert list(printed) == ["model", "about", "images"]
    assert list(printed["about"]) == ["faithfulness", "removal", "fractions_removed", "baselines"]
    scores = printed["images"]["chelsea.jpg"]
    assert list(scores) == ["target", "label", "layer", "seconds", "methods", "baselines", "inverted_method"]
    assert set(scores["baselines"]) == {"random", "inverted", "edges"}
    method = next(iter(scores["methods"].values()))
    assert list(method) == ["faithfulness", "road_most_relevant_first", "road_least_relevant_first",
                            "confidence_change", "fractions_removed", "most_relevant_first_by_fraction",
                            "least_relevant_first_by_fraction", "beats_random"]


def test_evaluate_json_is_the_record(built, tmp_path, capsys):
    assert main(["evaluate", "shapes", "--model", TINY, "--limit", "24", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    (record,) = built["EvaluateOutput"]
    assert printed == records.to_dict(record)
    assert list(printed) == ["dataset", "model", "method", "images", "evaluated", "train_size", "accuracy", "classes",
                             "per_class", "confusion", "skipped", "ignored"]  # "mapping" only for zero-shot
    assert list(printed["per_class"][0]) == ["class", "precision", "recall", "f1", "support"]
    with_mapping = dataclasses.replace(record, mapping={"circle": None})
    assert list(records.to_dict(with_mapping))[-1] == "mapping"


def test_train_json_is_the_record_and_the_export_keeps_the_runs_facts(built, tmp_path, capsys):
    out = tmp_path / "small"
    assert main(["train", "shapes", "--strategy", "small-cnn", "--limit", "40", "--epochs", "1", "--json",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    (record,) = built["TrainOutput"]
    assert printed == records.to_dict(record)
    assert list(printed) == ["dataset", "strategy", "backbone", "ended", "best_epoch", "epochs", "test_images",
                             "accuracy", "macro_precision", "macro_recall", "macro_f1", "seconds", "trainable_params",
                             "total_params", "classes", "confusion", "export"]
    assert printed["export"] == {"json": str(out / "model.json"), "weights": str(out / "model.safetensors")}
    trained = json.loads((out / "model.json").read_text())["trained"]
    assert trained == {"dataset": "shapes", "strategy": "small-cnn", "test_accuracy": printed["accuracy"],
                       "best_epoch": printed["best_epoch"]}
    assert trained == records.to_dict(checkpoints.Trained("shapes", "small-cnn", printed["accuracy"],
                                                          printed["best_epoch"]))


def test_train_options_default_to_train_config():
    args = options.parser().parse_args(["train", "shapes", "--out", "x"])
    assert options.train_config(args) == TrainConfig()
    defaults = options.train_defaults()
    assert defaults == {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    train = next(a for a in options.parser()._actions if a.dest == "command").choices["train"]
    by_field = {action.dest: action for action in train._actions}
    for option in options.TRAIN_OPTIONS:
        action = by_field[option.field]
        default = defaults[option.field]
        if option.field == "unfreeze_stages":
            assert action.default == ("all" if default is None else str(default))
        else:
            assert action.default == default, option.flag
        if default is not None and option.type is not None:
            assert f"(default {action.default})" in action.help, option.flag
    assert set(options.train_defaults()) - {o.field for o in options.TRAIN_OPTIONS} == {"momentum", "workers"}


def test_train_options_reach_the_config():
    args = options.parser().parse_args(["train", "shapes", "--out", "x", "--unfreeze", "all", "--epochs", "3",
                                        "--clip", "1.5", "--crop"])
    assert options.train_config(args) == TrainConfig(unfreeze_stages=None, epochs=3, clip_norm=1.5, random_crop=True)


def test_to_dict_of_plain_values():
    @dataclasses.dataclass(frozen=True)
    class Row:
        name: str = dataclasses.field(metadata={"key": "class"})
        values: tuple = ()
        where: Path | None = None
        extra: int | None = dataclasses.field(default=None, metadata={"omit_none": True})

    row = Row("a", (np.float32(0.5), np.arange(2)), Path("/x/y"))
    assert records.to_dict(row) == {"class": "a", "values": [0.5, [0, 1]], "where": "/x/y"}
    assert records.to_dict(dataclasses.replace(row, extra=3))["extra"] == 3
    with pytest.raises(TypeError, match="takes a record"):
        records.to_dict([1, 2])
