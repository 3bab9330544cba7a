# syntax=docker/dockerfile:1
# icefeed worker image: `docker build -t icefeed .`, then run `icefeed run` with ICEFEED_* env.
# It talks to Spark over Spark Connect with the lean client (pyspark-client): no JVM, no jars.
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements-image.txt requirements.lock ./
# Third-party test suites (pandas, numpy, pyarrow: ~70 MB) are not part of a runtime.
RUN python -m venv /opt/icefeed \
 && /opt/icefeed/bin/pip install --no-cache-dir -r requirements-image.txt -c requirements.lock \
 && find /opt/icefeed/lib -depth -path '*/site-packages/*' \
      \( -type d -name tests -exec rm -rf {} + -o -type f -name conftest.py -exec rm -f {} + \)
COPY pyproject.toml README.md ./
COPY worker ./worker
RUN /opt/icefeed/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11.14-slim-bookworm
RUN groupadd --system --gid 10001 icefeed \
 && useradd --system --uid 10001 --gid icefeed --no-create-home --shell /usr/sbin/nologin icefeed
COPY --from=build /opt/icefeed /opt/icefeed
COPY migrations /opt/icefeed/migrations
ENV PATH=/opt/icefeed/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ICEFEED_MIGRATIONS_DIR=/opt/icefeed/migrations \
    ICEFEED_LOG_FORMAT=json \
    ICEFEED_HTTP_PORT=9108
USER 10001:10001
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["icefeed"]
CMD ["run"]
