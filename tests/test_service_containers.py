"""Containers without an engine: the compose files against the compose-spec schema (shipped
by check-jsonschema, so no network), their wiring to the images and to the observability
files, the Dockerfiles' structure, and the images' entrypoint run for real."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flywheel.config_file import load
from flywheel.core.config import Config

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_GPU = DEPLOY / "docker" / "compose.gpu.yml"
DOCKERFILES = [DEPLOY / "docker" / "Dockerfile", DEPLOY / "docker" / "Dockerfile.gpu"]
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"
BIN = Path(sys.executable).parent


def check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("check-jsonschema", path=str(BIN))
    assert exe, "check-jsonschema is a dev dependency: pip install -e '.[dev]'"
    return subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", *map(str, files)], capture_output=True, text=True, timeout=120
    )


def test_compose_files_are_valid_per_the_compose_spec_schema():
    result = check_jsonschema(COMPOSE, COMPOSE_GPU)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_invalid_compose_file_is_rejected(tmp_path: Path):
    compose = yaml.safe_load(COMPOSE.read_text())
    compose["services"]["flywheel"]["healtcheck"] = compose["services"]["flywheel"].pop("healthcheck")
    compose["services"]["prometheus"]["ports"] = {"9090": "9090"}
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(compose))
    result = check_jsonschema(bad)
    assert result.returncode == 1, result.stdout
    assert "healtcheck" in result.stdout and "ports" in result.stdout


def test_compose_runs_the_image_on_its_data_root_volume_with_the_healthcheck():
    compose = yaml.safe_load(COMPOSE.read_text())
    flywheel = compose["services"]["flywheel"]
    assert set(compose["services"]) == {"flywheel", "serve", "prometheus", "grafana"}
    dockerfile = (COMPOSE.parent / flywheel["build"]["context"] / flywheel["build"]["dockerfile"]).resolve()
    assert dockerfile == DOCKERFILES[0]
    root = flywheel["environment"]["FLYWHEEL_ROOT"]
    assert root == dockerfile_env(DOCKERFILES[0])["FLYWHEEL_ROOT"]
    assert f"flywheel-data:{root}" in flywheel["volumes"] and "flywheel-data" in compose["volumes"]
    assert flywheel["healthcheck"]["test"] == ["CMD", "python", "-m", "flywheel.service.http", "healthz"]
    port = Config().metrics.port
    assert f"127.0.0.1:{port}:{port}" in flywheel["ports"]
    assert flywheel["init"] is True and flywheel["stop_signal"] == "SIGTERM"
    serve = compose["services"]["serve"]  # `flywheel serve` on the same volume, reachable from outside its container
    assert serve["image"] == flywheel["image"] and f"flywheel-data:{root}" in serve["volumes"]
    assert serve["command"][:3] == ["flywheel", "serve", root] and "0.0.0.0" in serve["command"]

    gpu = yaml.safe_load(COMPOSE_GPU.read_text())["services"]["flywheel"]
    assert (COMPOSE.parent / gpu["build"]["context"] / gpu["build"]["dockerfile"]).resolve() == DOCKERFILES[1]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def mounts(service: dict) -> dict[str, Path]:
    """Bind mounts of a compose service: container path -> host path (relative to deploy/)."""
    out = {}
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            out[target] = (COMPOSE.parent / source).resolve()
    return out


GRAFANA_DASHBOARDS = "/var/lib/grafana/dashboards/flywheel"


def test_compose_mounts_the_observability_files():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    prometheus, grafana = mounts(services["prometheus"]), mounts(services["grafana"])
    assert prometheus == {"/etc/prometheus": DEPLOY / "prometheus"}
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert grafana == {
        "/etc/grafana/provisioning": DEPLOY / "grafana" / "provisioning",
        GRAFANA_DASHBOARDS: DEPLOY / "grafana" / "dashboards",
    }
    needed = [
        DEPLOY / "prometheus" / "prometheus.yml",
        DEPLOY / "prometheus" / "alerts.yml",
        DEPLOY / "grafana" / "provisioning",
        DEPLOY / "grafana" / "dashboards",
    ]
    missing = [str(p.relative_to(REPO)) for p in needed if not p.exists()]
    assert not missing, f"deploy files missing (the compose stack mounts them): {', '.join(missing)}"


def test_prometheus_config_scrapes_the_compose_service_and_loads_the_alerts():
    config_path = DEPLOY / "prometheus" / "prometheus.yml"
    assert config_path.is_file(), f"{config_path} is missing: compose's prometheus service mounts it"
    config = yaml.safe_load(config_path.read_text())
    targets = {
        target
        for job in config.get("scrape_configs", [])
        for static in job.get("static_configs", [])
        for target in static.get("targets", [])
    }
    assert "flywheel:9108" in targets, f"compose's flywheel service is flywheel:9108; prometheus.yml has {targets}"
    rules = {str(Path("/etc/prometheus") / r) for r in config.get("rule_files", [])}
    assert "/etc/prometheus/alerts.yml" in rules, config.get("rule_files")


def test_grafana_provisioning_points_at_the_mounted_dashboards_and_prometheus():
    providers = sorted((DEPLOY / "grafana" / "provisioning" / "dashboards").glob("*.y*ml"))
    sources = sorted((DEPLOY / "grafana" / "provisioning" / "datasources").glob("*.y*ml"))
    assert providers and sources, "deploy/grafana/provisioning/{dashboards,datasources} are missing"
    paths = {p["options"]["path"] for f in providers for p in yaml.safe_load(f.read_text())["providers"]}
    assert paths == {GRAFANA_DASHBOARDS}, paths
    urls = {d.get("url") for f in sources for d in yaml.safe_load(f.read_text())["datasources"]}
    assert "http://prometheus:9090" in urls, urls


COMPOSE_V1 = REPO / ".compose-v1" / "bin" / "docker-compose"  # `make compose-v1` (test-slow installs it)


@pytest.mark.slow
@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, COMPOSE_GPU)], ids=["cpu", "gpu"])
def test_compose_v1_and_v2_accept_the_files(files):
    """The real tools: Compose v1 (docker-compose 1.29.2, as Debian ships it: it refused the
    top-level `name:` of v2) always, and v2 (`docker compose`) where Docker is installed."""
    tools = [[str(COMPOSE_V1)]] if COMPOSE_V1.is_file() else []
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        tools.append(["docker", "compose"])
    if not tools:
        pytest.fail(f"no Compose to check with: run `make compose-v1` ({COMPOSE_V1})")
    for cmd in tools:
        args = [arg for f in files for arg in ("-f", str(f))]
        result = subprocess.run([*cmd, *args, "config", "-q"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (cmd, result.stdout + result.stderr)


# --- Dockerfiles ------------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending += " " + line[:-1] if line.endswith("\\") else " " + line
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def dockerfile_env(dockerfile: Path) -> dict[str, str]:
    env = {}
    for word, args in final_stage(dockerfile):
        if word == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", args))
    return env


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_final_stage_names_a_non_root_user_a_volume_and_a_healthcheck(dockerfile: Path):
    """What the Dockerfile says (parsed, not built or run): its last stage's USER, VOLUME, EXPOSE,
    HEALTHCHECK, ENV and entry point."""
    stage = final_stage(dockerfile)
    words = [w for w, _ in stage]
    user = [a for w, a in stage if w == "USER"]
    assert len(user) == 1 and user[0].split(":")[0] not in ("0", "root"), user
    assert words.index("USER") < words.index("CMD")
    env = dockerfile_env(dockerfile)
    assert [a for w, a in stage if w == "VOLUME"] == [env["FLYWHEEL_ROOT"]]
    assert [a for w, a in stage if w == "EXPOSE"] == [str(Config().metrics.port)]
    healthcheck = next(a for w, a in stage if w == "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["python", "-m", "flywheel.service.http", "healthz"]')
    assert "/opt/flywheel/bin" in env["PATH"].split(":")  # so that `python` is the venv's
    assert env["YOLO_OFFLINE"] == "true"
    assert dict(stage)["ENTRYPOINT"] == '["flywheel-entrypoint"]' and dict(stage)["CMD"] == '["flywheel", "run"]'
    assert dict(stage)["STOPSIGNAL"] == "SIGTERM"
    if dockerfile.name.endswith(".gpu"):
        assert env["FLYWHEEL_INIT_DEVICE"] == "0" and env["NVIDIA_VISIBLE_DEVICES"] == "all"
    else:
        assert "FLYWHEEL_INIT_DEVICE" not in env


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_copies_only_what_its_dockerignore_lets_into_the_context(dockerfile: Path):
    ignore = Path(f"{dockerfile}.dockerignore")
    patterns = [p for p in ignore.read_text().splitlines() if p and not p.startswith("#")]

    def sent(path: str) -> bool:  # .dockerignore: the last matching pattern decides
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            body = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
                keep = negated
        return keep

    copies = [a for w, a in instructions(dockerfile) if w == "COPY" and "--from=" not in a]
    sources = [src for args in copies for src in args.split()[:-1] if not src.startswith("--")]
    assert "pyproject.toml" in sources and "flywheel" in sources
    for src in sources:
        assert (REPO / src).exists(), src
        assert sent(src), f"{src} is COPY'd but {ignore.name} keeps it out of the context"
    for heavy in (".venv/lib", "demo-data/flywheel.db", "tests/test_cycle.py", ".git/HEAD"):
        assert not sent(heavy), heavy


def test_image_torch_pins_come_from_pyproject():
    run = next(a for w, a in instructions(DOCKERFILES[0]) if w == "RUN" and "tomllib" in a)
    snippet = re.search(r"python -c '([^']+)'", run)
    assert snippet
    code = snippet.group(1).replace("/src/pyproject.toml", str(REPO / "pyproject.toml"))
    pins = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [p.split("==")[0] for p in pins] == ["torch", "torchvision"] and all("==" in p for p in pins), pins


# --- the entrypoint, run for real ---------------------------------------------------------------


def entrypoint(root: Path | None, *command: str, device: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FLYWHEEL_ROOT", "FLYWHEEL_INIT_DEVICE")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)  # this checkout's flywheel, whatever the venv has installed
    if root is not None:
        env["FLYWHEEL_ROOT"] = str(root)
    if device is not None:
        env["FLYWHEEL_INIT_DEVICE"] = device
    return subprocess.run(["sh", str(ENTRYPOINT), *command], env=env, capture_output=True, text=True, timeout=120)


def test_entrypoint_makes_a_data_root_listening_on_all_interfaces_then_runs_the_command(tmp_path: Path):
    assert os.access(ENTRYPOINT, os.X_OK)
    root = tmp_path / "volume"
    result = entrypoint(root, "sh", "-c", 'echo "command ran in $FLYWHEEL_ROOT"')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"command ran in {root}")
    config = load(root)
    assert config.metrics.host == "0.0.0.0" and config.training.device == "cpu"
    assert config.model_dump(exclude={"metrics"}) == Config().model_dump(exclude={"metrics"})
    assert (root / "inbox").is_dir() and (root / "flywheel.db").is_file()
    assert "# where /metrics is served" in (root / "config.toml").read_text()  # still the documented file

    (root / "config.toml").write_text('[metrics]\nhost = "10.0.0.7"\n')  # the user's own: kept
    again = entrypoint(root, "true", device="0")
    assert again.returncode == 0, again.stderr
    assert load(root).metrics.host == "10.0.0.7" and load(root).training.device == "cpu"


def test_entrypoint_of_the_gpu_image_trains_on_the_first_gpu(tmp_path: Path):
    result = entrypoint(tmp_path / "gpu", "true", device="0")
    assert result.returncode == 0, result.stderr
    config = load(tmp_path / "gpu")
    assert config.training.device == "0" and config.metrics.host == "0.0.0.0"


def test_entrypoint_needs_flywheel_root(tmp_path: Path):
    result = entrypoint(None, "true")
    assert result.returncode != 0 and "FLYWHEEL_ROOT must name the data root" in result.stderr
