"""The noisy validation split (val_fraction) and ImageNet weights for the CIFAR ResNet18."""
import numpy as np
import pytest
import torch
import torchvision

from nlbench.backbones import build_backbone
from nlbench.data import stratified_split
from nlbench.registry import ConfigError

from conftest import SMOKE, read_json


# ------------------------------------------------------------------------------ val split
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_stratified_split_partitions_and_keeps_class_shares(fraction):
    labels = np.repeat(np.arange(5), [40, 80, 120, 20, 8])
    tr, va = stratified_split(labels, fraction, seed=3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    for c, n in enumerate([40, 80, 120, 20, 8]):
        assert (labels[va] == c).sum() == min(round(fraction * n), n - 1)
    # same seed, same split; another seed, another split
    assert np.array_equal(stratified_split(labels, fraction, 3)[1], va)
    assert not np.array_equal(stratified_split(labels, fraction, 4)[1], va)


def test_stratified_split_rejects_bad_fraction():
    with pytest.raises(ConfigError, match=r"val_fraction=1.0 is outside \[0, 1\)"):
        stratified_split(np.zeros(10), 1.0, 0)


def test_val_split_is_scored_against_noisy_labels_and_leaves_train_labels_unchanged(tmp_results, cli):
    """The held-out samples are gone from training; the kept samples' noisy labels equal those of
    the run without a split (the noise is drawn on the full set first); val_top1 is in every epoch."""
    base = ["run", "method=ce", "progress=false", "device=cpu", "train.epochs=3", "noise=sym0.4"]
    r0 = cli(base, tmp_results)
    r1 = cli(base + ["val_fraction=0.2"], tmp_results)
    assert r0.rc == 0 and r1.rc == 0, r1.err
    recs = {p.stem: read_json(p) for p in tmp_results.records()}
    with_val = next(r for r in recs.values() if r.get("val_split"))
    without = next(r for r in recs.values() if not r.get("val_split"))
    assert with_val["config_hash"] != without["config_hash"]
    n_all = without["data"]["num_train"]
    assert with_val["val_split"]["num_val"] + with_val["data"]["num_train"] == n_all
    assert abs(with_val["val_split"]["num_val"] - 0.2 * n_all) <= 10      # rounding per class
    assert with_val["val_split"]["labels"] == "noisy"
    assert all("val_top1" in h for h in with_val["history"])
    assert "test_at_best_val" in with_val["final"] and with_val["final"]["metric"] == "test_top1"
    # noisy val accuracy is capped by the label noise: far below the clean test accuracy here
    assert with_val["final"]["last_val_top1"] < with_val["final"]["acc_last"]


def test_val_split_on_a_dataset_with_its_own_clean_val_is_an_error():
    from types import SimpleNamespace

    from nlbench.prepare import _hold_out_val

    fake = SimpleNamespace(name="clothing1m", tests={"val": [], "test": []}, train=[("a", 0), ("b", 1)] * 5)
    with pytest.raises(ConfigError, match="clothing1m has its own clean validation split"):
        _hold_out_val(fake, None, np.array([0, 1] * 5), 0.2, 0)


# ------------------------------------------------------------------------------ pretrained weights
def test_resnet18_cifar_loads_imagenet_stages_and_keeps_stem_and_head_fresh(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": tv.state_dict()}, path)
    torch.manual_seed(1)
    fresh = build_backbone("resnet18_cifar", num_classes=10, in_channels=3)
    torch.manual_seed(1)
    net = build_backbone("resnet18_cifar", num_classes=10, in_channels=3, pretrained=str(path))
    sd, tsd = net.state_dict(), tv.state_dict()
    for k in tsd:
        if k.startswith("layer"):
            ck = "layers." + str(int(k[5]) - 1) + k[6:].replace("downsample.", "shortcut.")
            assert torch.equal(sd[ck], tsd[k]), k
    for k in ("conv1.weight", "bn1.weight", "linear.weight", "linear.bias"):
        assert torch.equal(sd[k], fresh.state_dict()[k]), k          # as a from-scratch init
    assert net.nlbench_init["tensors_loaded"] == sum(k.startswith("layer") for k in tsd)
    assert "stem" in net.nlbench_init["fresh"]


def test_pretrained_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="no such weight file"):
        build_backbone("resnet18_cifar", num_classes=10, in_channels=3, pretrained=str(tmp_path / "x.pth"))
    wrong = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(ConfigError, match="does not fit resnet18_cifar"):
        build_backbone("resnet18_cifar", num_classes=10, in_channels=3, pretrained=str(wrong))
    with pytest.raises(ConfigError, match="need width=64"):
        build_backbone("resnet18_cifar", num_classes=10, in_channels=3, width=16, pretrained=str(wrong))
    with pytest.raises(ConfigError, match="'cnn_small' has no pretrained weights.*resnet18_cifar, resnet50"):
        build_backbone("cnn_small", num_classes=10, in_channels=3, pretrained=True)
    build_backbone("cnn_small", num_classes=10, in_channels=3, pretrained=False)   # false is always fine


def test_cli_missing_weight_file_exits_2_and_pretrained_run_records_its_init(tmp_path, tmp_results, cli):
    # digits (8x8, one channel): the residual stages load, the 1-channel stem stays fresh anyway
    common = [*SMOKE, "backbone=resnet18_cifar", "train.epochs=1", "+dataset.scales.smoke.subset_per_class=2"]
    r = cli(["run", *common, f"backbone.options.pretrained={tmp_path / 'missing.pth'}"], tmp_results)
    assert r.rc == 2 and len(r.error_lines()) == 1 and "no such weight file" in r.err
    assert tmp_results.all_files() == []
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    r = cli(["run", *common, f"backbone.options.pretrained={path}"], tmp_results)
    assert r.rc == 0, r.err
    rec = read_json(r.records[0])
    assert rec["backbone_init"]["weights"] == str(path)
    r = cli(["run", *common, "seed=5"], tmp_results)
    scratch = [read_json(p) for p in tmp_results.records() if read_json(p)["seed"] == 5][0]
    assert scratch["backbone_init"] == "scratch"
