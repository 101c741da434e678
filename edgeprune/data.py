"""Task data for fine-tuning, selection and reporting.

`--data` (and `--val-data`, `--test-data`) name one of:
- a named set: ``digits`` / ``digits-test`` (scikit-learn's bundled 8x8 digits, fixed seeded 80/20 split),
  ``mnist-train5k``, ``mnist-t10k``, ``cifar10-train``, ``cifar10-val`` (files under `data_root()`);
- an ``.npz`` with ``x`` (uint8, N x H x W x C, or N x H x W for grey) and ``y`` (integer labels);
- an ImageFolder directory (one sub-folder per class), resized to the model's input size;
- ``module:function`` or ``path/to/file.py:function`` returning ``(train_loader, val_loader)`` or a dict
  with ``train`` and ``val`` and optionally ``test``, ``evaluate(model, loader) -> float`` (higher is
  better), ``loss(outputs, targets)`` and ``num_classes``. The function receives whichever of
  ``batch_size``, ``seed``, ``input_shape``, ``num_classes`` its signature names.

Image data is kept in memory as uint8 NCHW; every batch is converted, augmented and normalised as a whole
(in torch, not per sample) and comes out as normalised NCHW float32. Augmentation draws its crop and flip
from a hash of (seed, epoch, sample position), so a sample gets the same augmentation whichever process or
batch it lands in: a distributed run sees exactly the batches a single process would.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import inspect
import logging
import math
import os
import re
import struct
import sys
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, IterableDataset, Subset

from .errors import EdgepruneError

log = logging.getLogger(__name__)

ENV_DATA = "EDGEPRUNE_DATA"
Metric = Callable[[nn.Module, Iterable], float]
LossFn = Callable[[Any, Any], torch.Tensor]
Arrays = tuple[np.ndarray, np.ndarray]


def data_root() -> Path:
    """Where the shared data lives.

    ``$EDGEPRUNE_DATA`` when set; else ``../shared/data`` relative to the current directory (the layout
    when run from the project root); else ``shared/data`` beside the repository that holds this package
    (an editable install run from elsewhere). Returns the CWD-relative path when neither exists.
    """
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser()
    from_cwd = Path.cwd().parent / "shared" / "data"
    if from_cwd.is_dir():
        return from_cwd
    from_repo = Path(__file__).resolve().parents[2] / "shared" / "data"
    return from_repo if from_repo.is_dir() else from_cwd


# ----------------------------------------------------------------------------------------------- readers


def load_npz(path: str | Path) -> Arrays:
    """``x`` and ``y`` of an npz file, validated (uint8 images, integer labels, equal lengths)."""
    path = Path(path)
    if not path.is_file():
        raise EdgepruneError(f"data file {path} not found: give an existing .npz with arrays x and y")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = {"x", "y"} - keys
            if missing:
                raise EdgepruneError(
                    f"{path} has no array {' or '.join(sorted(missing))} (found: {', '.join(sorted(keys)) or 'none'}); "
                    "the npz needs x (uint8 N x H x W x C) and y (integer labels)"
                )
            x, y = npz["x"], npz["y"]
    except EdgepruneError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise EdgepruneError(f"{path} is not a readable .npz ({exc}); re-create it with numpy.savez") from exc
    return check_arrays(x, y, str(path))


def load_mnist_train_5k(csv_gz: str | Path) -> Arrays:
    """MNIST rows of 784 pixels then the label (the ``train_5k.csv.gz`` format) as (N,28,28,1) uint8, labels."""
    path = Path(csv_gz)
    if not path.is_file():
        raise EdgepruneError(f"MNIST csv {path} not found (expected under {data_root() / 'mnist'})")
    try:
        with gzip.open(path, "rt") if _is_gzip(path) else open(path) as fh:
            rows = np.loadtxt(fh, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as exc:
        raise EdgepruneError(f"{path} is not a readable MNIST csv ({exc})") from exc
    if rows.shape[0] == 0 or rows.shape[1] != 785:
        raise EdgepruneError(f"{path}: expected rows of 785 integers (784 pixels, label), got shape {rows.shape}")
    if rows[:, :784].min() < 0 or rows[:, :784].max() > 255:
        raise EdgepruneError(f"{path}: pixel values must lie in 0..255")
    x = rows[:, :784].astype(np.uint8).reshape(-1, 28, 28, 1)
    return check_arrays(x, rows[:, 784].copy(), str(path))


def load_mnist_idx(images_gz: str | Path, labels_gz: str | Path) -> Arrays:
    """MNIST in LeCun's idx format (gzipped or not) as (N,28,28,1) uint8 images and int64 labels."""
    images, labels = _read_idx(Path(images_gz)), _read_idx(Path(labels_gz))
    if images.ndim != 3 or labels.ndim != 1:
        raise EdgepruneError(f"{images_gz} must hold N x H x W images and {labels_gz} N labels")
    return check_arrays(images[..., None], labels.astype(np.int64), str(images_gz))


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _read_idx(path: Path) -> np.ndarray:
    if not path.is_file():
        raise EdgepruneError(f"MNIST idx file {path} not found (expected under {data_root() / 'mnist'})")
    try:
        with gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise EdgepruneError(f"{path} is not a readable idx file ({exc})") from exc
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise EdgepruneError(f"{path} is not an unsigned-byte idx file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise EdgepruneError(f"{path} is truncated: header says {dims}, file holds {data.size} values")
    return data.reshape(dims)


def _digits(test: bool) -> Arrays:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # 0..16 intensities onto 0..255 so every source shares one uint8 representation
    x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, digits.target.astype(np.int64), test_size=0.2, random_state=0, stratify=digits.target
    )
    return (x_te, y_te) if test else (x_tr, y_tr)


def _shared(*parts: str) -> Path:
    return data_root().joinpath(*parts)


# name -> loader; adding a named set touches only this table
NAMED_DATA: dict[str, Callable[[], Arrays]] = {
    "digits": lambda: _digits(test=False),
    "digits-test": lambda: _digits(test=True),
    "mnist-train5k": lambda: load_mnist_train_5k(_shared("mnist", "train_5k.csv.gz")),
    "mnist-t10k": lambda: load_mnist_idx(
        _shared("mnist", "t10k-images-idx3-ubyte.gz"), _shared("mnist", "t10k-labels-idx1-ubyte.gz")
    ),
    "cifar10-train": lambda: load_npz(_shared("cifar10", "train.npz")),
    "cifar10-val": lambda: load_npz(_shared("cifar10", "val.npz")),
}


def check_arrays(
    x: np.ndarray,
    y: np.ndarray,
    name: str,
    *,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> Arrays:
    """Validate image arrays against the model; returns (x as N,H,W,C uint8, y as int64)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise EdgepruneError(f"{name}: x must be images N x H x W x C, got shape {x.shape}")
    if x.dtype != np.uint8:
        raise EdgepruneError(
            f"{name}: x must be uint8 pixels 0..255, got {x.dtype}; convert with (x * 255).round().astype('uint8')"
        )
    if len(x) == 0:
        raise EdgepruneError(f"{name} holds no images")
    if y.ndim != 1 or len(y) != len(x):
        raise EdgepruneError(f"{name}: y must hold one label per image ({len(x)} images, y has shape {y.shape})")
    if not np.issubdtype(y.dtype, np.integer):
        raise EdgepruneError(f"{name}: labels y must be integers, got {y.dtype}")
    if input_shape is not None:
        _check_image_shape(x.shape[1:], input_shape, name)
    check_labels(y, name, num_classes)
    return x, y.astype(np.int64, copy=False)


def _check_image_shape(hwc: Sequence[int], input_shape: Sequence[int], name: str) -> None:
    h, w, c = hwc
    want_c, want_h, want_w = input_shape[1], input_shape[2], input_shape[3]
    if c != want_c:
        hint = " (the array looks NCHW: store it as N x H x W x C)" if h == want_c else ""
        raise EdgepruneError(f"{name}: images have {c} channels but the model takes {want_c}{hint}")
    if (h, w) != (want_h, want_w):
        raise EdgepruneError(
            f"{name}: images are {h}x{w} but the model takes {want_h}x{want_w}; resize the data or give "
            f"the model's input shape as {c}x{h}x{w}"
        )


def check_labels(y: np.ndarray, name: str, num_classes: int | None) -> None:
    """Labels must be class indices 0..num_classes-1."""
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        raise EdgepruneError(f"{name}: labels must be class indices >= 0, found {lo}")
    if num_classes is not None and hi >= num_classes:
        raise EdgepruneError(
            f"{name}: labels go up to {hi} but the model has {num_classes} classes; the data does not fit the model"
        )


# ----------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` value: `kind` is a key of `SOURCES`, `location` the name, path or module:function."""

    kind: str
    location: str

    @classmethod
    def parse(cls, text: str | Path) -> DataSpec:
        text = str(text).strip()
        if not text:
            raise EdgepruneError("empty data argument: give an .npz, an ImageFolder directory, module:function or digits")
        for kind, source in SOURCES.items():
            if source.matches(text):
                return cls(kind, text)
        raise EdgepruneError(
            f"data {text!r} not found: give an existing .npz file, an ImageFolder directory, module:function, "
            f"path/to/file.py:function, or one of {', '.join(NAMED_DATA)}"
        )

    def __str__(self) -> str:
        return self.location


@dataclass
class _Ctx:
    input_shape: tuple[int, ...] | None
    num_classes: int | None
    batch_size: int
    seed: int


@dataclass
class UserData:
    """What a module:function source gave: loaders plus optional metric, loss and class count."""

    train: Iterable
    val: Iterable
    test: Iterable | None = None
    evaluate: Metric | None = None
    loss: LossFn | None = None
    num_classes: int | None = None


class _Source(Protocol):
    def matches(self, text: str) -> bool: ...

    def load(self, spec: DataSpec, ctx: _Ctx) -> ImageSet | UserData: ...


class _NamedSource:
    def matches(self, text: str) -> bool:
        return text in NAMED_DATA

    def load(self, spec: DataSpec, ctx: _Ctx) -> ImageSet:
        x, y = check_arrays(*NAMED_DATA[spec.location](), spec.location, input_shape=ctx.input_shape,
                            num_classes=ctx.num_classes)
        return ImageSet(_ArrayStore(x, y))


class _NpzSource:
    def matches(self, text: str) -> bool:
        return text.lower().endswith(".npz")

    def load(self, spec: DataSpec, ctx: _Ctx) -> ImageSet:
        x, y = load_npz(spec.location)
        x, y = check_arrays(x, y, spec.location, input_shape=ctx.input_shape, num_classes=ctx.num_classes)
        return ImageSet(_ArrayStore(x, y))


_CALLABLE = re.compile(r"^(?P<mod>[A-Za-z_][\w.]*|.+\.py):(?P<fn>[A-Za-z_]\w*)$")


class _CallableSource:
    def matches(self, text: str) -> bool:
        return _CALLABLE.match(text) is not None

    def load(self, spec: DataSpec, ctx: _Ctx) -> UserData:
        m = _CALLABLE.match(spec.location)
        assert m is not None
        fn = getattr(_import_module(m["mod"], spec), m["fn"], None)
        if not callable(fn):
            raise EdgepruneError(f"data function {spec}: {m['mod']} has no function {m['fn']!r}")
        offered = {"batch_size": ctx.batch_size, "seed": ctx.seed, "input_shape": ctx.input_shape,
                   "num_classes": ctx.num_classes}
        params = inspect.signature(fn).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in offered.items() if takes_any or k in params}
        try:
            result = fn(**kwargs)
        except EdgepruneError:
            raise
        except Exception as exc:
            raise EdgepruneError(f"data function {spec} raised {type(exc).__name__}: {exc}") from exc
        return _user_data(result, spec, ctx)


class _FolderSource:
    def matches(self, text: str) -> bool:
        return Path(text).is_dir()

    def load(self, spec: DataSpec, ctx: _Ctx) -> ImageSet:
        return ImageSet(_FolderStore(Path(spec.location), ctx.input_shape, ctx.num_classes))


# tried in order; the first that matches parses the argument
SOURCES: dict[str, _Source] = {
    "named": _NamedSource(),
    "npz": _NpzSource(),
    "callable": _CallableSource(),
    "imagefolder": _FolderSource(),
}


def _import_module(name: str, spec: DataSpec) -> Any:
    try:
        if name.endswith(".py"):
            path = Path(name)
            if not path.is_file():
                raise EdgepruneError(f"data function {spec}: file {path} not found")
            mod_name = f"edgeprune_user_data_{path.stem}"
            ispec = importlib.util.spec_from_file_location(mod_name, path)
            if ispec is None or ispec.loader is None:
                raise EdgepruneError(f"data function {spec}: cannot import {path}")
            module = importlib.util.module_from_spec(ispec)
            # registered so worker processes and pickling can find classes defined in the file
            sys.modules[mod_name] = module
            ispec.loader.exec_module(module)
            return module
        return importlib.import_module(name)
    except EdgepruneError:
        raise
    except Exception as exc:
        raise EdgepruneError(f"data function {spec}: importing {name} failed ({type(exc).__name__}: {exc})") from exc


_USER_KEYS = {"train", "val", "test", "evaluate", "loss", "num_classes"}


def _user_data(result: Any, spec: DataSpec, ctx: _Ctx) -> UserData:
    shape = "(train_loader, val_loader) or a dict with keys train and val (optionally test, evaluate, loss, num_classes)"
    if isinstance(result, Mapping):
        unknown = set(result) - _USER_KEYS
        missing = {"train", "val"} - set(result)
        if unknown or missing:
            problem = f"unknown keys {sorted(unknown)}" if unknown else f"missing keys {sorted(missing)}"
            raise EdgepruneError(f"data function {spec} returned a dict with {problem}; return {shape}")
        data = UserData(**dict(result))
    elif isinstance(result, (tuple, list)) and len(result) == 2:
        data = UserData(train=result[0], val=result[1])
    else:
        raise EdgepruneError(f"data function {spec} returned {type(result).__name__}; return {shape}")
    for key in ("train", "val", "test"):
        loader = getattr(data, key)
        if loader is not None and (isinstance(loader, (str, bytes)) or not hasattr(loader, "__iter__")):
            raise EdgepruneError(f"data function {spec}: {key} is a {type(loader).__name__}, not an iterable of batches")
    for key in ("evaluate", "loss"):
        if getattr(data, key) is not None and not callable(getattr(data, key)):
            raise EdgepruneError(f"data function {spec}: {key} must be callable")
    _peek_user_batch(data.train, spec, ctx)
    return data


def _peek_user_batch(loader: Iterable, spec: DataSpec, ctx: _Ctx) -> None:
    try:
        batch = next(iter(loader))
    except StopIteration:
        raise EdgepruneError(f"data function {spec}: the train loader yields no batches") from None
    except Exception as exc:
        raise EdgepruneError(f"data function {spec}: reading a train batch raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise EdgepruneError(f"data function {spec}: train batches must be (inputs, targets), got {type(batch).__name__}")
    x = batch[0]
    if ctx.input_shape is not None and isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] != ctx.input_shape[1]:
        raise EdgepruneError(
            f"data function {spec}: inputs have {x.shape[1]} channels but the model takes {ctx.input_shape[1]}"
        )


# ----------------------------------------------------------------------------------------------- storage


class _Store(Protocol):
    labels: np.ndarray
    image_shape: tuple[int, int, int]
    parallel_workers: int

    def __len__(self) -> int: ...

    def fetch(self, idx: np.ndarray) -> torch.Tensor: ...


class _ArrayStore:
    """All images in memory as one uint8 NCHW tensor; a batch is one fancy-index."""

    parallel_workers = 0  # indexing memory is faster than shipping batches from worker processes

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
        self.labels = y
        self.image_shape = tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return len(self.labels)

    def fetch(self, idx: np.ndarray) -> torch.Tensor:
        return self.x[torch.from_numpy(idx)]


class _FolderStore:
    """An ImageFolder decoded on demand, resized and centre-cropped to the model's input size."""

    parallel_workers = 2

    def __init__(self, root: Path, input_shape: Sequence[int] | None, num_classes: int | None):
        from torchvision import transforms
        from torchvision.datasets import ImageFolder

        try:
            folder = ImageFolder(str(root))
        except (FileNotFoundError, OSError) as exc:
            raise EdgepruneError(f"{root} is not an ImageFolder ({exc}); use one sub-folder of images per class") from exc
        if len(folder) == 0:
            raise EdgepruneError(f"{root} holds no images")
        if input_shape is None:
            from PIL import Image

            with Image.open(folder.samples[0][0]) as first:
                c = 1 if first.mode in ("L", "1", "I;16") else 3
                input_shape = (1, c, first.height, first.width)
        c, h, w = int(input_shape[1]), int(input_shape[2]), int(input_shape[3])
        if c not in (1, 3):
            raise EdgepruneError(f"{root}: ImageFolder data gives 1 or 3 channels, the model takes {c}")
        self.mode = "L" if c == 1 else "RGB"
        self.transform = transforms.Compose([transforms.Resize(max(h, w)), transforms.CenterCrop((h, w)),
                                             transforms.PILToTensor()])
        self.folder = folder
        self.labels = np.asarray(folder.targets, dtype=np.int64)
        self.image_shape = (c, h, w)
        if num_classes is not None and len(folder.classes) > num_classes:
            raise EdgepruneError(
                f"{root} has {len(folder.classes)} class folders but the model has {num_classes} classes"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def fetch(self, idx: np.ndarray) -> torch.Tensor:
        out = []
        for i in idx.tolist():
            path = self.folder.samples[i][0]
            try:
                img = self.folder.loader(path).convert(self.mode)
            except OSError as exc:
                raise EdgepruneError(f"cannot decode image {path} ({exc})") from exc
            out.append(self.transform(img))
        return torch.stack(out)


class ImageSet(Dataset):
    """A view (positions -> store indices) of a store; indexed by a whole batch of positions at once.

    `trace`, when set to a list, records every position fetched (to check what a process saw).
    """

    def __init__(self, store: _Store, indices: np.ndarray | None = None, trace: list[int] | None = None):
        self.store = store
        self.indices = np.arange(len(store)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.trace = trace

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return self.store.labels[self.indices]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.store.image_shape

    def subset(self, positions: np.ndarray | Sequence[int]) -> ImageSet:
        return ImageSet(self.store, self.indices[np.asarray(positions, dtype=np.int64)], self.trace)

    def __getitem__(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pos = np.asarray(positions, dtype=np.int64)
        if self.trace is not None:
            self.trace.extend(pos.tolist())
        idx = self.indices[pos]
        return self.store.fetch(idx), torch.from_numpy(self.store.labels[idx]), torch.from_numpy(pos)


# ----------------------------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random crop with zero padding, and horizontal flip."""

    crop_padding: int = 4
    hflip: bool = True


_M31 = (1 << 31) - 1


def _hash31(pos: torch.Tensor, epoch: int, seed: int) -> torch.Tensor:
    """Well-mixed pseudo-random int in [0, 2^31) per sample position; int64 products stay below 2^62."""
    h = (pos * 40503 + (epoch * 7919 + seed * 104729 + 1) % _M31) % _M31
    for _ in range(3):
        h = (h * 1103515245 + 12345) & _M31
        h = h ^ (h >> 13)
    return h


class BatchTransform:
    """Collate function: uint8 NCHW batch -> augmented, normalised float32 batch (x, y)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], augment: Augment | None, seed: int):
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        # (x/255 - mean)/std as one multiply-add
        self.scale, self.shift = 1.0 / (255.0 * std_t), -mean_t / std_t
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, pos = batch
        if self.augment is not None:
            x = self._augment(x, pos)
        x = x.float().mul_(self.scale).add_(self.shift)
        return x, y

    def _augment(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.augment.crop_padding
        r = _hash31(pos, self.epoch, self.seed)
        dy = (r >> 3) % (2 * p + 1)
        dx = (r >> 11) % (2 * p + 1)
        cols = torch.arange(w).expand(n, w)
        if self.augment.hflip:
            flip = ((r >> 19) & 1).bool()
            cols = torch.where(flip[:, None], cols.flip(1), cols)
        rows = dy[:, None] + torch.arange(h)
        cols = dx[:, None] + cols
        padded = F.pad(x, (p, p, p, p)) if p else x
        # one gather for the crop and the flip of the whole batch
        return padded[
            torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows[:, None, :, None],
            cols[:, None, None, :],
        ]


def make_loader(
    images: ImageSet,
    batch_size: int,
    transform: BatchTransform,
    *,
    shuffle: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A loader over an ImageSet; with world_size > 1 this rank gets a disjoint shard of every epoch.

    The shuffled order is the same permutation a DistributedSampler draws, so for equal global batch size
    the union of the ranks' i-th batches is the single-process i-th batch.
    """
    sampler = DistributedSampler(images, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                 drop_last=world_size > 1)
    return DataLoader(images, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None,
                      collate_fn=transform, num_workers=images.store.parallel_workers)


def set_epoch(loader: Iterable, epoch: int) -> None:
    """Tell a loader's sampler and augmentation which epoch it is (reshuffles; no-op for plain iterables)."""
    sampler = getattr(loader, "sampler", None)
    for s in (sampler, getattr(sampler, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        if hasattr(s, "set_epoch"):
            s.set_epoch(epoch)
            break
    collate = getattr(loader, "collate_fn", None)
    if isinstance(collate, BatchTransform):
        collate.epoch = epoch


def top1(model: nn.Module, loader: Iterable) -> float:
    """Top-1 accuracy in percent; batches are (inputs, labels)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    correct = total = 0
    for batch in loader:
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    if total == 0:
        raise EdgepruneError("the evaluation data holds no samples")
    return 100.0 * correct / total


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets)


# ----------------------------------------------------------------------------------------------- task


@dataclass
class TaskData:
    """Everything the pruning loop needs from the data.

    `train` (shuffled, augmented), `val` (selection: every decision uses it) and `test` (reported only)
    are loaders of (inputs, targets); `evaluate(model, loader) -> float` is the metric (higher is better,
    top-1 percent by default); `loss(outputs, targets)` the training loss.
    """

    train: Iterable
    val: Iterable
    test: Iterable | None
    evaluate: Metric
    loss: LossFn
    num_classes: int | None
    input_shape: tuple[int, ...] | None
    metric_name: str
    info: dict[str, Any] = field(default_factory=dict)
    train_images: ImageSet | None = None
    train_transform: BatchTransform | None = None
    batch_size: int = 128
    seed: int = 0
    calibration_transform: BatchTransform | None = None

    def train_loader(
        self,
        *,
        batch_size: int | None = None,
        limit: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        seed: int | None = None,
    ) -> Iterable:
        """The training loader for a global `batch_size`, the first `limit` samples, and this rank's shard."""
        batch_size = batch_size or self.batch_size
        seed = self.seed if seed is None else seed
        if batch_size % world_size:
            raise EdgepruneError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        if self.train_images is not None:
            images = self.train_images
            if limit is not None and limit < len(images):
                images = images.subset(np.arange(limit))
            return make_loader(images, batch_size // world_size, self.train_transform, shuffle=True, seed=seed,
                               rank=rank, world_size=world_size)
        return _reshape_user_loader(self.train, batch_size, limit, rank, world_size, seed,
                                    keep_as_is=batch_size == self.batch_size and limit is None and world_size == 1)

    def calibration_batches(self, n_images: int) -> list[Any]:
        """About `n_images` training samples (no augmentation, fixed seeded choice) for importance statistics.

        Each batch is an `(inputs, targets)` pair: activation statistics read the inputs only, the taylor
        criterion needs the targets too. (A user loader batch that is not a pair of at least two parts gives
        its first part, unlabelled, as before.)
        """
        if n_images <= 0:
            raise EdgepruneError(f"calibration needs at least one image, got {n_images}")
        if self.train_images is not None:
            n = min(n_images, len(self.train_images))
            pick = np.sort(np.random.default_rng(self.seed).permutation(len(self.train_images))[:n])
            loader = make_loader(self.train_images.subset(pick), self.batch_size, self.calibration_transform,
                                 shuffle=False)
            return [(x, y) for x, y in loader]
        out, seen = [], 0
        for batch in self.train:
            labelled = isinstance(batch, (tuple, list)) and len(batch) >= 2
            out.append((batch[0], batch[1]) if labelled else batch[0])
            seen += len(batch[0]) if hasattr(batch[0], "__len__") else 1
            if seen >= n_images:
                break
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the report."""
        return dict(self.info)


def _reshape_user_loader(
    loader: Iterable, batch_size: int, limit: int | None, rank: int, world_size: int, seed: int, keep_as_is: bool
) -> Iterable:
    if keep_as_is:
        return loader
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        raise EdgepruneError(
            "the data function's train loader is not a map-style torch DataLoader, so it cannot be re-batched, "
            "limited (--train-limit) or sharded across processes; return a torch.utils.data.DataLoader"
        )
    dataset = loader.dataset
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    shuffle = not isinstance(loader.sampler, torch.utils.data.SequentialSampler)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                 drop_last=world_size > 1)
    return DataLoader(dataset, batch_size=batch_size // world_size, sampler=sampler, collate_fn=loader.collate_fn,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      worker_init_fn=loader.worker_init_fn)


def _norm_stats(values: Sequence[float] | float | None, default: float, channels: int, what: str) -> tuple[float, ...]:
    if values is None:
        return (default,) * channels
    vals = (float(values),) if isinstance(values, (int, float)) else tuple(float(v) for v in values)
    if len(vals) == 1:
        vals = vals * channels
    if len(vals) != channels:
        raise EdgepruneError(f"--{what} has {len(vals)} values but the images have {channels} channels")
    if what == "std" and min(vals) <= 0:
        raise EdgepruneError("--std values must be positive")
    return vals


def _resolve_augment(augment: bool | str | Augment | None, image_shape: tuple[int, int, int]) -> Augment | None:
    if isinstance(augment, Augment):
        return augment
    if augment == "auto":
        c, h, w = image_shape
        # crop+flip is the CIFAR/ImageNet recipe; it would destroy 8x8 digits and mirror handwriting
        return Augment() if c == 3 and min(h, w) >= 32 else None
    if augment in (True, False, None):
        return Augment() if augment else None
    raise EdgepruneError(f"augment must be true, false or 'auto', got {augment!r}")


def load_task_data(
    data: str | Path | DataSpec | Arrays,
    val_data: str | Path | DataSpec | Arrays | None = None,
    test_data: str | Path | DataSpec | Arrays | None = None,
    *,
    val_fraction: float = 0.1,
    train_limit: int | None = None,
    batch_size: int = 128,
    eval_batch_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    augment: bool | str | Augment | None = "auto",
    seed: int = 0,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> TaskData:
    """Load and validate the training, selection and test data.

    Selection data is `val_data` when given, else a seeded held-out `val_fraction` of `data` (taken before
    `train_limit`, which keeps the first N remaining training samples in file order). `mean`/`std` apply to
    pixels scaled to [0, 1] (default 0 and 1). `augment="auto"` enables crop+flip for RGB images of at least
    32x32. `input_shape` (1, C, H, W) and `num_classes` are the model's; data that does not fit is refused.
    A module:function source brings its own loaders, so mean/std/augment/val_fraction do not apply to it.
    """
    if not 0.0 < val_fraction < 1.0:
        raise EdgepruneError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    if batch_size <= 0 or (train_limit is not None and train_limit <= 0):
        raise EdgepruneError("batch size and --train-limit must be positive")
    input_shape = tuple(int(v) for v in input_shape) if input_shape is not None else None
    if input_shape is not None and len(input_shape) != 4:
        raise EdgepruneError(f"input shape must be N x C x H x W, got {input_shape}")
    ctx = _Ctx(input_shape, num_classes, batch_size, seed)
    eval_bs = eval_batch_size or max(batch_size, 256)
    info: dict[str, Any] = {"data": _label(data), "val_data": _label(val_data), "test_data": _label(test_data),
                            "seed": seed, "batch_size": batch_size, "train_limit": train_limit}

    train_src = _load(data, ctx)
    val_src = _load(val_data, ctx) if val_data is not None else None
    test_src = _load(test_data, ctx) if test_data is not None else None

    user = next((s for s in (train_src, val_src, test_src) if isinstance(s, UserData)), None)
    evaluate: Metric = (user.evaluate if user and user.evaluate else top1)
    loss: LossFn = (user.loss if user and user.loss else cross_entropy)
    if user and user.num_classes is not None:
        num_classes = num_classes or user.num_classes

    shape = next((s.image_shape for s in (train_src, val_src, test_src) if isinstance(s, ImageSet)), None)
    train_tf = eval_tf = None
    if shape is not None:
        mean_v = _norm_stats(mean, 0.0, shape[0], "mean")
        std_v = _norm_stats(std, 1.0, shape[0], "std")
        aug = _resolve_augment(augment, shape)
        train_tf, eval_tf = BatchTransform(mean_v, std_v, aug, seed), BatchTransform(mean_v, std_v, None, seed)
        info.update(mean=list(mean_v), std=list(std_v), augment=(vars(aug) if aug else None))
        for src, name in ((val_src, val_data), (test_src, test_data)):
            if isinstance(src, ImageSet) and src.image_shape != shape:
                raise EdgepruneError(f"{_label(name)}: images are {src.image_shape} (C,H,W) but --data has {shape}")

    def eval_loader(src: ImageSet | UserData, which: str) -> Iterable:
        if isinstance(src, UserData):
            return src.test if which == "test" and src.test is not None else src.val
        return make_loader(src, eval_bs, eval_tf, shuffle=False)

    train_images = None
    if isinstance(train_src, UserData):
        train = train_src.train
        val = eval_loader(val_src, "val") if val_src is not None else train_src.val
        info["val_source"] = "--val-data" if val_src is not None else f"the val loader of {data}"
        info["train_samples"] = _samples(train)
        if train_limit is not None:
            train = _reshape_user_loader(train, batch_size, train_limit, 0, 1, seed, keep_as_is=False)
    else:
        train_images = train_src
        if val_src is not None:
            val = eval_loader(val_src, "val")
            info["val_source"] = "--val-data"
        else:
            n_val = max(1, int(round(len(train_src) * val_fraction)))
            if n_val >= len(train_src):
                raise EdgepruneError(f"{_label(data)} has only {len(train_src)} samples: too few to hold out selection data")
            perm = np.random.default_rng(seed).permutation(len(train_src))
            val = eval_loader(train_src.subset(np.sort(perm[:n_val])), "val")
            train_images = train_src.subset(np.sort(perm[n_val:]))
            info["val_source"] = f"held-out {val_fraction:g} of --data (seed {seed})"
        if train_limit is not None and train_limit < len(train_images):
            train_images = train_images.subset(np.arange(train_limit))
        train = make_loader(train_images, batch_size, train_tf, shuffle=True, seed=seed)
        info["train_samples"] = len(train_images)
    if test_src is None and isinstance(train_src, UserData) and train_src.test is not None:
        test_src = train_src  # the data function brought its own test loader
    test = eval_loader(test_src, "test") if test_src is not None else None
    info["val_samples"] = _samples(val)
    info["test_samples"] = _samples(test) if test is not None else None

    if evaluate is top1 and num_classes is None:
        labelled = [s.labels for s in (train_images, val_src, test_src) if isinstance(s, ImageSet)]
        num_classes = int(max(int(lab.max()) for lab in labelled)) + 1 if labelled else None
    info["metric"] = "top1" if evaluate is top1 else getattr(evaluate, "__name__", "custom")
    info["num_classes"] = num_classes
    return TaskData(train=train, val=val, test=test, evaluate=evaluate, loss=loss, num_classes=num_classes,
                    input_shape=input_shape, metric_name=info["metric"], info=info, train_images=train_images,
                    train_transform=train_tf, batch_size=batch_size, seed=seed, calibration_transform=eval_tf)


def _load(source: str | Path | DataSpec | Arrays, ctx: _Ctx) -> ImageSet | UserData:
    if isinstance(source, tuple):
        x, y = check_arrays(source[0], source[1], "arrays", input_shape=ctx.input_shape, num_classes=ctx.num_classes)
        return ImageSet(_ArrayStore(x, y))
    spec = source if isinstance(source, DataSpec) else DataSpec.parse(source)
    return SOURCES[spec.kind].load(spec, ctx)


def _label(source: Any) -> str | None:
    if source is None:
        return None
    if isinstance(source, tuple):
        return f"arrays of {len(source[0])} samples"
    return str(source)


def _samples(loader: Iterable) -> int | None:
    ds = getattr(loader, "dataset", None)
    return len(ds) if ds is not None and hasattr(ds, "__len__") else None
