import json

import numpy as np
import pytest
import torch

from segcal.data.files import read_mask, write_png
from segcal.data.prediction_writer import PredictionWriter
from segcal.data.predictions import (
    META_FILE,
    PredictionFolder,
    read_meta,
    read_prediction,
    write_meta,
    write_prediction,
)
from segcal.outputs import probs_to_logits

RNG = np.random.default_rng(0)


def _logits(c=2, h=8, w=8):
    return RNG.normal(0, 3, (c, h, w)).astype(np.float32)


def _softmax(x, axis=0):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _folder(root, arrays, masks=None, ext=".npy", mask_dir=None):
    """Write ``arrays`` (dict name -> [C, H, W]) as ``ext`` files and random masks in ``root/masks``."""
    root.mkdir(parents=True, exist_ok=True)
    mdir = mask_dir or root / "masks"
    mdir.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        if ext == ".npy":
            np.save(root / f"{name}.npy", arr)
        elif ext == ".npz":
            np.savez(root / f"{name}.npz", probs=arr)
        else:
            torch.save({"logits": torch.from_numpy(arr)}, root / f"{name}.pt")
        c = max(arr.shape[0], 2)
        m = masks[name] if masks else RNG.integers(0, c, arr.shape[1:])
        write_png(mdir / f"{name}.png", m)
    return root


def _write(folder, n=3, c=2, **kw):
    data = {f"img{i}": (_logits(c), RNG.integers(0, 2, (8, 8))) for i in range(n)}
    with PredictionWriter(folder, classes=["bg", "fg"], head="softmax", source={"model": "x"}, **kw) as wr:
        for name, (lg, m) in data.items():
            wr.add(name, torch.from_numpy(lg), m, set_size=np.ones((8, 8), np.uint8))
    return data


def test_writer_round_trip(tmp_path):
    data = _write(tmp_path / "p")
    (tmp_path / "p" / "sub").mkdir()  # subfolders are not predictions
    np.save(tmp_path / "p" / "sub" / "img9.npy", _logits())
    meta = read_meta(tmp_path / "p")
    assert meta == {"kind": "logits", "head": "softmax", "classes": ["bg", "fg"], "ignore_index": 255,
                    "image_size": [8, 8], "source": {"model": "x"}, "count": 3}
    pf = PredictionFolder(tmp_path / "p", batch_size=2)
    assert (pf.names, pf.kind, pf.head, pf.class_names, pf.num_classes, pf.image_size, len(pf)) == (
        ["img0", "img1", "img2"], "logits", "softmax", ["bg", "fg"], 2, (8, 8), 3)
    batches = list(pf)
    assert [b.names for b in batches] == [["img0", "img1"], ["img2"]]
    assert batches[0].logits.dtype == torch.float32 and batches[0].labels.dtype == torch.int64
    got = torch.cat([b.logits for b in batches])
    np.testing.assert_array_equal(got.numpy(), np.stack([d[0] for d in data.values()]))
    np.testing.assert_array_equal(torch.cat([b.labels for b in batches]).numpy(),
                                  np.stack([d[1] for d in data.values()]))
    assert np.load(tmp_path / "p" / "img0.npz")["set_size"].dtype == np.uint8
    assert pf.meta == {**meta, "source": {"model": "x"}}


@pytest.mark.parametrize("ext,hint", [(".npy", None), (".npz", "probs"), (".pt", "logits")])
def test_read_prediction_formats(tmp_path, ext, hint):
    arr = _softmax(_logits(3))
    _folder(tmp_path, {"a": arr}, ext=ext)
    got, h = read_prediction(tmp_path / f"a{ext}")
    assert h == hint and got.dtype == np.float32
    np.testing.assert_allclose(got, arr)
    assert PredictionFolder(tmp_path).kind == (hint or "probs")


def test_npz_single_array_and_pt_tensor(tmp_path):
    arr = _logits()
    np.savez(tmp_path / "a.npz", whatever=arr)
    torch.save(torch.from_numpy(arr).double(), tmp_path / "b.pt")
    for f in ("a.npz", "b.pt"):
        got, hint = read_prediction(tmp_path / f)
        assert hint is None and got.dtype == np.float32
        np.testing.assert_allclose(got, arr)


def test_softmax_probs_auto_detected_and_converted(tmp_path):
    probs = {f"i{k}": _softmax(_logits(3)) for k in range(2)}
    pf = PredictionFolder(_folder(tmp_path, probs))
    assert pf.kind == "probs" and pf.head == "softmax" and pf.num_classes == 3
    batch = next(iter(pf))
    np.testing.assert_allclose(torch.softmax(batch.logits, 1).numpy(), np.stack(list(probs.values())), atol=1e-6)


def test_sigmoid_single_channel_probs(tmp_path):
    p = RNG.uniform(0.01, 0.99, (1, 8, 8)).astype(np.float32)
    pf = PredictionFolder(_folder(tmp_path, {"a": p}))
    assert (pf.head, pf.kind, pf.num_channels, pf.num_classes, pf.class_names) == (
        "sigmoid", "probs", 1, 2, ["class0", "class1"])
    np.testing.assert_allclose(torch.sigmoid(next(iter(pf)).logits[0]).numpy(), p, atol=1e-6)


def test_logits_auto_detected(tmp_path):
    assert PredictionFolder(_folder(tmp_path, {"a": _logits()})).kind == "logits"


def test_probs_to_logits():
    p = torch.tensor([[[[0.2]], [[0.8]], [[0.0]]]])
    np.testing.assert_allclose(torch.softmax(probs_to_logits(p, "softmax"), 1), p, atol=1e-6)
    q = torch.tensor([[[[0.0, 0.3, 1.0]]]])
    np.testing.assert_allclose(torch.sigmoid(probs_to_logits(q, "sigmoid")), q.clamp(1e-7, 1 - 1e-7), atol=1e-7)
    with pytest.raises(ValueError, match="head"):
        probs_to_logits(p, "relu")


def test_meta_overrides_and_explicit_args(tmp_path):
    _folder(tmp_path, {"a": _logits(3)}, masks={"a": np.full((8, 8), 7)})
    write_meta(tmp_path, {"kind": "logits", "head": "sigmoid", "classes": ["x", "y", "z"], "ignore_index": 7})
    pf = PredictionFolder(tmp_path)
    assert (pf.head, pf.class_names, pf.ignore_index) == ("sigmoid", ["x", "y", "z"], 7)
    pf = PredictionFolder(tmp_path, head="softmax", classes=["a", "b", "c"], ignore_index=7, kind="logits")
    assert (pf.head, pf.class_names, pf.kind) == ("softmax", ["a", "b", "c"], "logits")
    with pytest.raises(ValueError, match="classes has 2 names"):
        PredictionFolder(tmp_path, classes=["a", "b"])


def test_subset_and_limit(tmp_path):
    _folder(tmp_path, {f"n{k}": _logits() for k in range(5)})
    pf = PredictionFolder(tmp_path, batch_size=2)
    assert [len(b.names) for b in pf] == [2, 2, 1]
    sub = pf.subset(3)
    assert sub.names == ["n0", "n1", "n2"] and len(pf) == 5
    assert [b.names for b in sub] == [["n0", "n1"], ["n2"]]
    for n in (0, 6):
        with pytest.raises(ValueError, match=f"n={n}"):
            pf.subset(n)
    assert PredictionFolder(tmp_path, limit=2).names == ["n0", "n1"]
    with pytest.raises(ValueError, match="limit=9 but only 5 images in .*"):
        PredictionFolder(tmp_path, limit=9)


def test_masks_location_npy_masks_and_unmatched(tmp_path):
    _folder(tmp_path / "p", {"a": _logits()}, mask_dir=tmp_path / "m")
    np.save(tmp_path / "m" / "extra.npy", np.zeros((8, 8), np.int32))
    with pytest.raises(FileNotFoundError, match=r"masks.*not found.*p"):
        PredictionFolder(tmp_path / "p")
    pf = PredictionFolder(tmp_path / "p", tmp_path / "m")
    assert pf.unmatched_masks == 1 and pf.names == ["a"]
    np.save(tmp_path / "m" / "a.npy", np.ones((8, 8), np.int16))
    (tmp_path / "m" / "a.png").unlink()
    assert next(iter(PredictionFolder(tmp_path / "p", tmp_path / "m"))).labels.eq(1).all()


def test_folder_errors(tmp_path):
    root = _folder(tmp_path / "p", {f"s{k}": _logits() for k in range(7)})
    for k in range(6):
        (root / "masks" / f"s{k}.png").unlink()
    with pytest.raises(ValueError, match=r"6 prediction\(s\) .* no mask .*s0, s1, s2, s3, s4, \.\.\."):
        PredictionFolder(root)
    (tmp_path / "empty" / "masks").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty: no prediction files"):
        PredictionFolder(tmp_path / "empty")
    (root / META_FILE).write_text("{oops")
    with pytest.raises(ValueError, match="meta.json: not valid JSON"):
        read_meta(root)
    with pytest.raises(ValueError, match="kind must be"):
        PredictionFolder(tmp_path / "empty", kind="scores")


@pytest.mark.parametrize("case,match", [
    ("shape", r"b\.npy: prediction shape \(2, 4, 4\) differs from .*a\.npy"),
    ("mask_shape", r"b\.npy \(mask .*b\.png\): shape mismatch"),
    ("mask_values", r"b\.npy \(mask .*b\.png\): labels must lie in \[0, 1\]"),
    ("probs_sum", r"b\.npy .*class sums deviate"),
])
def test_batch_errors_name_the_file(tmp_path, case, match):
    a = _softmax(_logits())
    b = {"shape": _softmax(_logits(2, 4, 4)), "probs_sum": a * 0.9}.get(case, a)
    masks = {"a": np.zeros((8, 8), int), "b": {"mask_shape": np.zeros((4, 8), int),
                                               "mask_values": np.full((8, 8), 3)}.get(case, np.zeros((8, 8), int))}
    pf = PredictionFolder(_folder(tmp_path, {"a": a, "b": b}, masks=masks), batch_size=1)
    with pytest.raises(ValueError, match=match):
        list(pf)


@pytest.mark.parametrize("content,match", [
    (b"not an array", "unreadable prediction file"),
    (np.zeros((8, 8), np.float32), r"shape \[C, H, W\]"),
    (np.full((1, 2, 2), np.nan, np.float32), "NaN or inf"),
    ({"x": np.zeros((1, 2, 2)), "y": np.zeros((1, 2, 2))}, "'logits' or 'probs' key"),
])
def test_read_prediction_errors(tmp_path, content, match):
    if isinstance(content, bytes):
        path = tmp_path / "bad.npy"
        path.write_bytes(content)
    elif isinstance(content, dict):
        path = tmp_path / "bad.npz"
        np.savez(path, **content)
    else:
        path = tmp_path / "bad.npy"
        np.save(path, content)
    with pytest.raises(ValueError, match=f"bad.np.: .*{match}"):
        read_prediction(path)


def test_pt_dict_without_key(tmp_path):
    torch.save({"out": torch.zeros(1, 2, 2), "x": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt: holds \['out', 'x'\]"):
        read_prediction(tmp_path / "bad.pt")


def test_writer_refuses_existing_and_overwrites(tmp_path):
    _write(tmp_path / "p", n=3)
    with pytest.raises(FileExistsError, match="p already holds 3 prediction"):
        PredictionWriter(tmp_path / "p", classes=["a", "b"], head="softmax")
    _write(tmp_path / "p", n=1, overwrite=True)
    assert PredictionFolder(tmp_path / "p").names == ["img0"] and read_meta(tmp_path / "p")["count"] == 1


def test_writer_checks_and_nothing_left_on_error(tmp_path):
    out = tmp_path / "p"
    with pytest.raises(RuntimeError):
        with PredictionWriter(out, classes=["a", "b"], head="softmax") as wr:
            wr.add("x", _logits(), np.full((8, 8), 300))
            with pytest.raises(ValueError, match="classes has 2 names"):
                PredictionWriter(tmp_path / "q", classes=["a", "b"], head="softmax").add("y", _logits(3))
            with pytest.raises(ValueError, match="mask shape"):
                wr.add("z", _logits(), np.zeros((4, 4)))
            with pytest.raises(ValueError, match="plain file stem"):
                wr.add("../evil", _logits())
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # the staged folder is gone, no target was created
    with PredictionWriter(out, classes=["a", "b"], head="softmax") as wr:
        wr.add("x", _logits(), np.full((8, 8), 300))
    assert read_mask(out / "masks" / "x.png").max() == 300  # 16-bit PNG
    assert sorted(p.name for p in out.rglob("*")) == ["masks", META_FILE, "x.npz", "x.png"]


def test_failed_overwrite_keeps_the_old_predictions(tmp_path):
    _write(tmp_path / "p", n=2)
    with pytest.raises(KeyboardInterrupt):
        with PredictionWriter(tmp_path / "p", classes=["bg", "fg"], head="softmax", overwrite=True) as wr:
            wr.add("new", _logits())
            raise KeyboardInterrupt
    assert PredictionFolder(tmp_path / "p").names == ["img0", "img1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_writer_refuses_to_replace_a_folder_that_is_not_one_of_its_own(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("...")
    with pytest.raises(FileExistsError, match="already holds 1 file"):
        PredictionWriter(tmp_path / "docs", classes=["a", "b"], head="softmax")
    with pytest.raises(FileExistsError, match="not a prediction folder"):
        PredictionWriter(tmp_path / "docs", classes=["a", "b"], head="softmax", overwrite=True)
    assert (tmp_path / "docs" / "thesis.tex").exists()


def test_atomic_write_leaves_no_temp_files(tmp_path, monkeypatch):
    write_prediction(tmp_path / "ok.npz", _logits(), sets=np.ones((2, 8, 8), bool))
    write_meta(tmp_path, {"a": 1})

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        write_prediction(tmp_path / "bad.npz", _logits())
    assert sorted(p.name for p in tmp_path.iterdir()) == [META_FILE, "ok.npz"]
    assert json.loads((tmp_path / META_FILE).read_text()) == {"a": 1}
