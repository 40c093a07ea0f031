# syntax=docker/dockerfile:1
# One image for every wechat-broadcast service; docker-compose.yml picks the process with `command:`
# (broadcast api | worker | scheduler | flower | simulator). No secret is baked in: tokens come from
# the environment at run time.

# --- build: install the package and its dependencies into a virtualenv -----------------------------
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
# .dockerignore keeps .venv, .git, tests, caches and any local secrets out of this context.
COPY . .
RUN pip install --no-cache-dir .

# --- runtime ---------------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user with a fixed uid, so mounted files (deploy/accounts.toml) can be granted to it.
RUN groupadd --system --gid 10001 broadcast \
    && useradd --system --uid 10001 --gid broadcast --create-home --home-dir /home/broadcast \
        --shell /usr/sbin/nologin broadcast

COPY --from=build /opt/venv /opt/venv
COPY --chmod=755 deploy/entrypoint.sh /usr/local/bin/broadcast-entrypoint

# Numeric, so runtimes can verify it is not root (e.g. Kubernetes runAsNonRoot).
USER 10001:10001
WORKDIR /home/broadcast

# API, Flower, simulator (compose publishes the ones it needs).
EXPOSE 8000 5555 8899

# The entrypoint only sets BROADCAST_ACCOUNTS_FILE when /etc/broadcast/accounts.toml is mounted, then
# execs the command, so signals reach `broadcast` directly.
ENTRYPOINT ["/usr/local/bin/broadcast-entrypoint"]
CMD ["broadcast", "--help"]
