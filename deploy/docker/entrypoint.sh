#!/bin/sh
# The images' entrypoint. On the first start (no config.toml in $FLYWHEEL_ROOT, e.g. an empty
# volume) it makes the folder a data root from flywheel's documented default config, with two
# changes a container needs: /metrics, /healthz and /readyz listen on all interfaces
# (metrics.host = "0.0.0.0"; 127.0.0.1 cannot be reached from outside the container), and
# training.device = $FLYWHEEL_INIT_DEVICE when set (the GPU image sets "0"). An existing
# config.toml is never changed. Then it runs the command, by default `flywheel run`, with exec
# so that flywheel gets the container's SIGTERM.
set -eu
: "${FLYWHEEL_ROOT:?FLYWHEEL_ROOT must name the data root (the images set /var/lib/flywheel)}"
if [ ! -e "$FLYWHEEL_ROOT/config.toml" ]; then
    mkdir -p "$FLYWHEEL_ROOT"
    python - "$FLYWHEEL_ROOT/config.toml" "${FLYWHEEL_INIT_DEVICE:-}" <<'PY'
import json
import sys

from flywheel.app import default_config_text

path, device = sys.argv[1], sys.argv[2]
text = default_config_text()
# [metrics] host, named by its comment ([serve] has a host too: `flywheel serve --host` sets it)
edits = {'host = "127.0.0.1"                 # where /metrics': 'host = "0.0.0.0"                   # where /metrics'}
if device:
    edits['device = "cpu"'] = f"device = {json.dumps(device)}"
for old, new in edits.items():
    if text.count(old) != 1:
        sys.exit(f"flywheel-entrypoint: cannot make {new!r}: {old!r} is not once in the default config")
    text = text.replace(old, new)
with open(path, "x", encoding="utf-8") as fh:
    fh.write(text)
PY
    flywheel init "$FLYWHEEL_ROOT"
fi
exec "$@"
