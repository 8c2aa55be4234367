"""Batched crop-and-flip augmentation on the device, as a finite set of views.

The standard CIFAR augmentation of the authors' code (``train_cinic.py``: ``Pad(4, padding_mode='reflect')``,
``RandomCrop(32)``, ``RandomHorizontalFlip()``) picks, per image, a crop offset ``(dy, dx)`` in
``{0..2p} x {0..2p}`` of the padded image and a flip bit: ``(2p+1)^2 * 2`` = 162 equally likely views for
``p = 4``. Numbering the views makes every augmented image reproducible from ``(index, view)``, so a
teacher's logits can be cached exactly per view.

``padding_mode="constant"`` (zero padding) gives ``RandomCrop(32, padding=4)`` instead, the transform of
the authors' ``model/data_loader.py``.

View id layout: ``view = (dy * (2p+1) + dx) * F + flip`` with ``F = 2`` when flipping is on, else 1.
"""
from __future__ import annotations

import torch

__all__ = ["CropFlip"]

_PADDING_MODES = ("reflect", "constant")


class CropFlip:
    """Pad by ``padding`` (reflect, or zeros for ``"constant"``), crop back to the input size, maybe flip.

    ``apply`` is fully batched: the source pixel of every output pixel is computed with index arithmetic
    (reflection folded into the indices) and fetched with one ``gather``: no padded copy, no per-image loop.
    """

    def __init__(self, padding: int = 4, hflip: bool = True, padding_mode: str = "reflect") -> None:
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be a non-negative int; got {padding!r}")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}; got {padding_mode!r}")
        self.padding = padding
        self.hflip = bool(hflip)
        self.padding_mode = padding_mode
        self._offsets = 2 * padding + 1
        self._flips = 2 if self.hflip else 1
        self.num_views = self._offsets**2 * self._flips
        self.identity_view = (padding * self._offsets + padding) * self._flips

    def __repr__(self) -> str:
        return f"CropFlip(padding={self.padding}, hflip={self.hflip}, padding_mode={self.padding_mode!r})"

    def sample_views(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``n`` view ids drawn uniformly from ``[0, num_views)`` (int64, on ``device``).

        ``device`` defaults to the generator's device; the generator must live on that device.
        """
        if device is None:
            device = generator.device if generator is not None else "cpu"
        return torch.randint(self.num_views, (int(n),), generator=generator, device=device)

    def decode(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """View ids -> ``(dy, dx, flip)`` LongTensors (offsets into the padded image, flip in {0, 1})."""
        views = torch.as_tensor(views, dtype=torch.long)
        flip = views % self._flips
        offset = torch.div(views, self._flips, rounding_mode="floor")
        return torch.div(offset, self._offsets, rounding_mode="floor"), offset % self._offsets, flip

    def encode(self, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`decode`."""
        dy, dx, flip = (torch.as_tensor(t, dtype=torch.long) for t in (dy, dx, flip))
        return (dy * self._offsets + dx) * self._flips + flip

    def apply(self, images: torch.Tensor, views: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Augment ``images`` ``[B, C, H, W]`` (any dtype) with one view each; same dtype, shape and device.

        ``check=False`` skips the range check of ``views`` (it reads two values back from the device: a host
        synchronisation per batch on a GPU); the engine passes it for the views it drew itself."""
        if images.dim() != 4:
            raise ValueError(f"images must be a batch [B, C, H, W]; got shape {tuple(images.shape)}")
        batch, channels, height, width = images.shape
        views = torch.as_tensor(views, dtype=torch.long, device=images.device).reshape(-1)
        if len(views) != batch:
            raise ValueError(f"need one view per image: {batch} images but {len(views)} views")
        if check and batch and (int(views.min()) < 0 or int(views.max()) >= self.num_views):
            raise ValueError(
                f"view ids must lie in [0, {self.num_views}) for {self!r}; "
                f"got range [{int(views.min())}, {int(views.max())}]"
            )
        if self.padding_mode == "reflect" and self.padding >= min(height, width):
            raise ValueError(
                f"reflect padding {self.padding} needs images larger than the padding; got {height}x{width} "
                "(use a smaller padding or padding_mode='constant')"
            )
        dy, dx, flip = self.decode(views)
        p = self.padding
        rows = torch.arange(height, device=images.device) + (dy - p)[:, None]  # [B, H] source rows
        cols = torch.arange(width, device=images.device)
        cols = torch.where(flip[:, None].bool(), width - 1 - cols, cols) + (dx - p)[:, None]  # [B, W]
        rows, row_inside = self._fold(rows, height)
        cols, col_inside = self._fold(cols, width)
        source = (rows[:, :, None] * width + cols[:, None, :]).view(batch, 1, height * width)
        flat = images.reshape(batch, channels, height * width)
        out = torch.gather(flat, 2, source.expand(batch, channels, height * width)).view(batch, channels, height, width)
        if self.padding_mode == "constant":
            inside = row_inside[:, None, :, None] & col_inside[:, None, None, :]
            out = out.masked_fill(~inside, 0)
        return out

    def _fold(self, index: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Map padded coordinates to source coordinates; also say which ones were inside the image.

        Reflect (no edge repeat, as ``torch.nn.functional.pad`` and torchvision): -1 -> 1, size -> size - 2.
        Constant: clamped, and masked to zero by the caller.
        """
        inside = (index >= 0) & (index < size)
        if self.padding_mode == "reflect":
            index = index.abs()
            index = torch.where(index >= size, 2 * (size - 1) - index, index)
        else:
            index = index.clamp(0, size - 1)
        return index, inside
