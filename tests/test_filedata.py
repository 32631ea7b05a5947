"""nlbench.filedata and nlbench.filestream: official-layout parsing, validation messages, the stream."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):  # the package is not installed; run from a checkout
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from fixtures_filedata import make_clothing1m, make_webvision  # noqa: E402
from nlbench.filedata import (  # noqa: E402
    CLOTHING1M_CLASSES, CLOTHING1M_FILES, FileData, load_clothing1m, load_webvision,
)
from nlbench.filestream import FileStream  # noqa: E402
from nlbench.registry import ConfigError, DataError  # noqa: E402

CPU = torch.device("cpu")


def small(data: FileData, resize: int = 20, crop: int = 16) -> FileData:
    """Shrink the transform sizes so stream tests stay fast."""
    return dataclasses.replace(data, resize=resize, train_size=crop, test_size=crop)


@pytest.fixture(scope="module")
def c1m(tmp_path_factory):
    root = tmp_path_factory.mktemp("c1m")
    info = make_clothing1m(root, per_class=2)
    return info, load_clothing1m(root)


@pytest.fixture(scope="module")
def wv(tmp_path_factory):
    root = tmp_path_factory.mktemp("wv")
    return make_webvision(root, per_class=2, with_imagenet=True)


# --------------------------------------------------------------------------------------------
# Clothing1M


def test_clothing1m_parses_official_layout(c1m):
    info, data = c1m
    assert data.name == "clothing1m"
    assert data.classes == CLOTHING1M_CLASSES and data.num_classes == 14
    assert data.train == info["train"]
    assert set(data.tests) == {"val", "test"}
    assert data.tests["val"] == info["val"] and data.tests["test"] == info["test"]
    assert data.mean == (0.6959, 0.6537, 0.6371) and data.std == (0.3113, 0.3192, 0.3214)
    assert (data.resize, data.train_size, data.test_size) == (256, 224, 224)
    assert data.meta["num_train"] == 28 and data.meta["num_val"] == 28 and data.meta["num_test"] == 28
    assert data.meta["noisy_label_kv_entries"] == 31
    assert data.meta["warnings"]  # tiny copy: counts differ from the published ones
    # noisy labels as shipped (every third flipped by the fixture), not the folder class
    assert data.labels("train").tolist() == [y for _, y in info["train"]]
    assert data.labels("train").tolist() != [int(p.split("/")[1]) for p, _ in info["train"]]
    for p, _ in data.train[:3]:
        assert (data.root / p).is_file()


def test_clothing1m_annotations_in_root(tmp_path):
    info = make_clothing1m(tmp_path, per_class=1, annotations_in_root=True)
    data = load_clothing1m(tmp_path)
    assert data.train == info["train"] and len(data.tests["test"]) == 14
    assert data.meta["files"]["noisy_label_kv.txt"] == str(tmp_path / "noisy_label_kv.txt")


def test_clothing1m_dividemix_layout_without_images_level(tmp_path):
    info = make_clothing1m(tmp_path, per_class=1)
    (tmp_path / "images").rename(tmp_path / "moved")
    for d in (tmp_path / "moved").iterdir():
        d.rename(tmp_path / d.name)
    data = load_clothing1m(tmp_path)
    assert data.meta["image_prefix_stripped"] is True
    assert data.train[0] == (info["train"][0][0][len("images/"):], info["train"][0][1])
    assert (tmp_path / data.tests["val"][0][0]).is_file()


@pytest.mark.parametrize("missing", CLOTHING1M_FILES)
def test_clothing1m_missing_annotation_file(tmp_path, missing):
    info = make_clothing1m(tmp_path, per_class=1)
    (info["annotation_dir"] / missing).unlink()
    with pytest.raises(DataError) as e:
        load_clothing1m(tmp_path)
    msg = str(e.value)
    assert missing in msg
    assert [f for f in CLOTHING1M_FILES if f in msg] == [missing]  # only the missing one
    assert str(tmp_path / "annotations") in msg and "on request" in msg


def test_clothing1m_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist.*on request"):
        load_clothing1m(tmp_path / "nope")


def test_clothing1m_malformed_line_reports_line_number(tmp_path):
    info = make_clothing1m(tmp_path, per_class=1)
    kv = info["annotation_dir"] / "noisy_label_kv.txt"
    good = kv.read_text()
    lines = good.splitlines()
    lines[4] = lines[4].split()[0]  # label dropped on line 5
    kv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"noisy_label_kv\.txt, line 5: malformed"):
        load_clothing1m(tmp_path)
    lines[4] = lines[4] + " x"  # non-integer label
    kv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 5: malformed"):
        load_clothing1m(tmp_path)
    kv.write_text(good)
    keys = info["annotation_dir"] / "clean_val_key_list.txt"
    keys.write_text("a.jpg\nb.jpg 3\n")
    with pytest.raises(DataError, match=r"clean_val_key_list\.txt, line 2"):
        load_clothing1m(tmp_path)


def test_clothing1m_label_out_of_range(tmp_path):
    info = make_clothing1m(tmp_path, per_class=1)
    kv = info["annotation_dir"] / "clean_label_kv.txt"
    lines = kv.read_text().splitlines()
    lines[2] = lines[2].split()[0] + " 14"
    kv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"clean_label_kv\.txt, line 3: label 14 is outside 0\.\.13"):
        load_clothing1m(tmp_path)


def test_clothing1m_key_without_label(tmp_path):
    info = make_clothing1m(tmp_path, per_class=1)
    keys = info["annotation_dir"] / "clean_test_key_list.txt"
    keys.write_text(keys.read_text() + "images/1/1/orphan.jpg\n")
    with pytest.raises(DataError, match=r"images/1/1/orphan\.jpg.*|.*orphan") as e:
        load_clothing1m(tmp_path)
    assert "clean_test_key_list.txt" in str(e.value) and "clean_label_kv.txt" in str(e.value)


def test_clothing1m_missing_images(tmp_path):
    info = make_clothing1m(tmp_path, per_class=1)
    first = tmp_path / info["val"][0][0]
    first.unlink()
    with pytest.raises(DataError) as e:
        load_clothing1m(tmp_path)
    assert str(first) in str(e.value) and "(val)" in str(e.value)


# --------------------------------------------------------------------------------------------
# WebVision


def test_webvision_parses_and_filters(wv):
    data = load_webvision(wv["root"])
    assert data.name == "webvision" and data.num_classes == 50
    assert data.classes[:2] == ["class_000", "class_001"]
    assert data.train == [(p, y) for p, y in wv["train"] if y < 50]
    assert len(data.train) == 100 and max(y for _, y in data.train) == 49
    assert data.tests["webvision"] == [(f"val_images_256/{p}", y) for p, y in wv["val"] if y < 50]
    assert sorted(data.tests["imagenet"]) == sorted(wv["imagenet"])
    assert data.meta["num_train_listed"] == 120 and data.meta["num_imagenet_val"] == 100
    assert "imagenet_missing" not in data.meta
    assert (data.mean, data.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (data.resize, data.train_size, data.test_size) == (256, 224, 224)
    for split in data.tests.values():
        assert all((data.root / p).is_file() for p, _ in split)


def test_webvision_num_classes_and_sizes(wv):
    data = load_webvision(wv["root"], num_classes=10, resize=320, crop=299)
    assert data.num_classes == 10 and len(data.train) == 20
    assert {y for _, y in data.tests["webvision"]} == set(range(10))
    assert {y for _, y in data.tests["imagenet"]} == set(range(10))
    assert (data.resize, data.train_size, data.test_size) == (320, 299, 299)
    with pytest.raises(ConfigError):
        load_webvision(wv["root"], num_classes=0)
    with pytest.raises(ConfigError):
        load_webvision(wv["root"], resize=200, crop=224)


def test_webvision_synsets_and_missing_imagenet(tmp_path):
    make_webvision(tmp_path, per_class=1, with_imagenet=False, with_synsets=True)
    data = load_webvision(tmp_path)
    assert len(data.classes) == 50 and data.classes[0].startswith("n01440764")
    assert set(data.tests) == {"webvision"}
    assert data.meta["imagenet_missing"] == str(tmp_path / "imagenet" / "val")
    assert any("ImageNet" in w for w in data.meta["warnings"])


def test_webvision_partial_imagenet(tmp_path):
    make_webvision(tmp_path, per_class=1)
    for f in (tmp_path / "imagenet" / "val" / "7").iterdir():
        f.unlink()
    (tmp_path / "imagenet" / "val" / "7").rmdir()
    with pytest.raises(DataError, match=r"imagenet/val/7"):
        load_webvision(tmp_path)


@pytest.mark.parametrize("missing", ["info/train_filelist_google.txt", "info/val_filelist.txt"])
def test_webvision_missing_file_list(tmp_path, missing):
    make_webvision(tmp_path, per_class=1, with_imagenet=False)
    (tmp_path / missing).unlink()
    with pytest.raises(DataError) as e:
        load_webvision(tmp_path)
    assert missing in str(e.value) and str(tmp_path / missing) in str(e.value)


def test_webvision_missing_root_malformed_and_images(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_webvision(tmp_path / "nope")
    info = make_webvision(tmp_path, per_class=1, with_imagenet=False)
    val = tmp_path / "info" / "val_filelist.txt"
    good = val.read_text()
    val.write_text(good.replace("val000003.jpg 2", "val000003.jpg two"))
    with pytest.raises(DataError, match=r"val_filelist\.txt, line 3: malformed"):
        load_webvision(tmp_path)
    val.write_text(good.replace("val000003.jpg 2", "val000003.jpg -1"))
    with pytest.raises(DataError, match=r"line 3: label -1 is outside"):
        load_webvision(tmp_path)
    val.write_text(good)
    (tmp_path / info["train"][0][0]).unlink()
    with pytest.raises(DataError, match=info["train"][0][0]):
        load_webvision(tmp_path)


# --------------------------------------------------------------------------------------------
# FileStream


def make_stream(data: FileData, **kw) -> FileStream:
    kw.setdefault("batch_size", 8)
    kw.setdefault("num_workers", 0)
    kw.setdefault("device", CPU)
    return FileStream(data, data.labels("train"), **kw)


def collect(stream: FileStream, seed: int, **kw):
    g = torch.Generator().manual_seed(seed)
    return list(stream.batches(generator=g, **kw))


def test_stream_batches_shapes_and_epoch_coverage(c1m):
    _, data = c1m
    data = small(data)
    stream = make_stream(data)
    assert stream.num_train == 28 and stream.steps() == 4
    batches = collect(stream, 0)
    assert [b.x.shape[0] for b in batches] == [8, 8, 8, 4]
    b = batches[0]
    assert b.x.shape == (8, 3, 16, 16) and b.x.dtype == torch.float32
    assert b.x.is_contiguous(memory_format=torch.channels_last)
    assert b.y.dtype == torch.int64 and b.idx.dtype == torch.int64 and b.x2 is None
    assert -5 < float(b.x.min()) < 0 < float(b.x.max()) < 5  # normalised, not 0..255
    idx = torch.cat([b.idx for b in batches])
    assert sorted(idx.tolist()) == list(range(28))  # every sample exactly once
    assert idx.tolist() != list(range(28))  # shuffled
    assert torch.equal(torch.cat([b.y for b in batches]), data.labels("train")[idx])
    # drop_last, explicit indices, no shuffle, two views
    assert [b.x.shape[0] for b in collect(stream, 0, drop_last=True)] == [8, 8, 8]
    sub = torch.tensor([5, 3, 9, 1, 0])
    (b,) = collect(stream, 0, indices=sub, shuffle=False, views=2)
    assert b.idx.tolist() == [5, 3, 9, 1, 0] and b.x2 is not None and b.x2.shape == b.x.shape
    assert not torch.equal(b.x, b.x2)  # independent augmentations
    # a last batch of one sample is dropped (train-mode batch norm), as steps() says
    assert [b.x.shape[0] for b in collect(stream, 0, indices=torch.arange(17))] == [8, 8]
    assert stream.steps(17) == 2 and stream.steps(18) == 3 and stream.steps(18, batch_size=9) == 2
    # augment=False: the deterministic test view
    plain = collect(stream, 0, indices=sub, shuffle=False, augment=False)
    assert torch.equal(plain[0].x, collect(stream, 5, indices=sub, shuffle=False, augment=False)[0].x)
    mask = torch.zeros(28, dtype=torch.bool)
    mask[[2, 4]] = True
    assert sorted(torch.cat([b.idx for b in collect(stream, 0, indices=mask)]).tolist()) == [2, 4]


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x.x, y.x) and torch.equal(x.idx, y.idx) and torch.equal(x.y, y.y)
        and (x.x2 is None) == (y.x2 is None) and (x.x2 is None or torch.equal(x.x2, y.x2))
        for x, y in zip(a, b))


def test_stream_determinism_across_workers(c1m):
    _, data = c1m
    data = small(data)
    s0, s2 = make_stream(data, num_workers=0), make_stream(data, num_workers=2)
    global_state = torch.get_rng_state()
    a = collect(s0, 7, views=2)
    assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG is left alone
    assert same(a, collect(s0, 7, views=2))
    assert same(a, collect(s2, 7, views=2))  # workers change nothing
    assert same(collect(s2, 3), collect(s2, 3))
    assert not same(a, collect(s0, 8, views=2))
    # successive epochs from one generator differ, and the generator alone fixes them
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    e1 = [list(s0.batches(generator=g1)) for _ in range(2)]
    e2 = [list(s2.batches(generator=g2)) for _ in range(2)]
    assert same(e1[0], e2[0]) and same(e1[1], e2[1]) and not same(e1[0], e1[1])


def test_stream_class_balanced_subset(c1m):
    _, data = c1m
    data = small(data)
    # imbalanced noisy labels: class 0 gets 14 samples, classes 1..3 get the rest
    labels = torch.tensor([0] * 14 + [1] * 6 + [2] * 5 + [3] * 3)
    stream = FileStream(data, labels, batch_size=4, num_workers=0, device=CPU,
                        samples_per_epoch=12, class_balanced=True)
    # cap ceil(12/14) = 1 per class -> 4 samples (one of each non-empty class)
    assert stream.epoch_size == 4
    stream = FileStream(data, labels, batch_size=4, num_workers=0, device=CPU,
                        samples_per_epoch=56, class_balanced=True)
    assert stream.epoch_size == 4 + 4 + 4 + 3  # cap ceil(56/14) = 4 per class
    for seed in range(3):
        idx = torch.cat([b.idx for b in collect(stream, seed)])
        assert len(set(idx.tolist())) == idx.numel() == 15
        counts = torch.bincount(labels[idx], minlength=14)
        assert counts[:4].tolist() == [4, 4, 4, 3] and counts[4:].sum() == 0
    subsets = [stream.draw_subset(torch.Generator().manual_seed(s)) for s in range(4)]
    assert any(not torch.equal(subsets[0], s) for s in subsets[1:])  # a fresh subset each epoch
    # plain subset (not balanced), and the total cap S
    plain = FileStream(data, labels, batch_size=4, num_workers=0, device=CPU, samples_per_epoch=10)
    assert plain.epoch_size == 10 and plain.draw_subset(torch.Generator()).numel() == 10
    capped = FileStream(data, labels, batch_size=4, num_workers=0, device=CPU,
                        samples_per_epoch=2, class_balanced=True)
    assert capped.draw_subset(torch.Generator()).numel() == 2
    with pytest.raises(ConfigError):
        FileStream(data, labels, batch_size=4, num_workers=0, device=CPU, class_balanced=True)


class TinyNet(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, k)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().mean((2, 3)))


def test_stream_infer_index_order_and_eval(c1m):
    _, data = c1m
    data = small(data)
    stream = make_stream(data, infer_batch_size=5, num_workers=2)
    net = TinyNet(14).train()
    full = stream.infer(net)
    assert full.shape == (28, 14) and full.dtype == torch.float32 and full.device == CPU
    assert net.training  # mode restored
    assert not full.requires_grad
    perm = torch.tensor([13, 2, 27, 0, 5, 6, 1])
    assert torch.allclose(stream.infer(net, indices=perm), full[perm], atol=1e-6)
    # eval mode, test transform: equals the net on the evaluation images in list order
    xs = torch.cat([x for x, _ in _train_eval_images(stream)])
    net.eval()
    with torch.no_grad():
        assert torch.allclose(net(xs), full, atol=1e-5)
    net.train()
    # eval_batches over the clean splits
    ys = [y for _, y in stream.eval_batches("val", batch_size=10)]
    assert [y.numel() for y in ys] == [10, 10, 8]
    assert torch.equal(torch.cat(ys), data.labels("val"))
    x, _ = next(stream.eval_batches("test"))
    assert x.shape == (5, 3, 16, 16)  # infer_batch_size
    with pytest.raises(ConfigError, match="val, test"):
        stream.eval_batches("imagenet")


def _train_eval_images(stream: FileStream):
    """The training images through the test transform, via a stream whose 'test' is the train set."""
    data = dataclasses.replace(stream.data, tests={"t": stream.data.train})
    return make_stream(data, channels_last=False).eval_batches("t", batch_size=9)


def test_stream_validates_arguments(c1m):
    _, data = c1m
    data = small(data)
    with pytest.raises(ConfigError):
        FileStream(data, torch.zeros(3, dtype=torch.long), batch_size=4, num_workers=0, device=CPU)
    with pytest.raises(ConfigError):
        FileStream(data, torch.full((28,), 14), batch_size=4, num_workers=0, device=CPU)
    with pytest.raises(ConfigError):
        make_stream(data, batch_size=0)
    with pytest.raises(ConfigError):
        make_stream(dataclasses.replace(data, train_size=32))
    stream = make_stream(data)
    with pytest.raises(ConfigError):
        stream.batches(indices=torch.tensor([28]))
    with pytest.raises(ConfigError):
        stream.batches(views=3)


def test_stream_webvision_views(wv):
    data = small(load_webvision(wv["root"]), resize=24, crop=20)
    stream = make_stream(data, batch_size=16)
    b = next(iter(stream.batches(views=2, generator=torch.Generator().manual_seed(0))))
    assert b.x.shape == b.x2.shape == (16, 3, 20, 20)
    assert int(b.y.max()) < 50
    assert next(stream.eval_batches("imagenet"))[0].shape[1:] == (3, 20, 20)


def test_stream_corrupt_image_is_named(tmp_path):
    info = make_clothing1m(tmp_path, per_class=1)
    data = small(load_clothing1m(tmp_path))
    bad = tmp_path / info["train"][5][0]
    bad.write_bytes(b"not a jpeg")
    stream = make_stream(data)
    with pytest.raises(DataError, match=str(bad)):
        list(stream.batches(generator=torch.Generator()))
