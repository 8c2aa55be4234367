"""What the teacher-logit cache's float16 costs: the KD loss from a float16 and a float32 cache against the
live float32 teacher, on every training image of digits (its identity view), for a teacher trained briefly.

    .venv/bin/python benchmarks/cache_dtype.py [--epochs 5]

Prints the largest logit difference, the KD loss's relative change (T = 4, student logits from an
untrained resnet8) and each cache's size.
"""
from __future__ import annotations

import argparse
import tempfile

import torch

from kdrepro.augment import CropFlip
from kdrepro.cache import TeacherLogitCache
from kdrepro.config import RunConfig
from kdrepro.data import load_dataset
from kdrepro.losses import kd_loss
from kdrepro.models import create_model
from kdrepro.runs import RunStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        cfg = RunConfig.from_dict(dict(method="ce", dataset="digits", model="wrn_16_2", epochs=args.epochs,
                                       crop_padding=1, hflip=False, num_threads=1, progress=False))
        result = store.run(cfg, log=lambda m: None)
        summary = result.summary
        teacher = create_model("wrn_16_2", 10, in_channels=1, weights=result.run_dir / "weights.pt")
    teacher.eval()
    data = load_dataset("digits")
    augment = CropFlip(padding=1, hflip=False)
    cpu = torch.device("cpu")
    views = torch.full((len(data),), augment.identity_view, dtype=torch.long)
    idx = torch.arange(len(data))
    with torch.no_grad():
        live = teacher(data.normalize(augment.apply(data.images, views)))
    torch.manual_seed(1)
    student = create_model("resnet8", 10, in_channels=1).eval()
    with torch.no_grad():
        s_logits = student(data.normalize(augment.apply(data.images, views)))
    exact = kd_loss(s_logits.double(), live.double(), 4.0).item()
    print(f"teacher wrn_16_2, {args.epochs} epochs on digits: test top-1 {summary['last_top1']:.2f}; "
          f"{len(data)} images x {augment.num_views} views")
    for dtype in ("float16", "float32"):
        cache = TeacherLogitCache.build(teacher, data, augment, cpu, dtype=dtype, progress=False)
        got = cache.lookup(idx, views)
        loss = kd_loss(s_logits.double(), got.double(), 4.0).item()
        print(f"{dtype}: max |logit - live| {(got - live).abs().max().item():.3g} (largest |logit| "
              f"{live.abs().max().item():.3g}); KD loss relative change {abs(loss - exact) / exact:.3g}; "
              f"{cache.logits.numel() * cache.logits.element_size() / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
