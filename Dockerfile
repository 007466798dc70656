# syntax=docker/dockerfile:1
# golden-press image: worker (`python worker.py`), API (`python -m service.api.server`),
# migrations (`python -m service.store.migrate`) and the `golden-press` CLI. Configuration comes
# only from environment variables; keys are mounted as files at run time, never baked in.

# Build stage: generate the protobuf code once (grpcio-tools stays out of the runtime image).
FROM python:3.11-slim AS proto
WORKDIR /src
RUN pip install --no-cache-dir "grpcio-tools>=1.66"
COPY service/__init__.py service/__init__.py
COPY service/devstack/ service/devstack/
COPY proto/ proto/
RUN python -m service.devstack.protogen

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Run from the source tree: worker.py, migrations/ and the generated protobuf code live here.
    PYTHONPATH=/app

WORKDIR /app

# Non-root runtime user; uid/gid 10001 is what docker-compose.yml gives the secret files.
RUN groupadd --system --gid 10001 golden \
    && useradd --system --uid 10001 --gid golden --home-dir /var/lib/golden-press \
       --shell /usr/sbin/nologin golden \
    && install -d -o golden -g golden -m 0700 /var/lib/golden-press \
    && install -d -o golden -g golden -m 0755 /var/lib/golden-press/tiles

COPY pyproject.toml README.md worker.py ./
COPY golden_press/ golden_press/
COPY workflows/ workflows/
COPY activities/ activities/
COPY service/ service/
COPY starter/ starter/
COPY proto/ proto/
COPY migrations/ migrations/
# The generated protobuf code from the build stage (never edited by hand, never copied from the
# build context: see .dockerignore).
COPY --from=proto /src/proto/ proto/

RUN pip install . \
    && python -c "import worker, service.api.server, service.store.migrate"

USER 10001:10001
EXPOSE 50051 8081 9464
CMD ["python", "worker.py"]
