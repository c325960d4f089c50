# Encrypted scoring service: python -m service on port 8000, bundled model, settings from the environment.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY model ./model
COPY service ./service
COPY client ./client

# encrypted-inference writes its native library (libeisdk.so) into its own package folder on first
# import: do that now, as root, so the non-root runtime user never needs to write there.
RUN pip install --no-cache-dir . \
    && python -c "import encrypted.inference.eiserver" \
    && useradd --system --uid 10001 --no-create-home scorer

USER 10001
ENV HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/ready\", timeout=4)"]

CMD ["python", "-m", "service"]
