"""Deterministic, disjoint train / val / cal / test splits and their manifest files.

A spec maps split names to fractions of all images (floats in (0, 1]) or counts (integers >= 1).
Names are sorted, shuffled with ``seed`` and dealt out in the fixed order train, val, cal, test,
so the split depends only on the set of names, the spec and the seed; growing a later split
(e.g. ``test``) never changes an earlier one, and the first k calibration names stay the same
when ``cal`` grows. Calibration and test images are always different images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from segcal.io.atomic import atomic_write_text

SPLITS = ("train", "val", "cal", "test")
"""The split names, in order."""

_EPS = 1e-9


def check_split_spec(spec: dict, key: str = "splits") -> None:
    """Validate a split spec; ``ValueError`` names the offending entry."""
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"{key} must be a non-empty mapping of split -> fraction or count, got {spec!r}")
    for name, value in spec.items():
        if name not in SPLITS:
            raise ValueError(f"{key}: unknown split {name!r}; expected some of {list(SPLITS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}.{name} must be a fraction or a count, got {value!r}")
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError(f"{key}.{name} must be a fraction in (0, 1] or an integer count >= 1, got {value!r}")
        if isinstance(value, int) and value < 1:
            raise ValueError(f"{key}.{name} must be a count >= 1 (leave the split out instead), got {value!r}")
    total = sum(v for v in spec.values() if isinstance(v, float))
    if total > 1.0 + _EPS:
        raise ValueError(f"{key}: fractions sum to {total:g} > 1: {spec!r}")


def split_sizes(n: int, spec: dict) -> dict[str, int]:
    """Number of images per split for ``n`` images (fractions by largest remainder)."""
    check_split_spec(spec)
    if n == 0:
        raise ValueError("cannot split an empty dataset (0 images)")
    counts = {k: v for k, v in spec.items() if isinstance(v, int)}
    fracs = {k: v for k, v in spec.items() if isinstance(v, float)}
    raw = {k: v * n for k, v in fracs.items()}
    sizes = {k: int(np.floor(r + _EPS)) for k, r in raw.items()}
    budget = int(np.floor(sum(raw.values()) + _EPS)) - sum(sizes.values())
    for k in sorted(fracs, key=lambda k: (-(raw[k] - sizes[k]), SPLITS.index(k)))[:budget]:
        sizes[k] += 1
    sizes.update(counts)
    for k in SPLITS:
        if k in sizes and sizes[k] == 0:
            raise ValueError(f"split {k!r} (fraction {spec[k]}) gets 0 of {n} images; use more images "
                             "or an integer count")
    total = sum(sizes.values())
    if total > n:
        detail = ", ".join(f"{k}={sizes[k]}" for k in SPLITS if k in sizes)
        raise ValueError(f"splits need {total} images ({detail}) but only {n} are available")
    return {k: sizes[k] for k in SPLITS if k in sizes}


def make_splits(names: list[str], spec: dict, seed: int = 0) -> dict[str, list[str]]:
    """Disjoint ``{split: [names]}`` per ``spec``; deterministic in (set of names, spec, seed)."""
    ordered = sorted(set(names))
    if len(ordered) != len(names):
        raise ValueError(f"image names must be unique; {len(names) - len(ordered)} duplicates given")
    sizes = split_sizes(len(ordered), spec)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    out, start = {}, 0
    for k, size in sizes.items():
        out[k] = [ordered[i] for i in perm[start:start + size]]
        start += size
    return out


def write_manifests(splits: dict[str, list[str]], directory: str | Path) -> Path:
    """Write ``<split>.txt`` (one name per line) per split, each atomically; returns the folder."""
    directory = Path(directory)
    for k, names in splits.items():
        if k not in SPLITS:
            raise ValueError(f"unknown split {k!r}; expected some of {list(SPLITS)}")
        atomic_write_text(directory / f"{k}.txt", "".join(f"{n}\n" for n in names))
    return directory


def read_manifests(directory: str | Path) -> dict[str, list[str]]:
    """Read the ``<split>.txt`` files in ``directory``; checks that splits are disjoint."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"manifest folder not found: {directory}")
    splits = {}
    for k in SPLITS:
        path = directory / f"{k}.txt"
        if path.is_file():
            splits[k] = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not splits:
        raise FileNotFoundError(f"{directory}: no manifest files (expected some of "
                                f"{', '.join(k + '.txt' for k in SPLITS)})")
    seen: dict[str, str] = {}
    for k, names in splits.items():
        for n in names:
            if n in seen:
                raise ValueError(f"{directory}: image {n!r} is in both {seen[n]}.txt and {k}.txt; splits must "
                                 "be disjoint")
            seen[n] = k
    return splits
