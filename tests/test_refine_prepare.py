"""`prepare-hybrid`: accurate BASELINE / EVAL subsets and the coarse rest, seeded and recorded."""
import json

import numpy as np
import pytest

from segcal.data.config import SyntheticConfig
from segcal.data.files import read_mask
from segcal.data.folder import write_folder_dataset
from segcal.data.synthetic import SyntheticDataset
from segcal.refine.prepare import box_mask, prepare_hybrid, read_accurate_list, select_subsets
from segcal.refine.project import Project


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep") / "pipes"
    write_folder_dataset(SyntheticDataset(SyntheticConfig(num_images=20, num_classes=3, height=24, width=32)), root)
    return root


def listing(folder):
    return sorted(p.stem for p in (folder / "images").iterdir())


def leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_labels_csv_selects_subsets(source, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("name,accurate\n" + "".join(f"synth_{i:05d},{int(i < 8)}\n" for i in range(20)))
    res = prepare_hybrid(source, tmp_path / "pipes", labels, n_baseline=3, n_eval=4, seed=5, progress=False)
    assert [len(listing(p)) for p in (res.baseline, res.eval, res.coarse)] == [3, 4, 13]
    accurate = {f"synth_{i:05d}" for i in range(8)}
    assert set(listing(res.baseline)) | set(listing(res.eval)) <= accurate
    assert len(set(listing(res.coarse)) & accurate) == 1  # the accurate image left over stays, unchanged
    prov = json.loads((res.coarse / "provenance.json").read_text())
    assert prov["role"] == "COARSE" and prov["seed"] == 5 and prov["sizes"] == {"BASELINE": 3, "EVAL": 4, "COARSE": 13}
    assert prov["names"] == listing(res.coarse) and len(prov["accurate_in_coarse"]) == 1
    name = listing(res.eval)[0]
    assert np.array_equal(read_mask(res.eval / "masks" / f"{name}.png"), read_mask(source / "masks" / f"{name}.png"))
    assert (res.eval / "images" / f"{name}.png").read_bytes() == (source / "images" / f"{name}.png").read_bytes()
    assert json.loads((res.eval / "classes.json").read_text()) == ["background", "class1", "class2"]
    again = select_subsets(sorted(listing(source)), sorted(accurate), 3, 4, seed=5)
    assert again["BASELINE"] == listing(res.baseline)
    assert select_subsets(sorted(listing(source)), sorted(accurate), 3, 4, seed=6) != again


def test_simulated_boxes_binary_and_max_coarse(source, tmp_path):
    res = prepare_hybrid(source, tmp_path / "sim", n_baseline=4, n_eval=4, simulate_boxes=True, remap="binary",
                         max_coarse=5, progress=False)
    assert [len(listing(p)) for p in (res.baseline, res.eval, res.coarse)] == [4, 4, 5]
    name = listing(res.coarse)[0]
    coarse = read_mask(res.coarse / "masks" / f"{name}.png")
    truth = (read_mask(source / "masks" / f"{name}.png") > 0).astype(np.int64)
    rows, cols = np.flatnonzero(truth.any(1)), np.flatnonzero(truth.any(0))
    box = np.zeros_like(truth)
    box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = 1
    assert np.array_equal(coarse, box)
    b = listing(res.baseline)[0]
    assert read_mask(res.baseline / "masks" / f"{b}.png").max() <= 1  # remapped, not boxed
    assert json.loads((res.coarse / "classes.json").read_text()) == ["background", "foreground"]
    assert json.loads((res.coarse / "provenance.json").read_text())["masks"] == "coarse (boxes)"


def test_box_mask_per_class_and_component():
    mask = np.zeros((6, 10), dtype=np.int64)
    mask[1, 1] = mask[3, 3] = 1  # one class, two components
    mask[4:6, 7:9] = 2
    mask[0, 9] = 255
    whole = box_mask(mask, 3)
    assert whole[1:4, 1:4].tolist() == [[1] * 3] * 3 and whole[4:6, 7:9].tolist() == [[2, 2]] * 2
    assert whole[0, 9] == 255 and whole.sum() == 9 + 8 + 255
    parts = box_mask(mask, 3, per_component=True)
    assert parts[1, 1] == parts[3, 3] == 1 and parts[2, 2] == 0


def test_read_accurate_list_formats(tmp_path):
    f = tmp_path / "l.csv"
    f.write_text("name\na.png\nb\n")
    assert read_accurate_list(f) == ["a", "b"]
    f.write_text("name, accurate\na,Yes\nb,no\nc,TRUE\nd,\n")
    assert read_accurate_list(f) == ["a", "c"]
    for text, match in [("file,accurate\na,1\n", "'name' column"), ("name,accurate\na,maybe\n", "line 2"),
                        ("name\na\na\n", "more than once"), ("", "'name' column")]:
        f.write_text(text)
        with pytest.raises(ValueError, match=match):
            read_accurate_list(f)
    with pytest.raises(FileNotFoundError, match="labels"):
        read_accurate_list(tmp_path / "nope.csv")


def test_selection_errors():
    names = [f"n{i}" for i in range(10)]
    with pytest.raises(ValueError, match="only 4 images"):
        select_subsets(names, names[:4], 3, 2)
    with pytest.raises(ValueError, match="not images of the dataset"):
        select_subsets(names, ["zzz"], 1, 1)
    with pytest.raises(ValueError, match="no images left"):
        select_subsets(names[:2], names[:2], 1, 1)
    assert [len(v) for v in select_subsets(names, names[:5], None, None).values()] == [3, 2, 5]


def test_bad_inputs_write_nothing(source, tmp_path):
    with pytest.raises(ValueError, match="which images have accurate masks"):
        prepare_hybrid(source, tmp_path / "x", progress=False)
    project = Project(tmp_path / "x")
    project.eval.mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        prepare_hybrid(source, tmp_path / "x", n_baseline=2, n_eval=2, simulate_boxes=True, progress=False)
    assert not project.baseline.exists() and not project.coarse.exists() and not leftovers(tmp_path)
    broken = tmp_path / "broken"
    write_folder_dataset(SyntheticDataset(SyntheticConfig(num_images=6, height=16, width=16)), broken)
    (broken / "masks" / "synth_00005.png").write_bytes(b"not a png")  # fails late, while writing COARSE
    with pytest.raises(ValueError, match="synth_00005"):
        prepare_hybrid(broken, tmp_path / "b", n_baseline=1, n_eval=1, simulate_boxes=True, progress=False)
    assert not any(p.name.startswith("b_") for p in tmp_path.iterdir()) and not leftovers(tmp_path)
    (broken / "masks" / "synth_00005.png").unlink()
    with pytest.raises(ValueError, match="no counterpart"):
        prepare_hybrid(broken, tmp_path / "b", n_baseline=1, n_eval=1, simulate_boxes=True, progress=False)
    with pytest.raises(ValueError, match="give both --baseline N and --eval N"):
        prepare_hybrid(source, tmp_path / "b", n_baseline=1, simulate_boxes=True, progress=False)
    with pytest.raises(FileNotFoundError, match="images/"):
        prepare_hybrid(broken / "masks", tmp_path / "c", n_baseline=1, n_eval=1, simulate_boxes=True, progress=False)
    res = prepare_hybrid(source, tmp_path / "x", n_baseline=2, n_eval=2, simulate_boxes=True, overwrite=True,
                         progress=False)
    assert len(listing(res.eval)) == 2
