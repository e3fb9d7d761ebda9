# syntax=docker/dockerfile:1
#
# whisper-serve, CPU image (Debian bookworm).
#
#   docker build -t whisper-serve .
#   docker run --rm -p 8000:8000 -v whisper-models:/models whisper-serve
#
# One image for every role; the command picks it:
#   serve   --config F   single machine: HTTP API + model in one process (default)
#   gateway --config F   HTTP API only, talks to NATS JetStream (port 8000)
#   worker  --config F   loads the model, pulls jobs from NATS (port 8001: /health, /metrics)
#   models pull NAME     download a model into /models
#
# Any config key can be overridden with WHISPER_SERVE__<SECTION>__<KEY>,
# e.g. -e WHISPER_SERVE__CLUSTER__NATS_URL=nats://nats:4222.
#
# The build needs network access to PyPI: build.rs downloads the official
# `ctranslate2` wheel and copies its shared libraries (libctranslate2-*.so.*,
# libgomp-*.so.*) beside the binary, which finds them through rpath $ORIGIN.
# Behind a mirror: --build-arg PIP_INDEX_URL=https://mirror/simple

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

############################################################ builder
FROM ${RUST_IMAGE} AS builder

# C/C++ toolchain for the cxx bridge (third_party/ct2rs), libfvad
# (webrtc-vad) and bundled SQLite; cmake for the bundled libopus
# (opusic-sys); pkg-config + zlib headers for libz-sys;
# CA certificates for build.rs's HTTPS download from PyPI.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config zlib1g-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*

ARG PIP_INDEX_URL
WORKDIR /src
COPY . .

# Cache mounts keep the crate registry and target/ (including build.rs's
# cached wheel libraries, target/ctranslate2-*) between builds. Because
# target/ is a cache mount, the artifacts are copied out in the same step.
# build.rs copies the libraries of the wheel's ctranslate2.libs/
# (libctranslate2-<hash>.so.<version>, libgomp-<hash>.so.1.0.0) into
# target/release; ldd names the ones this binary loads from there (an older
# version's files may linger in the cached target/), and they go beside it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin whisper-serve \
 && mkdir -p /out \
 && cp target/release/whisper-serve /out/ \
 && ldd target/release/whisper-serve \
    | awk 'index($3, "/src/target/release/") == 1 { print $3 }' \
    | xargs -r cp -t /out/ \
 && ls -l /out \
 && ls /out | grep -q '^libctranslate2-.*\.so\.' \
 && ls /out | grep -q '^libgomp-.*\.so\.' \
 && /out/whisper-serve --version

############################################################ runtime
FROM ${RUNTIME_IMAGE} AS runtime

# ca-certificates: model downloads over HTTPS (Hugging Face) and TLS to NATS.
# Besides glibc, the binary and the wheel's libraries link against
# libstdc++6, libgcc-s1 (always present) and zlib1g.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 zlib1g \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 whisper \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/whisper-serve \
      --create-home --shell /usr/sbin/nologin whisper \
 && mkdir -p /models /data/jobs /etc/whisper-serve \
 && chown -R 10001:10001 /models /data

COPY --from=builder /out/ /opt/whisper-serve/
COPY config.json /etc/whisper-serve/config.json
# Fails the build if a shared library is missing from this image.
RUN ["/opt/whisper-serve/whisper-serve", "--version"]

ENV PATH=/opt/whisper-serve:$PATH \
    WHISPER_SERVE__MODEL__MODEL_DIR=/models \
    WHISPER_SERVE__JOBS__DIR=/data/jobs \
    WHISPER_SERVE__LOGGING__FILE=null

# Named volumes start with this ownership, so uid 10001 can write them.
VOLUME ["/models", "/data/jobs"]

# 8000: HTTP API (serve, gateway; server.port). 8001: worker health and
# metrics (cluster.worker_port).
EXPOSE 8000 8001

USER 10001:10001
WORKDIR /var/lib/whisper-serve

# No HEALTHCHECK: the image has no curl/wget. Orchestrators probe
# GET /health (readiness) and GET /health/live (liveness) themselves.
ENTRYPOINT ["/opt/whisper-serve/whisper-serve"]
CMD ["serve", "--config", "/etc/whisper-serve/config.json"]
