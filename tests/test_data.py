"""Data loading: sources, splits, validation, batching and augmentation."""

from __future__ import annotations

import gzip
import struct
import textwrap

import numpy as np
import pytest
import torch

from edgeprune import data as D
from edgeprune.data import Augment, BatchTransform, DataSpec, load_task_data
from edgeprune.errors import EdgepruneError


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    # the test machine is shared; two OpenMP threads under contention are far slower than one
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def write_npz(path, n=60, hw=8, c=3, classes=4, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.integers(0, 256, (n, hw, hw, c), dtype=np.uint8), "y": rng.integers(0, classes, n)}
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def positions(loader):
    """Store indices a loader's ImageSet covers."""
    return set(loader.dataset.indices.tolist())


# ------------------------------------------------------------------------------------------ npz + splits


def test_npz_split_is_seeded_disjoint_and_complete(tmp_path):
    f = write_npz(tmp_path / "d.npz", n=60)
    td = load_task_data(f, val_fraction=0.2, batch_size=8, seed=1)
    train, val = set(td.train_images.indices.tolist()), positions(td.val)
    assert len(val) == 12 and len(train) == 48
    assert not train & val and train | val == set(range(60))
    again = load_task_data(f, val_fraction=0.2, batch_size=8, seed=1)
    other = load_task_data(f, val_fraction=0.2, batch_size=8, seed=2)
    assert positions(again.val) == val
    assert positions(other.val) != val
    assert td.info["val_source"].startswith("held-out 0.2")
    assert td.num_classes == int(np.load(f)["y"].max()) + 1


def test_val_data_replaces_the_split_and_train_limit_keeps_first(tmp_path):
    f = write_npz(tmp_path / "d.npz", n=40)
    v = write_npz(tmp_path / "v.npz", n=10, seed=3)
    td = load_task_data(f, v, batch_size=8, train_limit=25)
    assert td.info["val_source"] == "--val-data"
    assert td.train_images.indices.tolist() == list(range(25))
    assert sum(len(y) for _, y in td.val) == 10
    assert td.info["train_samples"] == 25


def test_batches_are_normalised_nchw_float32(tmp_path):
    x = np.zeros((10, 4, 4, 3), np.uint8)
    x[:, :, :, 1] = 255
    f = write_npz(tmp_path / "d.npz", x=x, y=np.arange(10) % 2)
    td = load_task_data(f, f, batch_size=4, mean=(0.0, 0.5, 0.5), std=(1.0, 0.25, 0.5), augment=False)
    xb, yb = next(iter(td.val))
    assert xb.dtype == torch.float32 and xb.shape == (10, 3, 4, 4) and yb.dtype == torch.int64
    assert torch.allclose(xb[:, 0], torch.tensor(0.0))
    assert torch.allclose(xb[:, 1], torch.tensor(2.0))  # (1 - 0.5) / 0.25
    assert torch.allclose(xb[:, 2], torch.tensor(-1.0))  # (0 - 0.5) / 0.5


def test_grey_nhw_arrays_get_a_channel_axis():
    x = np.zeros((6, 5, 5), np.uint8)
    td = load_task_data((x, np.arange(6) % 3), (x, np.arange(6) % 3), batch_size=3, input_shape=(1, 1, 5, 5))
    assert next(iter(td.train))[0].shape == (3, 1, 5, 5)


def test_train_loader_shards_are_disjoint_and_cover(tmp_path):
    f = write_npz(tmp_path / "d.npz", n=64)
    td = load_task_data(f, f, batch_size=8)
    seen = []
    for rank in range(2):
        td.train_images.trace = []
        loader = td.train_loader(batch_size=8, rank=rank, world_size=2, seed=5)
        D.set_epoch(loader, 3)
        batches = [len(y) for _, y in loader]
        assert set(batches) == {4}  # global batch 8 split over 2 ranks
        seen.append(set(td.train_images.trace))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(64))
    with pytest.raises(EdgepruneError, match="not divisible"):
        td.train_loader(batch_size=7, world_size=2)


def test_epochs_reshuffle(tmp_path):
    td = load_task_data(write_npz(tmp_path / "d.npz", n=50), batch_size=50, val_fraction=0.1)
    orders = []
    for epoch in (0, 1, 0):
        td.train_images.trace = []
        D.set_epoch(td.train, epoch)
        list(td.train)
        orders.append(td.train_images.trace)
    assert orders[0] != orders[1] and orders[0] == orders[2]


def test_calibration_batches_count_and_are_deterministic(tmp_path):
    td = load_task_data(write_npz(tmp_path / "d.npz", n=100, hw=32), batch_size=16, augment=True)
    a, b = td.calibration_batches(40), td.calibration_batches(40)
    assert sum(len(x) for x, _ in a) == 40
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):  # no augmentation, fixed choice
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert ya.shape == (xa.shape[0],) and ya.dtype == torch.long  # labels kept for the taylor criterion
    assert sum(len(x) for x, _ in td.calibration_batches(10_000)) == len(td.train_images)


def test_calibration_batches_keep_the_labels_of_the_images_they_pick(tmp_path):
    # every image its own label, so a label says which image it belongs to
    x = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(50)])
    td = load_task_data(write_npz(tmp_path / "d.npz", x=x, y=np.arange(50)), batch_size=8, val_fraction=0.1,
                        mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))
    batches = td.calibration_batches(20)
    assert sum(len(y) for _, y in batches) == 20
    for xb, yb in batches:
        torch.testing.assert_close(xb[:, 0, 0, 0], yb.to(xb.dtype))


# ------------------------------------------------------------------------------------------ augmentation


def _candidates(img: torch.Tensor, pad: int):
    c, h, w = img.shape
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            yield (dy, dx, False), crop
            yield (dy, dx, True), crop.flip(2)


def test_augmentation_is_a_padded_crop_or_flip_and_independent_of_batching():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(1, 256, (40, 3, 10, 10), dtype=np.uint8))
    pos = torch.arange(40)
    tf = BatchTransform((0, 0, 0), (1, 1, 1), Augment(crop_padding=2), seed=7)
    tf.epoch = 4
    out = (tf((x, None, pos))[0] * 255).round().to(torch.uint8)
    used = set()
    for i in range(40):
        match = [k for k, cand in _candidates(x[i], 2) if torch.equal(cand, out[i])]
        assert match, f"sample {i} is not a crop/flip of its padded original"
        used.add(match[0])
    assert len(used) > 10 and {k[2] for k in used} == {False, True}
    # the same sample at the same epoch gets the same crop in any batch
    part = (tf((x[[5, 17]], None, pos[[5, 17]]))[0] * 255).round().to(torch.uint8)
    assert torch.equal(part, out[[5, 17]])
    tf.epoch = 5
    assert not torch.equal((tf((x, None, pos))[0] * 255).round().to(torch.uint8), out)


def test_auto_augment_only_for_rgb_32px(tmp_path):
    small = load_task_data(write_npz(tmp_path / "a.npz", hw=8), batch_size=8)
    big = load_task_data(write_npz(tmp_path / "b.npz", hw=32), batch_size=8)
    assert small.info["augment"] is None and big.info["augment"] == {"crop_padding": 4, "hflip": True}


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"y": None}, "no array y"),
        ({"y": np.arange(5)}, "one label per image"),
        ({"x": np.zeros((0, 8, 8, 3), np.uint8), "y": np.zeros(0, np.int64)}, "holds no images"),
        ({"x": np.zeros((60, 8, 8, 3), np.float32)}, "must be uint8"),
        ({"y": np.linspace(0, 1, 60)}, "must be integers"),
        ({"y": -np.ones(60, np.int64)}, ">= 0"),
    ],
)
def test_bad_npz_contents(tmp_path, overrides, match):
    f = write_npz(tmp_path / "d.npz", **overrides)
    with pytest.raises(EdgepruneError, match=match):
        load_task_data(f)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(EdgepruneError, match="not found"):
        load_task_data(tmp_path / "nope.npz")
    with pytest.raises(EdgepruneError, match="not found"):
        load_task_data(str(tmp_path / "no_such_dir"))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file at all")
    with pytest.raises(EdgepruneError, match="not a readable .npz"):
        load_task_data(junk)
    good = write_npz(tmp_path / "good.npz")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(EdgepruneError, match="not a readable .npz"):
        load_task_data(cut)


def test_data_that_does_not_fit_the_model(tmp_path):
    f = write_npz(tmp_path / "d.npz", hw=8, c=3, classes=4)
    with pytest.raises(EdgepruneError, match="3 channels but the model takes 1"):
        load_task_data(f, input_shape=(1, 1, 8, 8))
    with pytest.raises(EdgepruneError, match="8x8 but the model takes 32x32"):
        load_task_data(f, input_shape=(1, 3, 32, 32))
    nchw = write_npz(tmp_path / "nchw.npz", x=np.zeros((60, 3, 8, 8), np.uint8))
    with pytest.raises(EdgepruneError, match="looks NCHW"):
        load_task_data(nchw, input_shape=(1, 3, 8, 8))
    y = np.full(60, 9)
    with pytest.raises(EdgepruneError, match="labels go up to 9 but the model has 4 classes"):
        load_task_data(write_npz(tmp_path / "y.npz", y=y), num_classes=4)
    with pytest.raises(EdgepruneError, match="3 values but the images have 1"):
        load_task_data((np.zeros((4, 2, 2), np.uint8), np.zeros(4, np.int64)), mean=(0.1, 0.2, 0.3))
    v = write_npz(tmp_path / "v.npz", hw=6)
    with pytest.raises(EdgepruneError, match=r"\(3, 6, 6\)"):
        load_task_data(f, v)


# ------------------------------------------------------------------------------------------ module:function

USER_MODULE = textwrap.dedent(
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    def _ds(n):
        g = torch.Generator().manual_seed(n)
        return TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 2, (n,), generator=g))

    def pair():
        return DataLoader(_ds(16), batch_size=4, shuffle=True), DataLoader(_ds(8), batch_size=4)

    def always_half(model, loader):
        return 50.0

    def with_metric(batch_size):
        return {"train": DataLoader(_ds(16), batch_size=batch_size), "val": DataLoader(_ds(8), batch_size=4),
                "test": DataLoader(_ds(4), batch_size=4), "evaluate": always_half,
                "loss": lambda out, y: out.sum() * 0, "num_classes": 2}

    def boom():
        raise RuntimeError("no dataset here")

    def wrong():
        return 42

    def typo():
        return {"train": [], "valid": []}

    def lists():
        batch = (torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
        return [batch, batch], [batch]

    def not_batches():
        return DataLoader(torch.zeros(8, 3, 8, 8), batch_size=4), []
    """
)


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "userdata.py"
    path.write_text(USER_MODULE)
    return path


def test_callable_source_from_file_and_module(user_file, monkeypatch):
    td = load_task_data(f"{user_file}:pair", batch_size=4)
    assert td.metric_name == "top1" and sum(len(y) for _, y in td.val) == 8
    monkeypatch.syspath_prepend(str(user_file.parent))
    td = load_task_data("userdata:with_metric", batch_size=8, input_shape=(1, 3, 8, 8))
    assert td.evaluate(torch.nn.Identity(), td.val) == 50.0
    assert td.metric_name == "always_half" and td.num_classes == 2 and td.info["test_samples"] == 4
    assert float(td.loss(torch.ones(2, 2), torch.zeros(2))) == 0.0
    assert next(iter(td.train))[0].shape[0] == 8  # got batch_size from its signature
    limited = td.train_loader(batch_size=4, limit=6)
    assert sum(len(y) for _, y in limited) == 6
    shards = [list(td.train_loader(batch_size=8, rank=r, world_size=2).sampler) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 8 and set(shards[0]).isdisjoint(shards[1])


def test_calibration_batches_of_a_user_loader_are_labelled_pairs(user_file):
    td = load_task_data(f"{user_file}:with_metric", batch_size=4, input_shape=(1, 3, 8, 8))
    batches = td.calibration_batches(6)
    assert len(batches) == 2 and all(x.shape == (4, 3, 8, 8) and y.shape == (4,) for x, y in batches)


def test_plain_iterables_cannot_be_resharded(user_file):
    td = load_task_data(f"{user_file}:lists")
    assert td.train_loader() is td.train
    with pytest.raises(EdgepruneError, match="not a map-style torch DataLoader"):
        td.train_loader(world_size=2, batch_size=2)


@pytest.mark.parametrize(
    "fn, match",
    [
        ("boom", "raised RuntimeError: no dataset here"),
        ("wrong", "returned int"),
        ("typo", "unknown keys"),
        ("not_batches", r"batches must be \(inputs, targets\)"),
        ("absent", "has no function 'absent'"),
    ],
)
def test_callable_source_errors(user_file, fn, match):
    with pytest.raises(EdgepruneError, match=match):
        load_task_data(f"{user_file}:{fn}")


def test_callable_channel_mismatch_and_missing_module(user_file):
    with pytest.raises(EdgepruneError, match="3 channels but the model takes 1"):
        load_task_data(f"{user_file}:pair", input_shape=(1, 1, 8, 8))
    with pytest.raises(EdgepruneError, match="importing no_such_module_xyz failed"):
        load_task_data("no_such_module_xyz:fn")
    with pytest.raises(EdgepruneError, match="not found"):
        load_task_data("missing_file.py:fn")


def test_spec_parsing(tmp_path):
    assert DataSpec.parse("digits").kind == "named"
    assert DataSpec.parse("a/b.npz").kind == "npz"
    assert DataSpec.parse("pkg.mod:make").kind == "callable"
    assert DataSpec.parse("some/dir/file.py:make").kind == "callable"
    assert DataSpec.parse(str(tmp_path)).kind == "imagefolder"
    with pytest.raises(EdgepruneError, match="not found"):
        DataSpec.parse("nothing-here")


# ------------------------------------------------------------------------------------------ ImageFolder


def test_imagefolder_is_resized_to_the_model_input(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i, size in enumerate([(20, 12), (9, 9), (30, 40)]):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    td = load_task_data(tmp_path, tmp_path, batch_size=4, input_shape=(1, 3, 16, 16))
    x, y = next(iter(td.val))
    assert x.shape == (6, 3, 16, 16) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert td.num_classes == 2
    grey = load_task_data(tmp_path, tmp_path, batch_size=4, input_shape=(1, 1, 8, 8))
    assert next(iter(grey.val))[0].shape == (6, 1, 8, 8)
    with pytest.raises(EdgepruneError, match="2 class folders but the model has 1"):
        load_task_data(tmp_path, input_shape=(1, 3, 16, 16), num_classes=1)
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(EdgepruneError, match="not an ImageFolder|no images"):
        load_task_data(empty)


# ------------------------------------------------------------------------------------------ digits, MNIST


def test_digits_split_is_fixed_and_grey_8x8():
    td = load_task_data("digits", test_data="digits-test", batch_size=64, input_shape=(1, 1, 8, 8))
    n_train, n_val, n_test = len(td.train_images), td.info["val_samples"], td.info["test_samples"]
    assert n_train + n_val + n_test == 1797 and n_test == 360
    assert td.num_classes == 10 and td.info["augment"] is None
    x, _ = next(iter(td.test))
    assert x.shape[1:] == (1, 8, 8) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    a, b = D.NAMED_DATA["digits-test"](), D.NAMED_DATA["digits-test"]()
    assert np.array_equal(a[0], b[0])


def _idx_bytes(arr: np.ndarray) -> bytes:
    return b"\0\0\x08" + bytes([arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def test_mnist_readers(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    (tmp_path / "i.gz").write_bytes(gzip.compress(_idx_bytes(imgs)))
    (tmp_path / "l.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    x, y = D.load_mnist_idx(tmp_path / "i.gz", tmp_path / "l.gz")
    assert x.shape == (7, 28, 28, 1) and np.array_equal(x[..., 0], imgs) and np.array_equal(y, labels)
    rows = np.concatenate([imgs.reshape(7, -1), labels[:, None]], axis=1).astype(np.int64)
    with gzip.open(tmp_path / "t.csv.gz", "wt") as fh:
        np.savetxt(fh, rows, fmt="%d", delimiter=",")
    x2, y2 = D.load_mnist_train_5k(tmp_path / "t.csv.gz")
    assert np.array_equal(x2, x) and np.array_equal(y2, y)
    (tmp_path / "cut.gz").write_bytes(gzip.compress(_idx_bytes(imgs)[:-10]))
    with pytest.raises(EdgepruneError, match="truncated"):
        D.load_mnist_idx(tmp_path / "cut.gz", tmp_path / "l.gz")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04rest"))
    with pytest.raises(EdgepruneError, match="bad magic"):
        D.load_mnist_idx(tmp_path / "bad.gz", tmp_path / "l.gz")


# ------------------------------------------------------------------------------------------ data root + real data


def test_data_root_env_then_cwd(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_DATA", str(tmp_path / "x"))
    assert D.data_root() == tmp_path / "x"
    monkeypatch.delenv("EDGEPRUNE_DATA")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    assert D.data_root().resolve() == (tmp_path / "shared" / "data").resolve()


def _require(path):
    if not path.is_file():
        pytest.skip(f"shared data not found at {path} (set EDGEPRUNE_DATA to ../shared/data)")


def test_real_mnist_files():
    root = D.data_root()
    _require(root / "mnist" / "train_5k.csv.gz")
    x, y = D.load_mnist_train_5k(root / "mnist" / "train_5k.csv.gz")
    assert x.shape == (5000, 28, 28, 1) and np.bincount(y).tolist() == [500] * 10
    xt, yt = D.NAMED_DATA["mnist-t10k"]()
    assert xt.shape == (10000, 28, 28, 1) and set(np.unique(yt)) == set(range(10))


def test_real_cifar_with_pretrained_resnet20():
    """The normalisation and layout are right if the published ResNet-20 scores as published."""
    root = D.data_root()
    _require(root / "cifar10" / "val.npz")
    _require(root / "weights" / "cifar_resnet20.th")
    from edgeprune.models.cifar_resnet import CifarResNet
    from edgeprune.training import evaluate

    td = load_task_data("cifar10-val", val_fraction=0.1, batch_size=128, mean=(0.485, 0.456, 0.406),
                        std=(0.229, 0.224, 0.225), input_shape=(1, 3, 32, 32), num_classes=10, seed=0)
    state = torch.load(root / "weights" / "cifar_resnet20.th", map_location="cpu", weights_only=False)["state_dict"]
    model = CifarResNet(3)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    acc = evaluate(model, td.val, td.evaluate)
    assert td.info["val_samples"] == 500 and acc > 85.0  # published 91.7% on the full test set
