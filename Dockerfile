# The stream worker for docker-compose.yml (`docker compose up --build worker`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Everything .dockerignore lets through (package, schemas, README, pyproject).
COPY . .

RUN pip install . \
    && useradd --create-home --uid 10001 cvm \
    && mkdir -p /data/faust \
    && chown -R cvm /data/faust /app

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
