"""docs/: the generated reference pages are current and complete, and the Python examples run as written."""
import argparse
import dataclasses
import difflib
import re
import typing
from pathlib import Path

import pytest

from segcal.cli.main import build_parser
from segcal.cli.reference import cli_markdown, config_markdown, config_sections, write_reference
from segcal.pipeline.config import ExperimentConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"
REGENERATE = "run `python -m segcal.cli.reference docs/` and commit the result"


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return {"cli.md": cli_markdown(), "configuration.md": config_markdown()}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", ["cli.md", "configuration.md"])
def test_generated_page_is_up_to_date(pages, name):
    path = DOCS / name
    assert path.is_file(), f"docs/{name} is missing: {REGENERATE}"
    got, want = path.read_text(), pages[name]
    diff = "".join(list(difflib.unified_diff(got.splitlines(True), want.splitlines(True), f"docs/{name}",
                                             "generated"))[:20])
    assert got == want, f"docs/{name} is out of date: {REGENERATE}\n{diff}"


def test_every_subcommand_and_option_is_in_the_cli_reference(pages):
    cli = pages["cli.md"]
    commands = subcommands()
    assert {"train", "evaluate", "calibrate", "predict", "sweep", "report"} <= set(commands)
    for name, parser in commands.items():
        heading = f"## `segcal {name}`"
        assert heading in cli, name
        section = cli.split(heading, 1)[1].split("\n## ", 1)[0]
        assert f"segcal {name}" in section.split("```")[1]  # the usage line
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}" in section or f", {option}" in section, f"segcal {name} {option}"


def test_the_cli_reference_keeps_argument_groups_defaults_and_help(pages):
    section = pages["cli.md"].split("## `segcal evaluate`", 1)[1].split("\n## ", 1)[0]
    assert "**saved predictions (models from any framework)**" in section
    assert "| `--bins BINS` | `15` | equal-width confidence bins (default: 15) |" in section
    assert "segcal calibrate [options] [CHECKPOINT] [KEY=VALUE ...]" in pages["cli.md"]
    assert "(default: &lt;run&gt;/eval/&lt;checkpoint&gt;-&lt;split&gt;)" in section  # no raw HTML tags


def _nested_sections(cls: type, prefix: str = "") -> list[str]:
    """Dotted prefixes of every dataclass reachable from ``cls`` (``[]`` marks list items)."""
    out = [prefix]
    for name, tp in typing.get_type_hints(cls).items():
        key = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(tp):
            out += _nested_sections(tp, key)
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            out += _nested_sections(typing.get_args(tp)[0], f"{key}[]")
    return out


def test_every_config_field_is_in_the_configuration_reference(pages):
    config = pages["configuration.md"]
    sections = config_sections()
    assert sorted(p for p, _ in sections) == sorted(_nested_sections(ExperimentConfig))
    for prefix, cls in sections:
        for f in dataclasses.fields(cls):
            key = f"{prefix}.{f.name}" if prefix else f.name
            assert f"| `{key}` |" in config, key
    assert "| `data.image_size` | `tuple[int, int]` | `[64, 64]` | (H, W) fed to the model |" in config
    assert "| `loss.terms` | `list[LossTerm]` | `[{name: ce}, {name: dice}]` |" in config
    assert "| `demo` |" in config and "Usage:" not in config


def test_write_reference_writes_both_pages(tmp_path, pages):
    paths = write_reference(tmp_path / "docs")
    assert [p.name for p in paths] == ["cli.md", "configuration.md"]
    assert all(p.read_text() == pages[p.name] for p in paths)


def python_blocks(page: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (DOCS / page).read_text(), re.M | re.S)


def test_readme_api_example_runs_as_written(capsys):
    """The README's five-line path (its first python block; the second needs a dataset)."""
    code = python_blocks("../README.md")[0]
    exec(compile(code, "README.md (python block 1)", "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out
    assert "'ece'" in printed and "'mean_ce'" in printed


@pytest.mark.parametrize("page", ["quickstart.md", "concepts.md", "scaling.md"])
def test_python_examples_run_as_written(page, tmp_path, monkeypatch):
    """Blocks of one page run in order in one namespace (scaling.md's only define: no process group)."""
    blocks = python_blocks(page)
    assert blocks, f"docs/{page} has no ```python block"
    monkeypatch.chdir(tmp_path)  # examples may write files (quickstart saves a prediction)
    namespace = {"__name__": "docs_example"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/{page} (python block {i + 1})", "exec"), namespace)
