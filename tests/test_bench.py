"""The training benchmark (nlbench/bench/): it runs end to end on the real trainer, every method's pass
counts (its own ``passes``, or the default) are valid, and its bare loop counts exactly what it times.
No timing is asserted: the numbers depend on the machine and its load."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import methods  # noqa: F401  (registers every method)
from nlbench import bench
from nlbench.method import METHODS, Batch

COLUMNS = ["method", "runs", "steps timed", "step samples/s", "x bare step", "host syncs/step", "epochs timed",
           "s/epoch", "samples/s (epoch)", "floor s/epoch", "x floor", "cost vs CE", "pass floor vs CE",
           "cost / pass floor"]


def test_every_registered_method_states_valid_pass_counts():
    for name, cls in METHODS.items():
        cls.pass_counts()   # a misspelt key in a method's `passes` is an error naming it


def test_a_method_without_passes_gets_one_training_pass_per_network():
    """One file and one yaml are all a new method needs: the benchmark's floor has a default."""
    from nlbench.method import Method, Passes
    from nlbench.registry import ConfigError

    class Two(Method):
        num_networks = 2

        def loss(self, batch, ctx):
            raise NotImplementedError

    assert Two.pass_counts() == Passes(train=2, eval_nets=2)
    assert Two.pass_counts().at(True, 0.5) == (2.0, 0.0, 2)

    class Typo(Two):
        passes = {"train": 2, "infer_lab": 1}
    with pytest.raises(ConfigError, match="infer_lab.*valid keys.*infer_labeled"):
        Typo.pass_counts()


def test_pass_counts_agree_with_the_registry():
    for name, cls in METHODS.items():
        p = cls.pass_counts()
        # every network forwards each test image at least once, and trains in a steady epoch
        assert p.eval_nets == cls.num_networks, name
        train, _, _ = p.at(False, 1.0)
        assert train >= cls.num_networks, name
    ce = METHODS.get("ce").pass_counts().at(False, 1.0)
    assert ce == (1.0, 0.0, 1)
    assert METHODS.get("gss_sb").pass_counts().at(False, 1.0) == (1.0, 1.0, 1)   # one training + one inference pass


def test_floor_seconds_closed_form():
    bare = {"train_ips": 100.0, "infer_ips": 400.0}
    # DivideMix after warm-up at l = 0.5: 4 training passes, 2 + 6 no-grad passes, 2 nets on the test set
    p = METHODS.get("dividemix").pass_counts()
    assert bench.floor_seconds(p, False, 0.5, 1000, 200, bare) == 4 * 1000 / 100 + (8 * 1000 + 2 * 200) / 400
    # its warm-up epochs: a CE pass per network
    assert bench.floor_seconds(p, True, 0.5, 1000, 200, bare) == 2 * 1000 / 100 + 2 * 200 / 400


def test_bare_loop_counts_exactly_the_timed_steps_and_images():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]
    r = bench.bare_train(net, opt, batch_size=7, steps=5, warmup=3, shape=(3, 2, 2), num_classes=3,
                         device=torch.device("cpu"), amp=False, channels_last=True)
    assert (r.steps, r.images) == (5, 35)
    assert r.seconds > 0 and r.ips == 35 / r.seconds
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))   # it really trained
    i = bench.bare_infer(net, batch_size=11, batches=4, warmup=2, shape=(3, 2, 2), num_classes=3,
                         device=torch.device("cpu"), amp=False, channels_last=False)
    assert (i.steps, i.images) == (4, 44)
    assert net.training   # mode restored


def test_count_samples_of_composite_batches():
    b = Batch(x=torch.zeros(4, 1), y=torch.zeros(4, dtype=torch.long), idx=torch.arange(4))
    c = Batch(x=torch.zeros(3, 1), y=torch.zeros(3, dtype=torch.long), idx=torch.arange(3))
    assert bench.count_samples(b) == 4
    assert bench.count_samples((1, b)) == 4           # ELR+: (network, batch)
    from dataclasses import dataclass

    @dataclass
    class Step:
        net: int
        lab: Batch
        unl: Batch | None
    assert bench.count_samples(Step(0, b, c)) == 7    # DivideMix: labelled + unlabelled
    assert bench.count_samples(Step(0, b, None)) == 4


def test_benchmark_runs_end_to_end_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "bench.md"
    rc = bench.main(["--methods", "ce,gss_sb", "--dataset", "digits", "--scale", "smoke", "--epochs", "2",
                     "--warmup", "1", "--bare-steps", "3", "--batch-size", "32", "--device", "cpu",
                     "--threads", "1", "--infer-batches", "16,64", "--out", str(out), "train.subset_per_class=20",
                     "train.infer_batch_size=64"])
    assert rc == 0
    text = capsys.readouterr().out
    assert out.read_text().strip() == text.strip()
    header = next(line for line in text.splitlines() if line.startswith("| method |"))
    assert [c.strip() for c in header.strip("|").split("|")] == COLUMNS
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("| ce ") or line.startswith("| gss_sb ")}
    assert set(rows) == {"ce", "gss_sb"}
    for word in ("machine:", "torch ", "threads 1", "load average", "runs sharing the device: 1", "bare loop"):
        assert word in text
    by_batch = next(line for line in text.splitlines() if line.startswith("bare inference by batch size"))
    assert "16: " in by_batch and "64: " in by_batch and "(1.00x)" in by_batch.split("64: ")[1]
    import json
    res = json.loads(out.with_name(out.name + ".json").read_text())
    ce = next(m for m in res["raw"][0]["methods"] if m["method"] == "ce")
    # 200 samples in batches of 32: 7 steps per epoch (the last of 8), 6 timed after 1 warm-up step
    assert [e["steps"] for e in ce["epochs"]] == [7, 7]
    assert [e["timed_steps"] for e in ce["epochs"]] == [6, 6]
    assert [e["timed_samples"] for e in ce["epochs"]] == [5 * 32 + 8] * 2
    assert res["raw"][0]["bare"]["train_steps"] == 3 and res["raw"][0]["bare"]["train_images"] == 96
    row = next(r for r in res["rows"] if r["method"] == "ce")
    assert row["vs_ce"] == 1.0 and row["floor_vs_ce"] == 1.0


def test_unknown_method_is_one_clear_error(capsys):
    assert bench.main(["--methods", "ce,nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "valid choices" in err


def test_evaluation_runs_each_network_once_with_default_predictions():
    """Speed fix: a two-network method with the default predict/predict_nets, or its own ensemble rule
    in ``combine`` (DivideMix, ELR+), forwards each network once per test batch (it was twice: once
    for the ensemble, once per network), same accuracies."""
    from nlbench.method import Method, StepOutput
    from nlbench.trainer import TrainConfig, Trainer

    calls = []

    class Counting(nn.Module):
        def __init__(self, seed):
            super().__init__()
            torch.manual_seed(seed)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            calls.append(1)
            return self.fc(x)

    class Two(Method):
        num_networks = 2

        def loss(self, batch, ctx):
            return StepOutput(sum(n(batch.x).sum() for n in self.nets))

    class Own(Two):   # an own predict keeps both of its calls
        @torch.no_grad()
        def predict(self, x):
            return torch.softmax(self.nets[0](x) + self.nets[1](x), 1)

    class Summed(Two):   # an own ensemble rule through combine: still one forward per network
        def combine(self, logits):
            return torch.softmax(logits[0] + logits[1], 1)

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 4, generator=g), torch.randint(0, 3, (10,), generator=g)
    for cls, per_batch in ((Two, 2), (Own, 4), (Summed, 2)):
        m = cls(nets=[Counting(1), Counting(2)], num_classes=3, noisy_labels=y, generator=torch.Generator())
        tr = Trainer(m, None, {"test": lambda: iter([(x[:6], y[:6]), (x[6:], y[6:])])},
                     TrainConfig(epochs=1, batch_size=2, lr=0.1, channels_last=False), device=torch.device("cpu"),
                     data_seed=0, progress=False, log=lambda s: None)
        calls.clear()
        out = tr.evaluate()
        assert len(calls) == 2 * per_batch, cls.__name__
        ens = {Two: lambda: torch.stack([torch.softmax(n(x), 1) for n in m.nets]).mean(0),
               Own: lambda: m.predict(x),
               Summed: lambda: torch.softmax(m.nets[0](x) + m.nets[1](x), 1)}[cls]()
        assert out["test_top1_ensemble"] == 100.0 * float((ens.argmax(1) == y).sum()) / 10
