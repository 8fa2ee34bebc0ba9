# One image for the operator and the `safehold` CLI that its Jobs run.
# Build: docker build -t safehold:0.1.0 .
#
# Reproducible and tamper-evident: every Python package, the build backend included, comes
# from requirements.lock (`make lock`), pinned by version and checked by sha256
# (`--require-hashes`); nothing is resolved at build time. The base image is pinned by
# version; to pin it by digest as well, pass the index digest of the tag you mirror, e.g.
#   docker buildx imagetools inspect python:3.11.7-slim-bookworm   # the "Digest:" line
#   docker build --build-arg PYTHON_DIGEST=sha256:<that digest> -t safehold:0.1.0 .
# (empty by default: the digest cannot be looked up where this file is maintained).
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG PYTHON_DIGEST=""

FROM ${PYTHON_IMAGE}${PYTHON_DIGEST:+@}${PYTHON_DIGEST} AS build
WORKDIR /src
# The dependencies first (their layer survives source changes), then safehold itself with
# no dependency resolution and no download: its build backend is in the lock too.
COPY requirements.lock ./
RUN python -m venv /opt/safehold \
 && /opt/safehold/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/safehold/bin/pip install --no-cache-dir --no-deps --no-index --no-build-isolation . \
 && /opt/safehold/bin/pip check

FROM ${PYTHON_IMAGE}${PYTHON_DIGEST:+@}${PYTHON_DIGEST}
# Client tools for database sources. A PostgreSQL client must be at least as new as the server
# it dumps or archives, and a newer pg_restore writes settings an older server refuses, so the
# image carries the tools (pg_dump, pg_dumpall, pg_restore, psql, pg_basebackup,
# pg_receivewal) of every supported major version, from the PostgreSQL project's apt repository
# (apt.postgresql.org; Debian's postgresql-common sets it up with the signing key it ships),
# under /usr/lib/postgresql/<major>/bin; safehold runs each server's own. mysqldump and mysql
# are MariaDB's, from Debian. docs/databases.md ("Server versions") says which servers they serve.
ARG POSTGRES_CLIENTS="14 15 16 17 18"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-common mariadb-client \
 && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
 && apt-get install -y --no-install-recommends \
      $(for v in ${POSTGRES_CLIENTS}; do echo postgresql-client-$v; done) \
 && rm -rf /var/lib/apt/lists/* \
 && for v in ${POSTGRES_CLIENTS}; do /usr/lib/postgresql/$v/bin/pg_dump --version; done \
 && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin safehold
# The same path as in the build stage, so the virtual environment's scripts work unchanged.
COPY --from=build /opt/safehold /opt/safehold
ENV PATH=/opt/safehold/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["safehold"]
