# syntax=docker/dockerfile:1
# pgproxy and metabase-provision in one small image, running as a non-root
# user. pg_query_go (PostgreSQL's parser, used by the read-only guard and
# lineage) needs cgo, so the build stage has gcc and the runtime stage has
# glibc (debian:bookworm-slim; it also has bash for the compose healthcheck).
#
#   docker build -t pgproxy:dev --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg COMMIT=$(git rev-parse --short HEAD) .
#
# This file is not built in CI (no Docker engine on the CI machines); see
# docs/operations.md.

FROM golang:1.26-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=none
# Same ldflags as `make build`; -trimpath and -s -w for a smaller, reproducible binary.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    set -eu; \
    ld="-s -w -X github.com/ofitec/pgproxy/internal/buildinfo.Version=${VERSION} -X github.com/ofitec/pgproxy/internal/buildinfo.Commit=${COMMIT}"; \
    CGO_ENABLED=1 go build -trimpath -ldflags "$ld" -o /out/pgproxy ./cmd/pgproxy; \
    CGO_ENABLED=1 go build -trimpath -ldflags "$ld" -o /out/metabase-provision ./cmd/metabase-provision; \
    /out/pgproxy version

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 pgproxy \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin pgproxy
COPY --from=build /out/pgproxy /out/metabase-provision /usr/local/bin/
# Defaults the config refers to; mount your own over them if needed.
COPY configs/catalog.yaml configs/metabase.yaml /usr/share/pgproxy/
COPY deploy/k8s/config/pgproxy.yaml /etc/pgproxy/pgproxy.yaml
USER 65532:65532
# 6432 rules listener, 6433 read listener, 9930 /metrics /livez /readyz /status
EXPOSE 6432 6433 9930
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pgproxy"]
CMD ["serve", "--config", "/etc/pgproxy/pgproxy.yaml"]
