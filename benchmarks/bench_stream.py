"""Data-path throughput: nlbench's device-resident batches vs the usual torchvision pipeline.

Both produce the same thing per epoch: shuffled batches of 128 CIFAR-sized images with random crop
(padding 4) + horizontal flip, normalised, as float tensors. The reference is what research code
does: a Dataset over uint8 HWC arrays with per-image torchvision transforms and a DataLoader.
No network runs; this measures only the input pipeline.

    python benchmarks/bench_stream.py [--n 10000] [--runs 3] [--device cpu]

Prints a table: runs, median seconds per epoch, images/s, ratio against the reference.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from nlbench.stream import DeviceStream

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class PerImage(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.tf = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                              v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.tf(self.x[i]), self.y[i], i


def time_epochs(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (a.n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (a.n,), generator=g)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def reference(workers):
        loader = DataLoader(PerImage(x, y), batch_size=128, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(1), pin_memory=dev.type == "cuda")

        def epoch():
            for xb, yb, _ in loader:
                xb.to(dev, non_blocking=True)
            sync()
        return epoch

    stream = DeviceStream(x, y, mean=MEAN, std=STD, crop_pad=4, flip=True, batch_size=128, device=dev,
                          channels_last=True)
    gen = torch.Generator().manual_seed(2)

    def device_epoch(views=1):
        def epoch():
            for b in stream.batches(generator=gen, views=views):
                pass
            sync()
        return epoch

    rows = [("torchvision per-image, DataLoader 0 workers (reference)", reference(0)),
            ("torchvision per-image, DataLoader 2 workers", reference(2)),
            ("nlbench DeviceStream, 1 view", device_epoch(1)),
            ("nlbench DeviceStream, 2 views", device_epoch(2))]
    results = []
    for name, fn in rows:
        fn()  # warm-up
        results.append((name, time_epochs(fn, a.runs)))
    ref = statistics.median(results[0][1])
    print(f"data path, {a.n} images of 3x32x32, batch 128, device {dev} "
          f"({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU, %d threads' % torch.get_num_threads()})")
    print(f"| pipeline | runs | median s/epoch | images/s | speed-up vs reference |")
    print(f"|---|---|---|---|---|")
    for name, ts in results:
        med = statistics.median(ts)
        print(f"| {name} | {len(ts)} | {med:.3f} | {a.n / med:,.0f} | {ref / med:.1f}x |")


if __name__ == "__main__":
    main()
