# Encrypted scoring service: python -m service on port 8000, bundled model, settings from the environment.
# Build stage: install into a virtual environment and unpack encrypted-inference's native library.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A C compiler for the v1 protocol's compiled loops (bfv/_kernels.c); the runtime stage does not
# get it. The versions are those of the base image's Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY model ./model
COPY service ./service
COPY client ./client
COPY bfv ./bfv
# The browser client (/demo) and its ChaCha20 module, and Swagger UI (/docs), fetched at the lockfile's
# versions and hashes.
COPY web ./web
COPY package-lock.json ./
COPY scripts/vendor_web.py ./scripts/
RUN python scripts/vendor_web.py

# The runtime needs neither the installers (pip, setuptools; wheel is never installed) nor the
# packages' own test suites (~65 MB of numpy, scipy and scikit-learn, and onnx's 18 MB of backend
# conformance models in onnx/backend/test): all go here.
# encrypted-inference writes libeisdk.so into its own package folder on first import: do it here,
# so the runtime image works with a read-only root filesystem. The build fails if the compiled loops
# did not build (pip would have gone on without them). `-I`: the installed packages, not /src's.
# The `server` extra only, and the build checks it: no client command line (typer, rich), no
# tutorial client (httpx), no test tools, no bench.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir '.[server]' \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools \
    && find /opt/venv/lib/python3.11/site-packages -type d -name tests -prune -exec rm -rf {} + \
    && rm -rf /opt/venv/lib/python3.11/site-packages/onnx/backend/test \
    && /opt/venv/bin/python -I -c "import encrypted.inference.eiserver, service.app, bfv.evaluation" \
    && /opt/venv/bin/python -I -c "import model.onnx_graphs, bfv.network_rounds" \
    && /opt/venv/bin/python -I -c "import importlib.util as u; x = [*filter(u.find_spec, ('typer', 'rich', 'httpx', 'pytest', 'bench'))]; assert not x, x" \
    && /opt/venv/bin/python -I -c "from bfv import kernels; assert kernels.AVAILABLE, kernels.STATUS"

# Runtime stage: the environment only, a non-root user, nothing to write but /tmp.
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    LOG_FORMAT=json

RUN useradd --system --uid 10001 --no-create-home scorer
COPY --from=build /opt/venv /opt/venv

WORKDIR /tmp
USER 10001
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/ready\", timeout=4)"]

CMD ["python", "-m", "service"]
