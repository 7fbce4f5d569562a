"""The sweep's record log: every finished (n_cal, repeat) cell is on disk at once, so a stopped sweep resumes.

``records.jsonl`` starts with ``{"settings": ...}`` (methods, n_cals, repeats, seed, parameters, sources); each
further line is ``{"n_cal", "repeat", "records"}``, appended and flushed to disk when the cell finishes. A line
cut short by a kill is ignored (its cell runs again). Settings that differ from the stored ones are an error
naming them, so results of different sweeps are never mixed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from segcal.io.atomic import atomic_write_text
from segcal.io.jsonio import plain

RECORDS_FILE = "records.jsonl"


class RecordLog:
    """Append-only log of finished sweep cells at ``path`` for one sweep's ``settings``."""

    def __init__(self, path: str | Path, settings: dict[str, Any]) -> None:
        self.path, self.settings = Path(path), plain(settings)

    def read(self) -> dict[tuple[int, int], list[dict[str, Any]]]:
        """The finished cells ``{(n_cal, repeat): records}`` of an earlier run with the same settings."""
        if not self.path.is_file():
            return {}
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            stored = json.loads(lines[0])["settings"] if lines else None
        except (json.JSONDecodeError, KeyError, TypeError):
            stored = None
        if stored is None:
            return {}
        if stored != self.settings:
            differ = sorted(k for k in set(stored) | set(self.settings) if stored.get(k) != self.settings.get(k))
            raise ValueError(f"{self.path} holds the records of a different sweep (settings differ: "
                             f"{', '.join(differ)}); pass --restart to discard them, or choose another --out")
        done = {}
        for line in lines[1:]:
            try:
                cell = json.loads(line)
                done[(int(cell["n_cal"]), int(cell["repeat"]))] = cell["records"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut short by a kill: that cell runs again
        return done

    def begin(self) -> None:
        """Start a new log: its settings line (any earlier records are discarded)."""
        atomic_write_text(self.path, json.dumps({"settings": self.settings}) + "\n")

    def append(self, n_cal: int, repeat: int, records: list[dict[str, Any]]) -> None:
        """Append one finished cell and force it to disk."""
        line = json.dumps(plain({"n_cal": n_cal, "repeat": repeat, "records": records}), allow_nan=False)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
