"""Find a model version's PEFT adapter on disk and check it belongs to the loaded base.

A model version is ``<workspace>/artifacts/model/<id>/`` holding ``adapter/`` (PEFT format)
and ``model_version.json`` (lineage: ``base_model``, ``base_location``, ``base_fingerprint``).
Callers may point at the version folder or at its ``adapter/`` folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError

RECORD = "model_version.json"
ADAPTER_CONFIG = "adapter_config.json"


class AdapterError(TunesmithError):
    """An adapter that cannot be loaded onto this engine's base model."""


def adapter_dir(path: str | Path) -> Path:
    """The folder holding ``adapter_config.json``: ``path`` itself or ``path/adapter``.

    Raises:
        AdapterError: the folder does not exist, is a full fine-tune, or holds no adapter.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise AdapterError(f"adapter: {path} does not exist (was the model version deleted?)")
    for folder in (path, path / "adapter"):
        if (folder / ADAPTER_CONFIG).is_file():
            return folder
    record = read_record(path)
    if record and record.get("weights") == "model":
        raise AdapterError(
            f"adapter: {path} is a full fine-tune (weights in {path / 'model'}), not an adapter; "
            "load it as the base model instead"
        )
    raise AdapterError(
        f"adapter: no {ADAPTER_CONFIG} in {path} or {path / 'adapter'}; expected a model version "
        "folder or a PEFT adapter folder"
    )


def read_record(path: Path) -> dict[str, Any] | None:
    """The model version record beside (or above) an adapter folder, if there is one."""
    for folder in (path, path.parent):
        file = folder / RECORD
        if file.is_file():
            try:
                return json.loads(file.read_text())
            except json.JSONDecodeError as exc:
                raise AdapterError(f"adapter: {file} is not valid JSON ({exc})") from exc
    return None


def check_base(path: Path, base_fingerprint: str | None, base_name: str) -> None:
    """Refuse an adapter whose model version was trained on another base model.

    LoRA weights only mean something on the exact weights they were trained against; on
    another base of the same shape they load without error and produce nonsense.
    """
    record = read_record(path)
    if record is None or base_fingerprint is None:
        return
    trained_on = record.get("base_fingerprint")
    if trained_on and trained_on != base_fingerprint:
        raise AdapterError(
            f"adapter: {path} was trained on {record.get('base_model')!r} "
            f"({record.get('base_location')}), not on the loaded base {base_name!r}; load the "
            "engine with that base model"
        )
