"""config.toml: the documented defaults, and errors that name the key and the file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

import flywheel
from flywheel.config_file import load
from flywheel.core import config as config_mod
from flywheel.core.config import CONFIG_NAME, Config, parse, resolve
from flywheel.core.errors import ConfigError

DEFAULT_TOML = Path(flywheel.__file__).parent / "default_config.toml"
REPO_CONFIG = Path(flywheel.__file__).parent.parent / "config.toml"


def write_config(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(text)
    return folder


def config_error(folder: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(folder)
    return str(info.value)


# --- the defaults -------------------------------------------------------------------------


def test_defaults_parse():
    cfg = parse({})
    assert cfg == Config()
    assert cfg.inbox.marker == "READY"
    assert cfg.dataset.val_fraction == 0.2
    assert cfg.model.base == "yolov8n.yaml"
    assert cfg.training.imgsz == 640
    assert cfg.gate.tolerance == 0.0
    assert cfg.log_level == "INFO"


def test_default_config_toml_parses_and_equals_the_defaults():
    raw = tomllib.loads(DEFAULT_TOML.read_text())
    assert parse(raw, str(DEFAULT_TOML)) == Config()


def test_default_config_toml_sets_every_key_explicitly():
    # the reference file shows every key: each section's keys are all the model's fields
    raw = tomllib.loads(DEFAULT_TOML.read_text())
    assert set(raw) == set(Config.model_fields)
    for section, model in Config.model_fields.items():
        annotation = model.annotation
        if isinstance(annotation, type) and issubclass(annotation, config_mod._Section):
            assert set(raw[section]) == set(annotation.model_fields), section


def test_load_of_the_default_file_equals_the_defaults(tmp_path: Path):
    write_config(tmp_path, DEFAULT_TOML.read_text())
    assert load(tmp_path) == Config()


def test_empty_config_file_gives_the_defaults(tmp_path: Path):
    write_config(tmp_path, "")
    assert load(tmp_path) == Config()


def test_the_gate_defaults_of_config_toml_are_the_gate_policys():
    # written once (flywheel.core.gate's DEFAULT_*); this holds them together if that ever changes.
    # Not compared: class_bootstrap (on in config.toml) and GatePolicy.class_interval (off for a bare
    # policy) differ on purpose, and flow.promotion.policy_of maps one onto the other.
    from flywheel.core.gate import GatePolicy

    gate, policy = Config().gate, GatePolicy()
    shared = ("tolerance", "max_class_drop", "min_class_instances")
    assert {k: getattr(gate, k) for k in shared} == {k: getattr(policy, k) for k in shared}


def test_repository_config_toml_exists_and_parses():
    assert REPO_CONFIG.is_file(), f"{REPO_CONFIG} is missing"
    assert REPO_CONFIG.is_symlink()
    assert REPO_CONFIG.resolve() == DEFAULT_TOML.resolve()
    assert load(REPO_CONFIG.parent) == Config()


def _key_lines() -> list[tuple[str, int, str, str]]:
    """(dotted key, line number, the line, the line above) for every `key = value` line."""
    out = []
    section = ""
    lines = DEFAULT_TOML.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if header := re.fullmatch(r"\[([\w.]+)\]", stripped):
            section = header.group(1) + "."
        elif key := re.match(r"([A-Za-z_]\w*)\s*=", stripped):
            above = lines[number - 2].strip() if number > 1 else ""
            out.append((section + key.group(1), number, line, above))
    return out


KEY_LINES = _key_lines()
UNCOMMENTED: set[str] = set()  # keys allowed to go without a comment: none


def test_key_lines_were_found():
    # the comment check below sees exactly one line per setting Config has
    def leaves_of(model: type[config_mod._Section], prefix: str) -> set[str]:
        leaves = set()
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, config_mod._Section):
                leaves |= leaves_of(annotation, f"{prefix}{name}.")  # a table inside a table: [serve.capture]
            else:
                leaves.add(prefix + name)
        return leaves

    leaves = leaves_of(Config, "")
    found = [k for k, *_ in KEY_LINES]
    assert sorted(found) == sorted(leaves)


@pytest.mark.parametrize(
    ("key", "number", "line", "above"),
    [
        pytest.param(
            *entry,
            id=entry[0],
            marks=pytest.mark.xfail(strict=True, reason=f"BUG: `{entry[0]}` has no comment in default_config.toml")
            if entry[0] in UNCOMMENTED
            else (),
        )
        for entry in KEY_LINES
    ],
)
def test_every_key_in_default_config_toml_is_commented(key: str, number: int, line: str, above: str):
    value = line.split("=", 1)[1]
    commented_here = bool(re.search(r"#\s*\S", value))
    commented_above = above.startswith("#") and len(above.lstrip("#").strip()) > 0
    assert commented_here or commented_above, f"line {number}: `{key}` has no comment: {line!r}"


# --- errors name the key and the file ---------------------------------------------------


def test_unknown_key_is_an_error_naming_it(tmp_path: Path):
    write_config(tmp_path, "[gate]\ntolerence = 0.1\n")
    message = config_error(tmp_path)
    assert "gate.tolerence" in message
    assert "unknown key" in message
    assert str(tmp_path / CONFIG_NAME) in message


def test_unknown_section_is_an_error_naming_it(tmp_path: Path):
    write_config(tmp_path, "[trainig]\nepochs_warm = 3\n")
    assert "trainig" in config_error(tmp_path)


def test_bad_value_names_the_key(tmp_path: Path):
    write_config(tmp_path, "[training]\nimgsz = 100\n")
    message = config_error(tmp_path)
    assert "training.imgsz" in message
    assert "multiple of 32" in message
    assert str(tmp_path / CONFIG_NAME) in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[dataset]\nval_fraction = 1.0\n", "dataset.val_fraction"),
        ("[inbox]\nsettle_seconds = -1\n", "inbox.settle_seconds"),
        ("[metrics]\nport = 70000\n", "metrics.port"),
        ("[gate]\ntolerance = 2\n", "gate.tolerance"),
        ('[model]\nbase = "yolov8n"\n', "model.base"),
        ('log_level = "LOUD"\n', "log_level"),
        ('[training]\nepochs_warm = "many"\n', "training.epochs_warm"),
    ],
)
def test_each_bad_value_names_its_key(tmp_path: Path, text: str, key: str):
    assert f"`{key}`" in config_error(write_config(tmp_path, text))


def test_every_bad_key_is_reported_not_just_the_first(tmp_path: Path):
    write_config(tmp_path, "[training]\nimgsz = 100\n[gate]\ntolerence = 0.1\n")
    message = config_error(tmp_path)
    assert "training.imgsz" in message and "gate.tolerence" in message


def test_invalid_toml_names_the_file(tmp_path: Path):
    write_config(tmp_path, "[training\nimgsz = 640\n")
    message = config_error(tmp_path)
    assert str(tmp_path / CONFIG_NAME) in message
    assert "not valid TOML" in message


def test_missing_base_checkpoint_is_an_error_that_says_nothing_is_downloaded(tmp_path: Path):
    write_config(tmp_path, '[model]\nbase = "weights/missing.pt"\n')
    message = config_error(tmp_path)
    assert "model.base" in message
    assert str(tmp_path / "weights" / "missing.pt") in message
    assert "never downloads" in message


def test_existing_base_checkpoint_relative_to_the_data_root_is_accepted(tmp_path: Path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "coco.pt").write_bytes(b"not really weights")
    write_config(tmp_path, '[model]\nbase = "weights/coco.pt"\n')
    cfg = load(tmp_path)
    assert cfg.model.base == "weights/coco.pt"
    assert resolve(tmp_path, cfg.model.base) == tmp_path / "weights" / "coco.pt"


def test_missing_config_file_tells_the_user_to_run_flywheel_init(tmp_path: Path):
    message = config_error(tmp_path)
    assert "flywheel init" in message
    assert str(tmp_path / CONFIG_NAME) in message


def test_config_errors_exit_with_code_2():
    assert ConfigError.exit_code == 2


def test_config_is_frozen():
    from pydantic import ValidationError

    cfg = Config()
    with pytest.raises(ValidationError):
        cfg.training.imgsz = 320  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "key", "got"),
    [
        ('[training]\nimgsz = "640"\n', "training.imgsz", "'640'"),
        ("[training]\nepochs_warm = true\n", "training.epochs_warm", "True"),
        ('[ingest]\nallow_unlabeled = "yes"\n', "ingest.allow_unlabeled", "'yes'"),
        ('[training]\nshrink = "0.4"\n', "training.shrink", "'0.4'"),
    ],
)
def test_config_types_are_strict_as_toml_has_real_types(tmp_path, text, key, got):
    write_config(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert f"key `{key}`" in str(err.value) and f"(got {got}" in str(err.value)


def test_the_quotes_hint_is_given_only_for_quoted_numbers_and_bools(tmp_path):
    write_config(tmp_path, '[training]\nimgsz = "640"\n')
    with pytest.raises(ConfigError, match=r"\(got '640'; TOML writes numbers and true/false without quotes\)"):
        load(tmp_path)
    write_config(tmp_path, "[gate]\ntolerance = 2\n")
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert "(got 2)" in str(err.value) and "without quotes" not in str(err.value)


def test_an_int_is_still_a_float(tmp_path):
    write_config(tmp_path, "[inbox]\nsettle_seconds = 10\n")
    assert load(tmp_path).inbox.settle_seconds == 10.0


def test_a_model_yaml_ultralytics_does_not_ship_is_refused_at_start(tmp_path):
    write_config(tmp_path, '[model]\nbase = "yolov99n.yaml"\n')
    with pytest.raises(ConfigError, match=r"key `model.base`: 'yolov99n.yaml' is neither a file"):
        load(tmp_path)
    for ok in ("yolov8n.yaml", "yolo11s.yaml", "yolov8n-p2.yaml"):
        write_config(tmp_path, f'[model]\nbase = "{ok}"\n')
        assert load(tmp_path).model.base == ok
    (tmp_path / "mine.yaml").write_text("nc: 2\n")
    write_config(tmp_path, '[model]\nbase = "mine.yaml"\n')
    assert load(tmp_path).model.base == "mine.yaml"


def test_the_executor_is_local_unless_the_config_says_ray():
    assert Config().training.executor == "local"
    cfg = parse({"training": {"executor": "ray"}, "ray": {"address": "http://10.0.0.5:8265/", "num_gpus": 1}})
    assert cfg.training.executor == "ray" and cfg.ray.address == "http://10.0.0.5:8265" and cfg.ray.num_gpus == 1.0


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"training": {"executor": "kubernetes"}}, "training.executor"),
        ({"ray": {"address": "10.0.0.5:8265"}}, "ray.address"),
        ({"ray": {"num_gpus": "1"}}, "ray.num_gpus"),
        ({"ray": {"num_cpus": -1}}, "ray.num_cpus"),
        ({"ray": {"resource": "flywheel trainer"}}, "ray.resource"),
        ({"ray": {"prefix": "a/b"}}, "ray.prefix"),
        ({"ray": {"adress": "http://127.0.0.1:8265"}}, "ray.adress"),
    ],
)
def test_a_bad_executor_setting_names_its_key(data: dict[str, Any], key: str):
    with pytest.raises(ConfigError, match=re.escape(f"key `{key}`")):
        parse(data)
