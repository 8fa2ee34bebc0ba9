# One image for the operator and the `safehold` CLI that its Jobs run.
# Build: docker build -t safehold:0.1.0 .
# The base is pinned by version; pin it by digest in your registry mirror for reproducible builds.
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m pip install --no-cache-dir --upgrade pip \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels '.[all]'

FROM python:3.11.7-slim-bookworm
# Client tools for database sources: pg_dump, pg_dumpall, pg_restore, psql (bookworm's 15: a
# client must be at least as new as the server it dumps) and mysqldump, mysql (MariaDB's).
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client mariadb-client \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links=/wheels 'safehold[all]' \
 && rm -rf /wheels \
 && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin safehold
USER 65532:65532
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ENTRYPOINT ["safehold"]
