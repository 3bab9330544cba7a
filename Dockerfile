# icefeed worker image. Build: docker build -t icefeed .   Run: docker run --env-file … icefeed
# Talks to Spark over Spark Connect: no JVM in the image.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY worker ./worker
RUN python -m venv /opt/icefeed \
 && /opt/icefeed/bin/pip install --upgrade pip \
 && /opt/icefeed/bin/pip install -c requirements.lock .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 icefeed \
 && useradd --system --uid 10001 --gid icefeed --no-create-home icefeed
COPY --from=build /opt/icefeed /opt/icefeed
COPY migrations /opt/icefeed/migrations
ENV PATH=/opt/icefeed/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ICEFEED_MIGRATIONS_DIR=/opt/icefeed/migrations \
    ICEFEED_LOG_FORMAT=json
USER 10001:10001
ENTRYPOINT ["icefeed"]
CMD ["run"]
