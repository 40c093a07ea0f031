#!/bin/sh
# Image entrypoint: runs the container's command (`broadcast ...`) after one optional setting.
#
# docker-compose.yml mounts ./deploy read-only at /etc/broadcast. When it holds an accounts.toml and
# BROADCAST_ACCOUNTS_FILE is not set already, use it. Setting the variable only when the file exists
# keeps the file optional: an empty BROADCAST_ACCOUNTS_FILE would be read as the path ".".
set -eu

default_accounts=/etc/broadcast/accounts.toml
if [ -z "${BROADCAST_ACCOUNTS_FILE:-}" ]; then
    unset BROADCAST_ACCOUNTS_FILE
    if [ -f "$default_accounts" ]; then
        export BROADCAST_ACCOUNTS_FILE="$default_accounts"
    fi
fi

exec "$@"
