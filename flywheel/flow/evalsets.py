"""The frozen data a candidate and production are scored on.

- `val`: the new version's val split (gated);
- `val_old` / `val_new`: that split cut into the images the parent version already had and
  the ones this version added (reported: a drop on `val_old` is forgetting);
- `golden`: the configured golden set (gated; flywheel/flow/golden.py);
Each is identified by the hash of its items, so a score computed once is reused (cache key:
model sha256 + eval-set hash). The subsets are image lists beside the version's folder, which
Ultralytics reads like a folder (labels found by swapping /images/ for /labels/).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from flywheel.core.domain import ManifestItem
from flywheel.core.gate_details import EvalSetNote, GoldenNote
from flywheel.core.manifests import additive_hash

PRIMARY = "val"
GATED = ("val", "golden")


@dataclass(frozen=True)
class EvalSet:
    name: str
    sha256: str
    data_yaml: Path
    images: int
    golden: GoldenNote | None = None  # the golden set's, recorded with the gate decision

    def note(self) -> EvalSetNote:
        return EvalSetNote(sha256=self.sha256, images=self.images, golden=self.golden)


def version_eval_sets(
    data_yaml: Path,
    class_names: list[str],
    val_sha256: str,
    manifest: Mapping[str, ManifestItem],
    parent_manifest: Mapping[str, ManifestItem],
) -> list[EvalSet]:
    """`data_yaml`: the version's, as laid out on disk (flywheel.core.ports.Datasets); the subsets
    are written beside it. `val_sha256`: the version's own record of its val split's hash (its
    identity at the gate)."""
    folder = data_yaml.parent
    val = {k: i for k, i in manifest.items() if i.split == "val"}
    sets = [EvalSet(PRIMARY, val_sha256, data_yaml, len(val))]
    old = {k: i for k, i in val.items() if k in parent_manifest}
    new = {k: i for k, i in val.items() if k not in parent_manifest}
    if old and new:  # forgetting is only measurable with both halves
        for name, items in (("val_old", old), ("val_new", new)):
            sets.append(
                EvalSet(
                    name, additive_hash(items.values()), _write_subset(folder, name, items, class_names), len(items)
                )
            )
    return sets


def _write_subset(folder: Path, name: str, items: Mapping[str, ManifestItem], class_names: list[str]) -> Path:
    data_yaml = folder / "eval" / f"{name}.yaml"
    if data_yaml.is_file():
        return data_yaml  # versions are immutable: written once
    data_yaml.parent.mkdir(exist_ok=True)
    listing = data_yaml.with_suffix(".txt")
    images = sorted(str(folder / "images" / "val" / f"{i.image_sha256}{i.ext}") for i in items.values())
    listing.write_text("\n".join(images) + "\n")
    spec = {"path": str(folder), "train": "images/train", "val": str(listing), "names": dict(enumerate(class_names))}
    tmp = data_yaml.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(spec, sort_keys=False))
    tmp.replace(data_yaml)
    return data_yaml
