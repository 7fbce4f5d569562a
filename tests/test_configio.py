"""Config loading: nested dataclasses, overrides, named errors, atomic writes."""
from dataclasses import dataclass, field

import pytest

from segcal.configio import apply_overrides, dump_yaml, from_dict, load_yaml, to_dict
from segcal.io.atomic import atomic_write_text


@dataclass
class Inner:
    size: tuple[int, int] = (4, 4)
    rate: float = 0.1


@dataclass
class Outer:
    name: str = "x"
    epochs: int = 3
    tags: list[str] = field(default_factory=list)
    maybe: int | None = None
    inner: Inner = field(default_factory=Inner)


def test_round_trip_and_coercion():
    cfg = from_dict(Outer, {"epochs": 5, "inner": {"size": [8, 16], "rate": 1}, "maybe": None})
    assert cfg.inner.size == (8, 16) and cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float)
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_unknown_key_is_named_with_its_path():
    with pytest.raises(ValueError, match=r"unknown config key 'inner\.sise'.*rate, size"):
        from_dict(Outer, {"inner": {"sise": [1, 2]}})


@pytest.mark.parametrize("data,key", [({"epochs": "many"}, "epochs"), ({"epochs": 2.5}, "epochs"),
                                      ({"inner": {"size": [1, 2, 3]}}, r"inner\.size"),
                                      ({"inner": 3}, "inner"), ({"tags": "a"}, "tags")])
def test_ill_typed_values_are_named(data, key):
    with pytest.raises(ValueError, match=key):
        from_dict(Outer, data)


def test_overrides_parse_yaml_values_and_create_sections():
    d = apply_overrides({"inner": {"rate": 0.1}}, ["inner.rate=0.5", "tags=[a, b]", "new.deep.key=3"])
    assert d == {"inner": {"rate": 0.5}, "tags": ["a", "b"], "new": {"deep": {"key": 3}}}
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["epochs"])
    with pytest.raises(ValueError, match="not a section"):
        apply_overrides({"epochs": 3}, ["epochs.x=1"])


def test_load_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ValueError, match="mapping"):
        load_yaml(lst)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    dump_yaml(Outer(), tmp_path / "sub" / "c.yaml")
    atomic_write_text(tmp_path / "sub" / "c.yaml", "name: y\n")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["c.yaml"]
    assert load_yaml(tmp_path / "sub" / "c.yaml") == {"name": "y"}


def test_experiment_from_dict_leaves_the_callers_dict_alone():
    from segcal.pipeline.config import experiment_from_dict

    d = {"train": {"epochs": 3}, "data": {"kind": "synthetic"}}
    cfg = experiment_from_dict(d, ["train.epochs=7", "data.batch_size=2"])
    assert cfg.train.epochs == 7 and cfg.data.batch_size == 2
    assert d == {"train": {"epochs": 3}, "data": {"kind": "synthetic"}}
