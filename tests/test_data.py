"""Datasets (digits, synthetic CIFAR-100, the real CIFAR-10 copy), balanced subsets, and DeviceStream."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import SMOKE, make_results, read_json, run_cli, write_cifar100

from nlbench.data import balanced_subset, load_dataset
from nlbench.registry import ConfigError, DataError
from nlbench.stream import DeviceStream


# ------------------------------------------------------------------------------------ digits
def test_digits_shapes_and_fixed_split():
    d = load_dataset("digits", data_dir="unused")
    assert d.name == "digits" and d.num_classes == 10 and d.in_channels == 1
    assert tuple(d.train_x.shape) == (1347, 1, 8, 8) and tuple(d.test_x.shape) == (450, 1, 8, 8)
    assert d.train_x.dtype == torch.uint8 and d.test_x.dtype == torch.uint8
    assert d.train_y.shape == (1347,) and d.test_y.shape == (450,) and d.train_y.dtype == np.int64
    # stratified 75/25 split with random_state 0: pinned so that it can never drift silently
    assert np.bincount(d.train_y).tolist() == [133, 136, 133, 137, 136, 136, 136, 134, 131, 135]
    assert np.bincount(d.test_y).tolist() == [45, 46, 44, 46, 45, 46, 45, 45, 43, 45]
    assert hashlib.sha256(d.train_index.astype("<i8").tobytes()).hexdigest()[:16] == "f2628e8cf0fbd507"
    assert np.all(np.diff(d.train_index) > 0)
    again = load_dataset("digits", data_dir="unused")
    assert np.array_equal(again.train_index, d.train_index) and torch.equal(again.train_x, d.train_x)
    assert 0 < d.mean[0] < 1 and 0 < d.std[0] < 1


# ------------------------------------------------------------------------------------ subsets
def test_balanced_subset_exact_counts_and_deterministic():
    labels = np.random.default_rng(0).integers(0, 7, size=2000)
    idx = balanced_subset(labels, 25, seed=3)
    assert np.bincount(labels[idx], minlength=7).tolist() == [25] * 7
    assert len(np.unique(idx)) == len(idx) == 175 and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, balanced_subset(labels, 25, seed=3))
    assert not np.array_equal(idx, balanced_subset(labels, 25, seed=4))
    with pytest.raises(ConfigError, match="exceeds"):
        balanced_subset(labels, 10_000, seed=0)


def test_subset_keeps_official_indices():
    d = load_dataset("digits", data_dir="unused")
    idx = balanced_subset(d.train_y, 5, seed=0)
    s = d.subset(idx)
    assert tuple(s.train_x.shape) == (50, 1, 8, 8) and np.bincount(s.train_y).tolist() == [5] * 10
    assert np.array_equal(s.train_index, d.train_index[idx]) and torch.equal(s.train_x, d.train_x[idx])
    assert s.meta["subset_size"] == 50 and len(s.meta["subset_hash"]) == 16
    assert s.test_x is d.test_x


# ------------------------------------------------------------------------------------ CIFAR-100 (synthetic)
def test_synthetic_cifar100_loads_fine_and_coarse(cifar100_dir):
    import pickle

    d = load_dataset("cifar100", data_dir=cifar100_dir)
    assert d.num_classes == 100 and d.classes[:2] == ["fine0", "fine1"]
    assert tuple(d.train_x.shape) == (800, 3, 32, 32) and tuple(d.test_x.shape) == (100, 3, 32, 32)
    with open(cifar100_dir / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    assert d.train_y.tolist() == raw["fine_labels"]
    assert d.coarse_train.tolist() == raw["coarse_labels"] == [f % 20 for f in raw["fine_labels"]]
    # channel-major rows -> (3, 32, 32): the first 1024 bytes are the red plane
    assert torch.equal(d.train_x[0, 0].flatten(), torch.from_numpy(raw["data"][0, :1024]))
    assert torch.equal(d.train_x[0, 2].flatten(), torch.from_numpy(raw["data"][0, 2048:]))
    assert d.meta["md5_ok"] is False and d.meta["coarse_label_names"][0] == "coarse0"
    s = d.subset(balanced_subset(d.train_y, 2, seed=0))
    assert np.array_equal(s.coarse_train, s.train_y % 20)


def test_cifar100_missing_key_is_data_error(tmp_path):
    import pickle

    root = write_cifar100(tmp_path)
    p = root / "cifar-100-python" / "test"
    with open(p, "rb") as f:
        obj = pickle.load(f)
    del obj["coarse_labels"]
    with open(p, "wb") as f:
        pickle.dump(obj, f)
    with pytest.raises(DataError, match="coarse_labels"):
        load_dataset("cifar100", data_dir=root)


# ------------------------------------------------------------------------------------ CIFAR-10 (real copy)
@pytest.fixture(scope="module")
def cifar10(shared_data):
    return load_dataset("cifar10", data_dir=shared_data)


def test_real_cifar10_copy_loads(cifar10, shared_data):
    d = cifar10
    assert tuple(d.train_x.shape) == (50000, 3, 32, 32) and tuple(d.test_x.shape) == (10000, 3, 32, 32)
    assert d.train_x.dtype == torch.uint8
    assert d.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert np.bincount(d.train_y).tolist() == [5000] * 10
    assert np.array_equal(d.test_y, np.repeat(np.arange(10), 1000))      # this copy's test set is class-sorted
    assert np.array_equal(d.train_index, np.arange(50000))
    assert d.meta["md5_ok"] is False                                    # JPEG-derived: not the official bytes
    # the official training order: labels equal CIFAR-10N's clean labels
    n = shared_data / "cifar-n" / "CIFAR-10_human.pt"
    if not n.is_file():
        return
    human = torch.load(n, weights_only=False)
    assert np.array_equal(np.asarray(human["clean_label"]), d.train_y)


def test_real_cifar10_smoke_run_completes(shared_data, tmp_path):
    res = make_results(tmp_path)
    r = run_cli(["run", *SMOKE, "dataset=cifar10", "noise=asym0.4", "train.epochs=1", f"data_dir={shared_data}"],
                res)
    assert r.rc == 0, r.err
    (path,) = res.records()
    rec = read_json(path)
    assert rec["status"] == "completed" and rec["dataset"] == "cifar10" and rec["backbone"] == "cnn_small"
    assert rec["data"]["num_train"] == 80 and rec["data"]["md5_ok"] is False and "subset_hash" in rec["data"]
    # asym flips exactly round(0.4 * 8) = 3 of each of the 5 source classes (9, 2, 4, 3, 5): 15 of 80
    assert rec["noise"]["actual_rate"] == 15 / 80 and rec["noise"]["n_noisy"] == 15
    assert 0 <= rec["final"]["acc_last"] <= 100


# ------------------------------------------------------------------------------------ DeviceStream
def _images(n=100, c=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, c, h, w), generator=g, dtype=torch.int64).to(torch.uint8)


def _stream(x, **kw):
    c = x.shape[1]
    kw.setdefault("batch_size", 16)
    # mean 0, std 1/255: normalise() is then the identity on pixel values (exact in fp32)
    return DeviceStream(x, torch.arange(len(x)) % 10, mean=(0.0,) * c, std=(1 / 255,) * c, **kw)


def test_every_index_exactly_once_per_epoch():
    s = _stream(_images(100), batch_size=16)       # 6 full batches + 4
    g = torch.Generator().manual_seed(0)
    seen = []
    for epoch in range(3):
        idx = torch.cat([b.idx for b in s.batches(generator=g)])
        assert sorted(idx.tolist()) == list(range(100))
        seen.append(idx.tolist())
        assert epoch == 0 or seen[-1] != seen[-2], "a new permutation each epoch"
    assert seen[0] != list(range(100))
    assert s.steps() == len(list(s.batches(generator=g))) == 7
    for b in s.batches(generator=g):
        assert torch.equal(b.y, s.y[b.idx]) and torch.equal(b.x, s.x[b.idx].float())
    # a subset of indices, unshuffled, in order
    sub = torch.tensor([5, 3, 99, 0])
    assert torch.cat([b.idx for b in s.batches(indices=sub, shuffle=False)]).tolist() == [5, 3, 99, 0]
    # a last batch of one sample is dropped (train-mode batch norm cannot use it), and steps() agrees
    s1 = _stream(_images(33), batch_size=16)
    assert s1.steps() == 2 == len(list(s1.batches(generator=g)))


def test_same_generator_same_batches():
    s = _stream(_images(100), crop_pad=2, flip=True)

    def epoch(seed):
        return [(b.idx, b.x, b.x2) for b in s.batches(views=2, generator=torch.Generator().manual_seed(seed))]

    a, b, c = epoch(7), epoch(7), epoch(8)
    assert len(a) == len(b)
    for (i1, x1, y1), (i2, x2, y2) in zip(a, b):
        assert torch.equal(i1, i2) and torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, c))


def _all_crops(img: torch.Tensor, p: int) -> list[torch.Tensor]:
    """Every crop (and its mirror) of ``img`` zero-padded by ``p``: the support of crop+flip."""
    c, h, w = img.shape
    padded = torch.zeros(c, h + 2 * p, w + 2 * p, dtype=img.dtype)
    padded[:, p:p + h, p:p + w] = img
    out = []
    for oy in range(2 * p + 1):
        for ox in range(2 * p + 1):
            crop = padded[:, oy:oy + h, ox:ox + w]
            out += [((oy, ox, False), crop), ((oy, ox, True), crop.flip(2))]
    return out


def test_crop_flip_keep_shape_and_equal_a_crop_of_the_padded_image():
    x = _images(64, c=3, h=8, w=8)
    s = _stream(x, crop_pad=2, flip=True, batch_size=64)
    (b,) = list(s.batches(generator=torch.Generator().manual_seed(0), shuffle=False))
    assert b.x.shape == (64, 3, 8, 8) and b.x.dtype == torch.float32
    used = set()
    for i in range(64):
        got = b.x[i]
        matches = [k for k, crop in _all_crops(x[i], 2) if torch.equal(crop.float(), got)]
        assert matches, f"image {i} is not a (flipped) crop of its padded original"
        used.update(matches)
    offsets = {k[:2] for k in used}
    flips = {k[2] for k in used}
    assert len(offsets) > 5 and flips == {False, True}, "offsets and flips are random"
    # no augmentation: the stored pixels, exactly
    (plain,) = list(s.batches(generator=torch.Generator().manual_seed(0), shuffle=False, augment=False))
    assert torch.equal(plain.x, x.float())


def test_manual_crop_matches_the_stream_draws():
    """Recompute the crop from the offsets the stream draws: pad, slice, flip."""
    x = _images(16, c=2, h=6, w=6)
    s = _stream(x, crop_pad=3, flip=True)
    s._aug.manual_seed(123)
    out = s.augment(x)
    g = torch.Generator().manual_seed(123)
    oy = torch.randint(0, 7, (16,), generator=g)
    ox = torch.randint(0, 7, (16,), generator=g)
    fl = torch.rand(16, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i in range(16):
        want = padded[i, :, oy[i]:oy[i] + 6, ox[i]:ox[i] + 6]
        if fl[i]:
            want = want.flip(2)
        assert torch.equal(out[i], want.float()), i


def test_two_views_differ():
    s = _stream(_images(64), crop_pad=2, flip=True, batch_size=32)
    for b in s.batches(views=2, generator=torch.Generator().manual_seed(0)):
        assert b.x2 is not None and b.x2.shape == b.x.shape
        assert not torch.equal(b.x, b.x2)
        differ = (b.x - b.x2).flatten(1).abs().sum(1) > 0
        assert differ.float().mean() > 0.5
    assert all(b.x2 is None for b in s.batches(views=1, generator=torch.Generator().manual_seed(0)))


def test_normalisation_and_channels_last():
    x = _images(8, c=3)
    s = DeviceStream(x, torch.zeros(8), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), channels_last=True)
    out = s.normalise(x)
    want = (x.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(out, want, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="uint8"):
        DeviceStream(x.float(), torch.zeros(8), mean=(0,) * 3, std=(1,) * 3)


def test_infer_logits_in_index_order_and_restores_mode():
    torch.manual_seed(0)
    x = _images(50, c=3, h=4, w=4)
    s = _stream(x, infer_batch_size=7)
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 5))
    net.train()
    with torch.no_grad():   # give batch norm running stats that differ from any batch's own
        net[2].running_mean.uniform_(-1, 1)
        net[2].running_var.uniform_(0.5, 2)
    idx = torch.tensor([49, 0, 17, 3, 3, 22, 8, 41, 30])
    logits = s.infer(net, indices=idx)
    assert net.training, "infer restores train mode"
    assert all(m.training for m in net.modules())
    net.eval()
    with torch.no_grad():
        want = net(x[idx].float())
    assert logits.shape == (9, 5) and logits.dtype == torch.float32
    assert torch.allclose(logits, want, atol=1e-5)
    assert torch.allclose(s.infer(net), net(x.float()).detach(), atol=1e-5)   # all samples, in order
    assert not net.training, "an eval-mode net stays in eval mode"
