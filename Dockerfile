# syntax=docker/dockerfile:1
# The modelfleet model-server image. Build it from the context `modelfleet image context SPEC -o DIR`
# assembles (this file, the modelfleet source under app/, the fleet's artifacts under models/):
#
#   modelfleet image context examples/fleet-small.yaml -o build/image
#   docker build -t REGISTRY/modelfleet:0.1.0 build/image
#
# The base is pinned by tag here. For reproducible builds pin it by digest too, e.g.
#   docker buildx imagetools inspect python:3.11-slim-bookworm   # prints the current digest
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> ...
# and set `image.digest` in the fleet spec to the digest of the image you push.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Stage 1: build wheels for modelfleet and its serving dependencies (no `export` extra: no torch).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY app/ /build/app/
RUN python -m pip wheel --wheel-dir /wheels /build/app

# Stage 2: the runtime, with only the installed wheels and the artifacts.
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
# A fixed UID/GID above 10000 matches the pods' runAsUser/runAsGroup and never collides with a host user.
RUN groupadd --system --gid 10001 modelfleet \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin modelfleet
COPY --from=build /wheels /wheels
RUN python -m pip install --no-index --find-links /wheels modelfleet \
 && rm -rf /wheels
# Artifacts are owned by root and read-only to the server user: a compromised server cannot alter a model.
COPY models/ /models/
USER 10001:10001
EXPOSE 8000
# No HEALTHCHECK: Kubernetes probes /v2/health/live and /v2/health/ready instead.
ENTRYPOINT ["modelfleet", "serve"]
CMD ["--spec", "/etc/modelfleet/serve.yaml"]
