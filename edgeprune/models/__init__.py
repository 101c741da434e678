"""Model specs: how a user names the network to profile or prune, and how it is loaded.

Forms: `torchvision:resnet18`, `zoo:cifar_resnet56`, `path/to/file.py:factory`, a saved full module
(`.pt`/`.pth`, pickle: needs allow_pickle), or an `.onnx` file (profiling only: no PyTorch module).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EdgepruneError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class LoadedModel:
    """A model ready to measure: the module (None for a bare ONNX file), its input shape and provenance."""

    spec: str
    module: object | None  # torch.nn.Module; typed loosely so this module imports without torch
    input_shape: tuple[int, ...] | None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_classes: int | None = None
    weights: str | None = None
    weights_sha256: str | None = None
    onnx_path: Path | None = None
    info: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "mean": list(self.mean),
            "std": list(self.std),
            "num_classes": self.num_classes,
        }


@dataclass(frozen=True)
class ZooEntry:
    factory: Callable[[], object]
    input_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


def _cifar(depth: int) -> Callable[[], object]:
    def make() -> object:
        from .cifar_resnet import cifar_resnet

        return cifar_resnet(depth)

    return make


def _lenet5() -> object:
    from .lenet import lenet5

    return lenet5()


ZOO: dict[str, ZooEntry] = {
    **{f"cifar_resnet{d}": ZooEntry(_cifar(d), (1, 3, 32, 32), 10) for d in (20, 32, 44, 56)},
    "lenet5": ZooEntry(_lenet5, (1, 1, 28, 28), 10, mean=(0.1307,), std=(0.3081,)),
}


def _digits_cnn() -> object:
    from .digits_cnn import make_demo_net

    return make_demo_net()


# The demo's network: 8x8 grey digits at batch 32 (compute-bound enough to be worth pruning).
ZOO["digits_cnn"] = ZooEntry(_digits_cnn, (32, 1, 8, 8), 10, mean=(0.0,), std=(1.0,))


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """`1x3x224x224` -> (1, 3, 224, 224)."""
    if text is None:
        return None
    try:
        dims = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise EdgepruneError(f"--shape {text!r} is not a shape like 1x3x224x224 (positive integers joined by 'x')")
    return dims


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _strip_prefix(state: dict) -> dict:
    return {k.removeprefix("module."): v for k, v in state.items()}


def _read_checkpoint(path: Path, allow_pickle: bool) -> object:
    import pickle

    import torch

    if not path.is_file():
        raise EdgepruneError(f"weights file {path} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(2)
    # torch.save writes a zip archive; older files are a raw pickle stream (protocol byte 0x80).
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":
        raise EdgepruneError(f"{path} is not a readable PyTorch file (neither a torch zip archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        if not allow_pickle:
            raise EdgepruneError(
                f"{path} holds pickled Python objects beyond tensors; loading it runs code from the file. "
                "If you trust it, pass --allow-pickle"
            ) from exc
        raise EdgepruneError(f"{path} is not a readable PyTorch file: {exc}") from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise EdgepruneError(f"{path} is not a readable PyTorch file ({type(exc).__name__}: {exc})") from exc


def load_weights(module: object, path: Path, allow_pickle: bool = False) -> str:
    """Load a state_dict (or a checkpoint dict holding one) into `module`; returns the file's sha256."""
    import torch

    ckpt = _read_checkpoint(path, allow_pickle)
    if isinstance(ckpt, torch.nn.Module):
        state = ckpt.state_dict()
    elif isinstance(ckpt, dict):
        state = ckpt.get("state_dict", ckpt.get("model", ckpt))
    else:
        raise EdgepruneError(f"{path} holds a {type(ckpt).__name__}, not a state_dict or checkpoint dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EdgepruneError(f"{path} has no state_dict of tensors (looked at keys 'state_dict', 'model')")
    try:
        module.load_state_dict(_strip_prefix(state))  # type: ignore[attr-defined]
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[:3])
        raise EdgepruneError(f"weights {path} do not fit the model: {detail}") from exc
    return sha256_file(path)


def _import_file(path: Path) -> object:
    name = f"edgeprune_user_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EdgepruneError(f"{path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # user code: any failure is a user error
        raise EdgepruneError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _from_factory(spec: str) -> object:
    file_part, _, func = spec.rpartition(":")
    path = Path(file_part)
    if not path.is_file():
        raise EdgepruneError(f"model file {path} does not exist (MODEL form path/to/file.py:factory)")
    module = _import_file(path)
    factory = getattr(module, func, None)
    if not callable(factory):
        raise EdgepruneError(f"{path} has no callable {func!r} (MODEL form path/to/file.py:factory)")
    try:
        return factory()
    except Exception as exc:
        raise EdgepruneError(f"model factory {spec} raised {type(exc).__name__}: {exc}") from exc


def _from_torchvision(name: str) -> object:
    import torchvision

    try:
        return torchvision.models.get_model(name, weights=None)
    except ValueError as exc:
        known = ", ".join(sorted(torchvision.models.list_models(module=torchvision.models))[:12])
        raise EdgepruneError(f"torchvision has no model {name!r} (e.g. {known}, ...)") from exc


def load_model(
    spec: str,
    *,
    weights: str | Path | None = None,
    shape: tuple[int, ...] | None = None,
    allow_pickle: bool = False,
) -> LoadedModel:
    """Load a model spec into an eval-mode module with its input shape and normalisation."""
    import torch

    weights_path = Path(weights) if weights else None
    zoo = None
    if spec.startswith("zoo:"):
        key = spec[4:]
        if key not in ZOO:
            raise EdgepruneError(f"unknown zoo model {key!r}; known: {', '.join('zoo:' + k for k in ZOO)}")
        zoo = ZOO[key]
        module = zoo.factory()
    elif spec.startswith("torchvision:"):
        module = _from_torchvision(spec.split(":", 1)[1])
    elif spec.endswith(".onnx"):
        path = Path(spec)
        if not path.is_file():
            raise EdgepruneError(f"ONNX model {path} does not exist")
        check_onnx_file(path)
        return LoadedModel(spec=spec, module=None, input_shape=shape, onnx_path=path)
    elif ".py:" in spec:
        module = _from_factory(spec)
    elif Path(spec).suffix in (".pt", ".pth", ".pkl", ".th"):
        obj = _read_checkpoint(Path(spec), allow_pickle)
        if not isinstance(obj, torch.nn.Module):
            raise EdgepruneError(
                f"{spec} is a {type(obj).__name__}, not a saved module: give the architecture as MODEL "
                "(zoo:..., torchvision:..., file.py:factory) and this file as --weights"
            )
        module = obj
    else:
        raise EdgepruneError(
            f"cannot read model spec {spec!r}: use torchvision:NAME, zoo:NAME, path/to/file.py:factory, "
            "a saved module (.pt, with --allow-pickle) or an .onnx file"
        )
    if not isinstance(module, torch.nn.Module):
        raise EdgepruneError(f"{spec} produced a {type(module).__name__}, not a torch.nn.Module")
    digest = load_weights(module, weights_path, allow_pickle) if weights_path else None
    module.eval()
    input_shape = shape or (zoo.input_shape if zoo else None)
    if input_shape is None and spec.startswith("torchvision:"):
        input_shape = (1, 3, 224, 224)
    if input_shape is None:
        raise EdgepruneError(f"{spec}: give the input shape with --shape, e.g. --shape 1x3x224x224")
    loaded = LoadedModel(
        spec=spec,
        module=module,
        input_shape=tuple(input_shape),
        num_classes=zoo.num_classes if zoo else _guess_classes(module),
        weights=str(weights_path) if weights_path else None,
        weights_sha256=digest,
    )
    if zoo:
        loaded.mean, loaded.std = zoo.mean, zoo.std
    check_forward(loaded)
    return loaded


def check_onnx_file(path: Path) -> None:
    """Fail early, with the file named, on a truncated or foreign .onnx file."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as exc:
        raise EdgepruneError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    if not model.graph.node:
        raise EdgepruneError(f"{path} is not a readable ONNX model (its graph has no nodes)")


def _guess_classes(module: object) -> int | None:
    import torch

    last = None
    for m in module.modules():  # type: ignore[attr-defined]
        if isinstance(m, torch.nn.Linear):
            last = m
    return last.out_features if last is not None else None


def check_forward(loaded: LoadedModel) -> None:
    """Run one forward pass so a shape that does not fit fails here, with the model and shape named."""
    import torch

    x = torch.zeros(loaded.input_shape)
    try:
        with torch.no_grad():
            loaded.module(x)  # type: ignore[misc]
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        shape = "x".join(map(str, loaded.input_shape or ()))
        raise EdgepruneError(f"{loaded.spec} does not run on input {shape}: {msg} (fix --shape)") from exc
