"""Bounded, seeded samples of a calibration stream (pixels or image crops).

Sampling rule (documented so a fit is reproducible):

* **pixels** (:class:`PixelSample`): each image offers at most ``pixels_per_image`` of its
  valid (non-``ignore_index``) pixels, drawn uniformly without replacement; a reservoir
  (Vitter's Algorithm R) then keeps a uniform sample of at most ``max_pixels`` of all offered
  pixels. Memory is ``max_pixels × (C + 2)`` numbers whatever the stream length.
* **crops** (:class:`CropSample`): each image offers one crop at a uniformly random position;
  a reservoir keeps at most ``max_images`` crops. Crops are ``min(crop_size, H₁) ×
  min(crop_size, W₁)`` for the first image's ``H₁ × W₁``; smaller later images are padded
  (labels with ``ignore_index``).

All random draws come from one CPU ``torch.Generator`` seeded with ``seed``, so the same
stream in the same order always yields the same sample. Sizes are validated by the
calibrators that own the samples.

**Across processes** (``torch.distributed``): :meth:`PixelSample.gather` / :meth:`CropSample.gather`
concatenate every rank's sample (rank order), then keep a seeded uniform subset of at most the
capacity, so every rank fits on the same pooled sample and gets the same parameters.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def distributed() -> bool:
    """Whether a ``torch.distributed`` process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_rows(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every rank's ``tensors`` (same trailing shapes, any number of rows) concatenated in rank order."""
    n = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(x) for x in sizes]
    out = []
    for x in tensors:
        padded = x.new_zeros(max(sizes), *x.shape[1:])
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        out.append(torch.cat([part[:size] for part, size in zip(parts, sizes)]))
    return out


def _keep_at_most(tensors: list[torch.Tensor], capacity: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A seeded uniform subset of at most ``capacity`` rows (the same on every rank)."""
    if tensors[0].shape[0] <= capacity:
        return tensors
    keep = torch.randperm(tensors[0].shape[0], generator=generator)[:capacity].sort().values
    return [x[keep.to(x.device)] for x in tensors]


def reservoir_slots(
    seen: int, count: int, capacity: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm R for ``count`` new items after ``seen`` earlier ones, vectorised.

    Returns ``(source, slot)`` int64 vectors: new item ``source[i]`` is written to reservoir
    slot ``slot[i]``. Item ``t`` (0-based stream position) fills slot ``t`` while the
    reservoir is not full, later replaces a uniform slot ``j ~ U{0..t}`` when ``j <
    capacity``; when several new items pick one slot the last wins, as in the sequential
    algorithm.
    """
    t = torch.arange(seen, seen + count, dtype=torch.long)
    j = (torch.rand(count, generator=generator, dtype=torch.float64) * (t + 1)).long()
    slot = torch.where(t < capacity, t, j)
    keep = slot < capacity
    source, slot = torch.arange(count)[keep], slot[keep]
    winner = torch.full((capacity,), -1, dtype=torch.long).scatter_reduce(0, slot, source, reduce="amax")
    filled = (winner >= 0).nonzero().flatten()
    return winner[filled], filled


class PixelSample:
    """Reservoir of calibration pixels: ``logits [P, C]``, ``labels [P]``, ``image_ids [P]``."""

    def __init__(self, pixels_per_image: int, max_pixels: int, seed: int = 0) -> None:
        self.pixels_per_image = pixels_per_image
        self.max_pixels = max_pixels
        self.generator = torch.Generator().manual_seed(seed)
        self.seen = 0
        self.images_seen = 0
        self._logits: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._image_ids: torch.Tensor | None = None

    def add(self, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> None:
        """Offer a batch ``logits [N, C, H, W]``, ``labels [N, H, W]`` to the reservoir."""
        n, c, h, w = logits.shape
        keys = torch.rand(n, h * w, generator=self.generator).to(logits.device)
        keys = keys.masked_fill(labels.reshape(n, h * w) == ignore_index, float("inf"))
        k = min(self.pixels_per_image, h * w)
        chosen_keys, chosen = keys.topk(k, dim=1, largest=False)
        image, pixel = torch.arange(n, device=chosen.device).unsqueeze(1).expand(n, k), chosen
        offered = torch.isfinite(chosen_keys)
        image, pixel = image[offered], pixel[offered]
        new_logits = logits.reshape(n, c, h * w)[image, :, pixel]
        new_labels = labels.reshape(n, h * w)[image, pixel]
        new_ids = image + self.images_seen
        if self._logits is None:
            self._logits = logits.new_empty(self.max_pixels, c)
            self._labels = labels.new_empty(self.max_pixels)
            self._image_ids = labels.new_empty(self.max_pixels)
        source, slot = reservoir_slots(self.seen, len(new_labels), self.max_pixels, self.generator)
        source, slot = source.to(logits.device), slot.to(logits.device)
        self._logits[slot] = new_logits[source]
        self._labels[slot] = new_labels[source]
        self._image_ids[slot] = new_ids[source]
        self.seen += len(new_labels)
        self.images_seen += n

    @property
    def size(self) -> int:
        return min(self.seen, self.max_pixels)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits [P, C], labels [P], image_ids [P])`` of the ``P = size`` sampled pixels."""
        if self._logits is None or self.size == 0:
            raise ValueError("no valid pixels were sampled from the stream")
        p = self.size
        return self._logits[:p], self._labels[:p], self._image_ids[:p]

    def gather(self) -> None:
        """Pool every rank's sample (image ids made distinct across ranks); see the module notes."""
        if self._logits is None:
            raise ValueError("every rank needs at least one calibration batch")
        p = self.size
        offset = torch.tensor([self.images_seen], device=self._labels.device)
        offsets = [torch.zeros_like(offset) for _ in range(dist.get_world_size())]
        dist.all_gather(offsets, offset)
        start = sum(int(o) for o in offsets[: dist.get_rank()])
        logits, labels, ids = gather_rows([self._logits[:p], self._labels[:p], self._image_ids[:p] + start])
        self._logits, self._labels, self._image_ids = _keep_at_most([logits, labels, ids], self.max_pixels,
                                                                    self.generator)
        self.seen = self._labels.shape[0]
        self.images_seen = sum(int(o) for o in offsets)


class CropSample:
    """Reservoir of image crops: ``logits [M, C, h, w]``, ``labels [M, h, w]``, ``images [M, K, h, w]``."""

    def __init__(self, max_images: int, crop_size: int, ignore_index: int = 255, seed: int = 0) -> None:
        self.max_images = max_images
        self.crop_size = crop_size
        self.ignore_index = ignore_index
        self.generator = torch.Generator().manual_seed(seed)
        self.seen = 0
        self.shape: tuple[int, int] | None = None
        self.store: dict[str, torch.Tensor] = {}

    def _crop(self, x: torch.Tensor, top: int, left: int, fill: float) -> torch.Tensor:
        assert self.shape is not None
        ch, cw = self.shape
        x = x[..., top:top + ch, left:left + cw]
        pad = (0, cw - x.shape[-1], 0, ch - x.shape[-2])
        if x.is_floating_point():
            return F.pad(x, pad, value=fill)
        return F.pad(x.unsqueeze(0), pad, value=int(fill)).squeeze(0)

    def add(self, logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor | None = None) -> None:
        """Offer one random crop of each image of a batch (``images`` may be ``None``)."""
        n, _, h, w = logits.shape
        if self.shape is None:
            self.shape = (min(self.crop_size, h), min(self.crop_size, w))
        tops = torch.randint(0, max(h - self.shape[0], 0) + 1, (n,), generator=self.generator).tolist()
        lefts = torch.randint(0, max(w - self.shape[1], 0) + 1, (n,), generator=self.generator).tolist()
        batch = {"logits": logits, "labels": labels}
        if images is not None:
            batch["images"] = images
        fills = {"logits": 0.0, "labels": float(self.ignore_index), "images": 0.0}
        crops = {
            name: torch.stack([self._crop(x[i], tops[i], lefts[i], fills[name]) for i in range(n)])
            for name, x in batch.items()
        }
        if not self.store:
            self.store = {name: x.new_empty(self.max_images, *x.shape[1:]) for name, x in crops.items()}
        elif self.store.keys() != crops.keys():
            raise ValueError("either every stream item or none must carry images")
        source, slot = reservoir_slots(self.seen, n, self.max_images, self.generator)
        for name, x in crops.items():
            self.store[name][slot.to(x.device)] = x[source.to(x.device)]
        self.seen += n

    @property
    def size(self) -> int:
        return min(self.seen, self.max_images)

    def tensors(self) -> dict[str, torch.Tensor]:
        """``{"logits", "labels"[, "images"]}`` of the ``size`` sampled crops."""
        return {name: x[: self.size] for name, x in self.store.items()}

    def gather(self) -> None:
        """Pool every rank's crops (ranks must agree on the crop size); see the module notes."""
        if not self.store:
            raise ValueError("every rank needs at least one calibration batch")
        names = sorted(self.store)
        pooled = _keep_at_most(gather_rows([self.store[k][: self.size] for k in names]), self.max_images,
                               self.generator)
        self.store = dict(zip(names, pooled))
        self.seen = pooled[0].shape[0]
