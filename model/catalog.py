"""The models of `AZUREML_MODEL_DIR`: one model, or several as `<name>/<version>/` folders.

Azure ML mounts registered models as `$AZUREML_MODEL_DIR/<name>/<version>/<files>`; a folder with
a `model-settings.json` (`model.description`) or the model file (`MODEL_FILE`) at its top is one
model, and the folder itself may hold one beside its `<name>/<version>/` folders (the bundled folder
holds the linear MNIST model at its top and the square network in `mnist-square/1/`). A model's
name and version come from its model-settings.json, else from its folders (a
single model without one is named after its file). The default model (`MODEL_NAME`, else the
one at the top, else the only one; its highest version) is the one `POST /score`, `/v1/model` and `/v1/score` serve.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from model.description import SETTINGS_FILE, ModelDescription


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # model names and versions, as they stand in URLs


class CatalogError(ValueError):
    """The model folder holds no model, or an ambiguous set of them."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    path: Path  # the model file
    description: ModelDescription | None
    at_top: bool = False  # the model at the top of AZUREML_MODEL_DIR, not in a <name>/<version>/ folder

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"


def _entry(folder: Path, model_file: str, name: str, version: str, at_top: bool = False) -> ModelEntry | None:
    description = ModelDescription.load(folder)
    if description is not None:
        return ModelEntry(description.name, description.version, folder / description.model_file, description,
                          at_top)
    if (folder / model_file).is_file():
        return ModelEntry(name, version, folder / model_file, None, at_top)
    return None


def version_order(version: str) -> tuple:
    """Numeric versions by value (10 after 9), any other after them by text."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def discover(root: Path, model_file: str) -> list[ModelEntry]:
    """Every model under `root` (the one at its top, and those of its `<name>/<version>/` folders),
    sorted by name and version."""
    # A single model without a description is named after its file, made fit for a URL.
    single = _entry(root, model_file, re.sub(r"[^A-Za-z0-9._-]", "-", Path(model_file).stem).lstrip("._-")[:64]
                    or "model", "1", at_top=True)
    entries = [single] if single is not None else []
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for name_folder in folders:
        for version_folder in sorted(path for path in name_folder.iterdir() if path.is_dir()):
            entry = _entry(version_folder, model_file, name_folder.name, version_folder.name)
            if entry is not None:
                entries.append(entry)
    if not entries:
        raise CatalogError(f"model file not found: no {SETTINGS_FILE} or {model_file} in {root}, nor in "
                           "<name>/<version>/ folders below it")
    keys = [entry.key for entry in entries]
    if len(set(keys)) != len(keys):
        raise CatalogError(f"{root}: two folders declare the same model name and version ({sorted(keys)})")
    for entry in entries:
        for what, value in (("name", entry.name), ("version", entry.version)):
            if not NAME.fullmatch(value):
                raise CatalogError(f"model {what} {value!r} ({entry.path}) is not usable in a URL: letters, digits, "
                                   "'.', '_' and '-', starting with a letter or digit, at most 64")
    return sorted(entries, key=lambda entry: (entry.name, version_order(entry.version)))


def latest(entries: list[ModelEntry], name: str) -> ModelEntry | None:
    versions = [entry for entry in entries if entry.name == name]
    return versions[-1] if versions else None


def default_entry(entries: list[ModelEntry], model_name: str | None) -> ModelEntry:
    """The model `MODEL_NAME` names (its latest version), else the one at the top of the folder, else
    the only one."""
    if not model_name:
        top = [entry for entry in entries if entry.at_top]
        if top:
            return top[0]
    if model_name:
        entry = latest(entries, model_name)
        if entry is None:
            raise CatalogError(f"MODEL_NAME={model_name} is not among the models served: "
                               f"{', '.join(sorted({e.name for e in entries}))}")
        return entry
    names = sorted({entry.name for entry in entries})
    if len(names) > 1:
        raise CatalogError(f"{len(names)} models are served ({', '.join(names)}): set MODEL_NAME to the one "
                           "POST /score and /v1/model serve")
    return entries[-1]
