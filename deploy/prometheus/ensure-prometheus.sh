#!/usr/bin/env bash
# Make sure the Prometheus server and promtool are installed (Debian's `prometheus` package),
# for the real-server tests and `promtool` checks. Idempotent: does nothing when both are there.
# Needs root (CI runs as root) and the Debian package registry. Never starts a service.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-prometheus: prometheus/promtool missing; run as root or: sudo apt-get install -y prometheus" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The package's postinst would start a system service; a policy-rc.d that says "no" keeps it
# from doing so where there is an init system (the tests start their own on loopback).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
if ! apt-get install -y --no-install-recommends prometheus; then
    apt-get update
    apt-get install -y --no-install-recommends prometheus
fi
prometheus --version | head -1
promtool --version | head -1
