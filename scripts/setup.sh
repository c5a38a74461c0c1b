#!/usr/bin/env bash
# Set up reprobuild on a fresh Debian machine and run a real check on the bundled example.
#
#   ./scripts/setup.sh            # install, start Docker, build images, check the example
#   ./scripts/setup.sh --no-check # everything but the final check (what .ci/run uses)
#
# Idempotent: rerunning skips what is already there. Needs root (or sudo) for apt and dockerd.
set -euo pipefail

cd "$(dirname "$0")/.."
run_check=1
[ "${1:-}" = "--no-check" ] && run_check=0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Each stage says when it started (seconds since setup began), so a cold setup's log shows
# where the time went: apt, the engine, pip, the images (they show their own progress), the check.
say() { printf '==> [%4ds] %s\n' "$SECONDS" "$*"; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || need_pkgs+=(mmdebstrap)
command -v git >/dev/null 2>&1 || need_pkgs+=(git)
command -v tcpdump >/dev/null 2>&1 || need_pkgs+=(tcpdump)  # the no-leak test captures on the host
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    say "installing ${need_pkgs[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    say "starting the Docker engine"
    if [ -d /run/systemd/system ] && $SUDO systemctl start docker 2>/dev/null; then
        :
    else
        $SUDO sh -c 'nohup dockerd >/var/log/reprobuild-dockerd.log 2>&1 &'
    fi
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { echo "dockerd did not come up; see /var/log/reprobuild-dockerd.log" >&2; exit 5; }
fi

if [ ! -x .venv/bin/reprobuild ]; then
    say "creating .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip >/dev/null
fi
say "installing reprobuild into .venv (pip, from PyPI on the first run)"
.venv/bin/pip install -q -e '.[dev]'
# An editable install is not byte-compiled, and environments that set
# PYTHONDONTWRITEBYTECODE never cache it: compile once, as pip does for a normal install,
# so each run starts in ~0.3 s instead of recompiling ~10k lines.
.venv/bin/python -m compileall -q reprobuild >/dev/null

# The fetch phase's containers trust only what they are given. Hand them this machine's
# trust store, which also covers intercepting proxies (corporate, or this CI's).
if [ -z "${REPROBUILD_CA_CERT:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    export REPROBUILD_CA_CERT=/etc/ssl/certs/ca-certificates.crt
fi

if [ "$run_check" = 1 ]; then
    # The example's verdict first: it needs only the Python toolchain (and diffoscope to
    # explain a difference); the other toolchains build after it.
    say "building the images the example needs (cached after the first run)"
    .venv/bin/reprobuild images build python diffoscope
    say "checking the bundled example MCP server"
    .venv/bin/reprobuild check examples/mcp-notes-server
fi
say "building the pinned toolchain images (cached after the first run; independent ones at once)"
.venv/bin/reprobuild images build
say "done"
