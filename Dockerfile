# One image for every Parity service; docker-compose.yml runs one `parity` command in each.
# Build: docker build -t parity .   (Python 3.11 on Debian 12, as ./scripts/run expects)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The packages only: tests, benchmarks and the local .venv stay out (see .dockerignore).
COPY pyproject.toml README.md ./
COPY parity ./parity
COPY connectors ./connectors
COPY normalizer ./normalizer
COPY inbox ./inbox
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin parity

# Settings for containers: listen on all interfaces, PostgreSQL from PARITY_DATABASE_URL.
# docker-compose.yml mounts ./config over /etc/parity (edit config/settings.toml there).
COPY config/settings.toml /etc/parity/settings.toml
ENV PARITY_SETTINGS=/etc/parity/settings.toml

USER parity
EXPOSE 2525 8080
CMD ["parity", "run"]
