"""A user's weights under a name of their own: one name per content, unlisted, rebuilt from the stored file."""

import io

import pytest
import torch

from core import models, own_models, predictions, registry
from core.errors import InvalidInputError
from tests.conftest import TINY


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv(own_models.FOLDER_ENV, str(tmp_path))
    return tmp_path


def _weights(seed: int) -> bytes:
    torch.manual_seed(seed)
    module = registry.get(TINY).build(False)
    for parameter in module.parameters():
        parameter.data.normal_()
    buffer = io.BytesIO()
    torch.save({"state_dict": {f"module.{k}": v for k, v in module.state_dict().items()}}, buffer)
    return buffer.getvalue()


def test_the_same_file_gets_the_same_name_unlisted_and_loads_as_saved(folder, chelsea):
    data = _weights(1)
    name = own_models.register(TINY, data, filename="../../etc/passwd\x00.pth")
    assert name.startswith(own_models.PREFIX) and own_models.register(TINY, data, filename="again.pth") == name
    assert own_models.register(TINY, _weights(2), filename="other.pth") != name
    assert name not in registry.names() and registry.known(name)
    assert own_models.base(name) == TINY and own_models.base(TINY) == TINY
    assert [p.name for p in folder.iterdir()] and all(p.parent == folder for p in folder.iterdir())
    loaded = models.load(name, device="cpu")
    torch.manual_seed(1)
    assert loaded.spec.source == "user weights" and "passwd" in loaded.spec.title
    state = torch.load(io.BytesIO(data), weights_only=True)["state_dict"]
    assert torch.equal(loaded.module.state_dict()["0.weight"], state["module.0.weight"])
    assert predictions.predict(loaded, chelsea, top_k=3)
    random = models.load(name, device="cpu", pretrained=False)
    assert not torch.equal(random.module.state_dict()["0.weight"], state["module.0.weight"])


def test_labels_name_the_classes_and_a_misfit_is_refused(folder):
    labels = "\n".join(f"thing {i}" for i in range(10)).encode()
    name = own_models.register(TINY, _weights(3), filename="w.pth", labels=labels)
    assert registry.get(name).categories[:2] == ("thing 0", "thing 1")
    with pytest.raises(InvalidInputError):
        own_models.register(TINY, b"not a state dict", filename="w.pth")
