"""Data configuration: dataset kind, classes/remapping, resizing, splits, augmentation.

``validate()`` checks values only (no file access) and raises one ``ValueError`` naming the
dotted key. Everything that needs the files (``classes.json``, the images) is checked when the
dataset is built.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from segcal.classes import averaged_classes
from segcal.data.labels import check_remap_spec, target_class_names
from segcal.data.splits import check_split_spec

KINDS = ("synthetic", "folder", "coco")
RESIZE_MODES = ("pad", "crop", "stretch")


def _check(checks: list[tuple[bool, str, str, object]], prefix: str) -> None:
    """Raise for the first failing ``(ok, key, expected, value)``."""
    for ok, key, expected, value in checks:
        if not ok:
            raise ValueError(f"{prefix}.{key} must be {expected}, got {value!r}")


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class AugmentConfig:
    """Joint image+mask augmentation for training (masks always nearest-neighbour)."""

    hflip: float = 0.5  # probability of a horizontal flip
    vflip: float = 0.0  # probability of a vertical flip
    rotate_deg: float = 0.0  # rotation angle drawn from U(-rotate_deg, rotate_deg)
    scale: tuple[float, float] = (1.0, 1.0)  # isotropic zoom factor drawn from U(lo, hi)
    translate: float = 0.0  # shift drawn from U(-t, t) * size, per axis
    color_jitter: float = 0.0  # brightness/contrast/saturation factors from U(1 - s, 1 + s); image only
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixup applied per batch by the model; 0 = off

    def validate(self, prefix: str = "data.augment") -> None:
        lo, hi = self.scale
        _check([
            (0.0 <= self.hflip <= 1.0, "hflip", "a probability in [0, 1]", self.hflip),
            (0.0 <= self.vflip <= 1.0, "vflip", "a probability in [0, 1]", self.vflip),
            (0.0 <= self.rotate_deg <= 180.0, "rotate_deg", "in [0, 180]", self.rotate_deg),
            (0.0 < lo <= hi, "scale", "(lo, hi) with 0 < lo <= hi", list(self.scale)),
            (0.0 <= self.translate < 1.0, "translate", "a fraction in [0, 1)", self.translate),
            (0.0 <= self.color_jitter <= 1.0, "color_jitter", "in [0, 1]", self.color_jitter),
            (self.mixup_alpha >= 0.0, "mixup_alpha", ">= 0", self.mixup_alpha),
        ], prefix)

    @property
    def enabled(self) -> bool:
        """Whether any per-image augmentation (not mixup) is switched on."""
        return bool(self.hflip or self.vflip or self.rotate_deg or self.translate or self.color_jitter
                    or tuple(self.scale) != (1.0, 1.0))


@dataclass
class SyntheticConfig:
    """Built-in synthetic scenes (see :mod:`segcal.data.synthetic`)."""

    num_images: int = 240  # number of scenes (named synth_00000, synth_00001, ...)
    num_classes: int = 2  # including background
    height: int = 64  # rendered height in pixels (before resizing to data.image_size)
    width: int = 64  # rendered width in pixels (before resizing to data.image_size)
    seed: int = 0  # scene i is drawn from numpy default_rng([seed, i])

    def validate(self, prefix: str = "data.synthetic") -> None:
        _check([
            (self.num_images >= 1, "num_images", "an integer >= 1", self.num_images),
            (self.num_classes >= 2, "num_classes", "an integer >= 2 (background + objects)", self.num_classes),
            (self.height >= 16, "height", "an integer >= 16", self.height),
            (self.width >= 16, "width", "an integer >= 16", self.width),
            (self.seed >= 0, "seed", "an integer >= 0", self.seed),
        ], prefix)


@dataclass
class DataConfig:
    """Where the images come from and how they are turned into model inputs.

    ``remap``: ``None`` (labels used as they are), ``"binary"`` (label > 0 → 1) or a list of
    groups, one per target class, each a list of source labels or ``"rest"`` (every other label),
    e.g. ``[[0], [41], [19], "rest"]``. ``ignore_index`` pixels are never remapped.
    ``splits``: floats are fractions of all images, integers are counts.
    """

    kind: str = "synthetic"  # synthetic (built-in scenes) | folder (images/ + masks/) | coco (instances json)
    root: str | None = None  # folder: holds images/ and masks/; coco: the images directory
    annotations: str | None = None  # coco: instances json
    categories: list[str] = field(default_factory=lambda: ["person"])  # coco: classes 1..K
    classes: list[str] | None = None  # target class names (default: classes.json / remap / kind)
    mean_classes: list[str] | None = None  # classes averaged in tables and val/<metric> (default: all but background)
    remap: str | list | None = None
    ignore_index: int = 255  # label left out of loss/metrics, never remapped; fills padding and augmentation borders
    image_size: tuple[int, int] = (64, 64)  # (H, W) fed to the model
    resize: str = "pad"  # pad (letterbox, padded mask = ignore_index) | crop (centre) | stretch
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # RGB mean, [0, 1] scale (ImageNet); also pad colour
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)  # RGB std for normalisation, [0, 1] scale (ImageNet)
    splits: dict[str, float | int] = field(
        default_factory=lambda: {"train": 0.5, "val": 0.1, "cal": 0.2, "test": 0.2})
    split_seed: int = 0  # seed of the random split (a run's saved manifests win over it)
    n_cal: int | None = None  # keep only the first k calibration images (low-data regime)
    batch_size: int = 8  # images per batch (per device), for every split
    num_workers: int = 0  # DataLoader worker processes (0: load in the main process)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def validate(self, prefix: str = "data") -> DataConfig:
        """Check every value; raise ``ValueError`` naming the first bad key. Returns ``self``."""
        h, w = self.image_size
        _check([
            (self.kind in KINDS, "kind", f"one of {KINDS}", self.kind),
            (self.resize in RESIZE_MODES, "resize", f"one of {RESIZE_MODES}", self.resize),
            (_is_int(h) and _is_int(w) and h > 0 and w > 0, "image_size", "two positive integers (H, W)",
             list(self.image_size)),
            (len(self.mean) == 3, "mean", "3 numbers (R, G, B)", self.mean),
            (len(self.std) == 3 and all(s > 0 for s in self.std), "std", "3 positive numbers", self.std),
            (_is_int(self.ignore_index), "ignore_index", "an integer", self.ignore_index),
            (self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size),
            (self.num_workers >= 0, "num_workers", "an integer >= 0", self.num_workers),
            (self.split_seed >= 0, "split_seed", "an integer >= 0", self.split_seed),
            (self.n_cal is None or self.n_cal >= 1, "n_cal", "null or an integer >= 1", self.n_cal),
            (len(self.categories) >= 1 and all(isinstance(c, str) and c for c in self.categories),
             "categories", "a non-empty list of category names", self.categories),
        ], prefix)
        self._validate_splits(prefix)
        self._validate_classes(prefix)
        self.augment.validate(f"{prefix}.augment")
        self.synthetic.validate(f"{prefix}.synthetic")
        return self

    def _validate_splits(self, prefix: str) -> None:

        check_split_spec(self.splits, f"{prefix}.splits")
        if self.n_cal is not None and "cal" not in self.splits:
            raise ValueError(f"{prefix}.n_cal is set but {prefix}.splits has no 'cal' split")

    def _validate_classes(self, prefix: str) -> None:
        if self.mean_classes is not None:
            if not self.mean_classes or not all(isinstance(c, str) and c for c in self.mean_classes):
                raise ValueError(f"{prefix}.mean_classes must be null or a non-empty list of class names, got "
                                 f"{self.mean_classes!r}")
            if self.classes is not None:
                averaged_classes(self.classes, self.mean_classes)  # names checked against data.classes
        check_remap_spec(self.remap, self.ignore_index, f"{prefix}.remap")
        if self.classes is not None:
            names = self.classes
            if len(names) < 2 or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{prefix}.classes must be a list of >= 2 distinct names "
                                 f"(background first), got {names!r}")
        expected = self._fixed_num_classes()
        if self.classes is not None and expected is not None and len(self.classes) != expected:
            raise ValueError(f"{prefix}.classes has {len(self.classes)} names but {self._num_classes_source()} "
                             f"gives {expected} classes: {self.classes!r}")
        if 0 <= self.ignore_index < (expected or len(self.classes or ())):
            raise ValueError(f"{prefix}.ignore_index {self.ignore_index} is a class index; "
                             "use a value outside 0..num_classes-1 (e.g. 255)")

    def _fixed_num_classes(self) -> int | None:
        """Number of target classes when known without reading files."""
        if self.remap == "binary":
            return 2
        if isinstance(self.remap, list):
            return len(self.remap)
        if self.kind == "synthetic":
            return self.synthetic.num_classes
        if self.kind == "coco":
            return len(self.categories) + 1
        return None

    def _num_classes_source(self) -> str:
        if self.remap is not None:
            return "data.remap"
        return "data.synthetic.num_classes" if self.kind == "synthetic" else "data.categories (+ background)"

    @property
    def class_names(self) -> list[str]:
        """Resolved target class names (reads ``classes.json`` for folder datasets)."""

        return target_class_names(self)

    @property
    def averaged(self) -> list[int]:
        """Indices of the classes averaged in tables and the monitored ``val/<metric>``."""
        return averaged_classes(self.class_names, self.mean_classes)

    @property
    def num_classes(self) -> int:
        """Resolved number of target classes, background included."""
        fixed = self._fixed_num_classes()
        if fixed is not None:
            return fixed
        return len(self.classes) if self.classes is not None else len(self.class_names)
