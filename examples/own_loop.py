"""SLKD in a plain PyTorch training loop: your data set, your models, your optimiser; kdrepro supplies the
curriculum (snapshot scoring, per-class pools, a sampler) and the loss functions.

The data set is torchvision-style (PIL images, a ``transform`` applied in ``__getitem__``, ``targets``): the
8x8 handwritten digits that ship with scikit-learn, so the example runs offline in seconds. Swap in
``torchvision.datasets.CIFAR10(root, train=True, transform=train_transform)`` for real images.

    python examples/own_loop.py            # teacher 15 epochs, SLKD student 30 epochs
    python examples/own_loop.py --quick    # 8 epochs each (the authors' pacing needs at least 8)
"""
from __future__ import annotations

import argparse

import kdrepro  # noqa: F401  (first: makes the pinned torchvision import on CPU-only torch)
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from kdrepro.curriculum import Curriculum
from kdrepro.losses import kd_loss, logit_mse


class Digits(Dataset):
    """scikit-learn's digits as a torchvision-style data set: ``(transform(PIL image), label)``."""

    def __init__(self, train: bool, transform):
        digits = load_digits()
        images = (digits.images * 15).astype(np.uint8)          # 0..16 -> 0..240
        cut = 1437                                              # the first 80 % train, the rest test
        part = slice(0, cut) if train else slice(cut, None)
        self.data, self.targets = images[part], digits.target[part].tolist()
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def small_cnn(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 10))


@torch.no_grad()
def top1(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    model.train()
    return 100.0 * correct / len(loader.dataset)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 epochs for the teacher and the student")
    args = parser.parse_args(argv)
    teacher_epochs, epochs = (8, 8) if args.quick else (15, 30)
    torch.manual_seed(0)
    torch.set_num_threads(1)

    normalize = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])]
    train_transform = v2.Compose([v2.RandomCrop(8, padding=1), *normalize])
    test_transform = v2.Compose(normalize)
    train_set, test_set = Digits(True, train_transform), Digits(False, test_transform)
    test_loader = DataLoader(test_set, batch_size=256)

    # a teacher, trained with plain cross-entropy
    teacher = small_cnn(32)
    opt = torch.optim.SGD(teacher.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(teacher_epochs):
        for x, y in DataLoader(train_set, batch_size=64, shuffle=True):
            opt.zero_grad()
            F.cross_entropy(teacher(x), y).backward()
            opt.step()
    teacher.eval()
    print(f"teacher: test top-1 {top1(teacher, test_loader):.2f}")

    # the SLKD student: the curriculum scores un-augmented views (score_transform) at every phase start
    student = small_cnn(8)
    curriculum = Curriculum(train_set, epochs=epochs, score_transform=test_transform)
    loader = DataLoader(train_set, batch_size=64, sampler=curriculum.sampler(seed=0))
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for epoch in range(epochs):
        curriculum.set_epoch(epoch, student)
        for x, y in loader:
            z = student(x)
            with torch.no_grad():
                t = teacher(x)
            # the authors' objective: CE + 0.1 * KD (T = 3) [+ 0.05 * logit MSE in the curriculum phases]
            loss = F.cross_entropy(z, y) + 0.1 * kd_loss(z, t, temperature=3.0)
            if curriculum.phase.curriculum:
                loss = loss + 0.05 * logit_mse(z, t)
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: phase {curriculum.phase.index}, pool {len(curriculum.pool)}/{len(train_set)}, "
              f"loss {loss.item():.3f}")
    print(f"student: test top-1 {top1(student, test_loader):.2f}")


if __name__ == "__main__":
    main()
