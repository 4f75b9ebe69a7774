# The stream worker for docker-compose.yml (`docker compose up --build worker`).
# The base image is pinned to a patch release; `make lock` pins the Python packages.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# 1. The dependencies, from the lock file only: this layer is rebuilt when
#    requirements/runtime.txt changes, not on every change of the source.
COPY requirements/runtime.txt requirements/runtime.txt
RUN pip install -r requirements/runtime.txt \
    && useradd --create-home --uid 10001 cvm \
    && mkdir -p /data/faust \
    && chown -R cvm /data/faust

# 2. The package itself (its dependencies are already there). load/ and tests/
#    are not copied: the engine does not use them.
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY stream_app ./stream_app
RUN pip install --no-deps . && rm -rf /app/build

USER cvm

# Inside a container the web server must listen beyond loopback, so the worker
# needs CVM_API_TOKENS (it refuses to start without); the other settings
# (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, CVM_*) come from the environment.
ENV CVM_WEB_HOST=0.0.0.0 \
    CVM_WEB_PORT=6066 \
    CVM_DATA_DIR=/data/faust

EXPOSE 6066
VOLUME ["/data/faust"]

# Liveness: the event loop turns. (Readiness, /readyz, is docker-compose.yml's check.)
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CVM_WEB_PORT', '6066') + '/livez', timeout=4)"

CMD ["cvm", "worker"]
