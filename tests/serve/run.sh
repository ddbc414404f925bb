#!/usr/bin/env bash
# The serving tests: the official openai Python client (pinned, in a venv made here under
# target/) drives real `infer serve` processes on 127.0.0.1, plus two replicas behind nginx.
# Missing Python / nginx / network for pip: SKIP loudly, or fail under CI=true.
set -euo pipefail
cd "$(dirname "$0")/../.."

skip() {
    if [ "${CI:-}" = "true" ]; then
        echo "FAIL: CI=true and $1" >&2
        exit 1
    fi
    echo "SKIP: $1; the serving tests did NOT run" >&2
    exit 0
}

OPENAI_VERSION=1.109.1
PYTEST_VERSION=8.4.2
VENV=target/serve-venv

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y nginx >/dev/null ||
            (apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx >/dev/null) ||
            echo "could not install nginx" >&2
    fi
fi

if ! "$VENV/bin/python" -c "import openai, pytest; assert openai.__version__ == '$OPENAI_VERSION'" 2>/dev/null; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" || skip "python3 -m venv failed (apt-get install python3-venv)"
    "$VENV/bin/pip" install -q "openai==$OPENAI_VERSION" "pytest==$PYTEST_VERSION" ||
        skip "pip could not install openai==$OPENAI_VERSION"
fi

cargo build -p infer-cli
export INFER_BIN="$PWD/target/debug/infer"
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/serve "$@"
