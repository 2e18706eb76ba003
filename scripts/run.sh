#!/usr/bin/env bash
# `make run`: serve Slack when Slack tokens are set; otherwise open the terminal chat.
set -euo pipefail
config="${1:-pgsessions.yml}"
bin="$(dirname "$0")/../.venv/bin"
if [ -n "${SLACK_BOT_TOKEN:-}" ]; then
    if [ ! -f "$config" ]; then
        echo "No config file $config: copy pgsessions.example.yml to $config and edit it (or pass CONFIG=path)." >&2
        exit 2
    fi
    exec "$bin/pgsessions" serve --config "$config"
fi
if "$bin/pgsessions" shell --help >/dev/null 2>&1; then
    if [ -f "$config" ]; then
        exec "$bin/pgsessions" shell --config "$config"
    fi
    exec "$bin/pgsessions" shell
fi
exec "$bin/pgsessions" serve --config "$config"
