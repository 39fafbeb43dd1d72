# customer-worker container image.
#
#   docker build -t customer-worker .
#   docker run --rm customer-worker --help
#
# Build stage: the official Swift image. Swift 6.1 or newer is the project's floor, but
# Package.swift declares swift-tools-version 6.2 (it uses `treatAllWarnings`), so the image must
# carry 6.2 or newer.
FROM swift:6.2-bookworm AS build

# rabbitmq-c (found through pkg-config) and SQLite for the CRabbitMQ and GRDB targets.
RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get update -q \
    && apt-get install -y -q --no-install-recommends librabbitmq-dev libsqlite3-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Dependencies first, in their own layer: source edits do not fetch them again.
# (Package.resolved is not in git; the wildcard copies it when the checkout has one.)
COPY Package.swift Package.resolve[d] ./
RUN swift package resolve

COPY . .
RUN swift build -c release --product customer-worker --static-swift-stdlib \
    && mkdir -p /staging \
    && cp "$(swift build -c release --product customer-worker --static-swift-stdlib --show-bin-path)/customer-worker" /staging/ \
    && strip /staging/customer-worker

# Runtime stage: Debian slim plus the C libraries the binary links dynamically. The Swift
# standard library and Foundation are linked statically; libstdc++6 and zlib are already in the
# base image. librabbitmq4 and libsqlite3-0 are ours: `readelf -d customer-worker` needs nothing
# else beyond libstdc++, libgcc_s and libc (librabbitmq4 brings libssl3 with it).
FROM debian:bookworm-slim

RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get update -q \
    && apt-get install -y -q --no-install-recommends librabbitmq4 libsqlite3-0 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid/gid so volumes and orchestrators (runAsNonRoot) see the same owner.
RUN groupadd --system --gid 10001 worker \
    && useradd --system --uid 10001 --gid worker --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin worker \
    && mkdir -p /data \
    && chown worker:worker /data

COPY --from=build /staging/customer-worker /usr/local/bin/customer-worker

# The SQLite database lives in /data (WAL: replicas sharing it must share this volume). A new
# named volume mounted here starts out owned by the worker user.
ENV DATABASE_URL=/data/customers.sqlite
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001

# The HTTP listener (/healthz, /readyz, /metrics) when HTTP_PORT=8080 is set; off by default.
EXPOSE 8080

# No HEALTHCHECK here: the one-shot setup container runs this image too. docker-compose.yml
# checks the worker with `customer-worker health`.
ENTRYPOINT ["customer-worker"]
CMD ["run"]
