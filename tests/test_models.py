from __future__ import annotations

import pytest
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.models import load_model, parse_shape


def test_zoo_defaults_and_shape():
    m = load_model("zoo:cifar_resnet20")
    assert m.input_shape == (1, 3, 32, 32) and m.num_classes == 10
    assert sum(p.numel() for p in m.module.parameters()) == 269_722  # the checkpoint's documented size


def test_zoo_weights_load(shared_data):
    m = load_model("zoo:cifar_resnet20", weights=shared_data / "weights" / "cifar_resnet20.th", )
    assert m.weights_sha256.startswith("12fca82f")


def test_torchvision_and_factory(tmp_path):
    assert load_model("torchvision:resnet18", shape=(1, 3, 64, 64)).input_shape == (1, 3, 64, 64)
    f = tmp_path / "net.py"
    f.write_text("import torch\ndef make():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n"
                 "def broken():\n    raise ValueError('no gpu here')\n")
    assert load_model(f"{f}:make", shape=(1, 3, 8, 8)).module is not None
    with pytest.raises(EdgepruneError, match="raised ValueError: no gpu here"):
        load_model(f"{f}:broken", shape=(1, 3, 8, 8))
    with pytest.raises(EdgepruneError, match="no callable 'missing'"):
        load_model(f"{f}:missing", shape=(1, 3, 8, 8))


def test_saved_module_needs_opt_in(tmp_path):
    path = tmp_path / "full.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), path)
    with pytest.raises(EdgepruneError, match="--allow-pickle"):
        load_model(str(path), shape=(1, 3, 8, 8))
    assert load_model(str(path), shape=(1, 3, 8, 8), allow_pickle=True).module is not None


def test_state_dict_as_model_is_explained(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), path)
    with pytest.raises(EdgepruneError, match="not a saved module"):
        load_model(str(path), shape=(1, 3, 8, 8))


@pytest.mark.parametrize("content", [b"", b"garbage" * 10])
def test_corrupt_weights(tmp_path, content):
    path = tmp_path / "w.th"
    path.write_bytes(content)
    with pytest.raises(EdgepruneError, match="not a readable PyTorch file"):
        load_model("zoo:cifar_resnet20", weights=path)


def test_weights_that_do_not_fit(shared_data):
    with pytest.raises(EdgepruneError, match="do not fit the model"):
        load_model("zoo:cifar_resnet56", weights=shared_data / "weights" / "cifar_resnet20.th")


def test_shape_that_does_not_fit():
    with pytest.raises(EdgepruneError, match="does not run on input 1x1x32x32"):
        load_model("zoo:cifar_resnet20", shape=(1, 1, 32, 32))
    with pytest.raises(EdgepruneError, match="not a shape"):
        parse_shape("1x3xabc")


def test_unknown_specs():
    with pytest.raises(EdgepruneError, match="unknown zoo model"):
        load_model("zoo:vgg99")
    with pytest.raises(EdgepruneError, match="torchvision has no model"):
        load_model("torchvision:resnet9000")
    with pytest.raises(EdgepruneError, match="cannot read model spec"):
        load_model("what-is-this")
