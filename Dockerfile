# syntax=docker/dockerfile:1
# The aidt-batch image: the release binary on Debian slim, run as the
# non-root user aidt (uid/gid 10001), configuration in /etc/aidt-batch, the
# prod profile by default.
#
#   docker build -t aidt-batch:0.1.0 .
#   docker run --rm aidt-batch:0.1.0 --help
#
# Only the aidt-batch package is built: the KERIS simulator and the dev tools
# (aidt-dev) are workspace members the image never contains.

# ---- builder: the Rust toolchain the project is built and tested with
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# The whole workspace's manifests and sources: cargo loads every member's
# manifest and targets (and the lock file) even to build one package.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY crates ./crates
COPY tests ./tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p aidt-batch \
    && install -m 0755 target/release/aidt-batch /usr/local/bin/aidt-batch

# ---- runtime: glibc, CA certificates (KERIS, S3, TLS to the databases)
FROM debian:bookworm-slim AS runtime
# Not pinned: CA certificates should be the distribution's current ones.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 aidt \
    && useradd --system --uid 10001 --gid aidt --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin aidt
COPY --from=builder /usr/local/bin/aidt-batch /usr/local/bin/aidt-batch
# No local.toml: its made-up secrets are for a developer's machine (compose
# mounts it for its `batch` service). The image runs prod unless told
# otherwise (--profile, AIDT_PROFILE); secrets come from the environment
# (Kubernetes: the Secret made from the hosts' env file).
COPY config/base.toml config/dev.toml config/prod.toml /etc/aidt-batch/
ENV AIDT_CONFIG_DIR=/etc/aidt-batch AIDT_PROFILE=prod
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/aidt-batch"]
CMD ["--help"]
