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

# Inside a container the web server must listen beyond loopback; the other
# settings (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, CVM_*) come from the environment.
ENV CVM_WEB_HOST=0.0.0.0 \
    CVM_WEB_PORT=6066 \
    CVM_DATA_DIR=/data/faust

EXPOSE 6066
VOLUME ["/data/faust"]

CMD ["cvm", "worker"]
