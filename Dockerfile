# The gateway's runtime image (README: Operating it). `make docker-test` builds it with podman and runs
# it: health and readiness, a refused token, a non-root process, a clean stop on SIGTERM.
#
#   docker build -t gateway .
#   docker run -p 8080:8080 -v $PWD/gateway.yaml:/etc/gateway/gateway.yaml:ro -e GITHUB_CLIENT_SECRET gateway
#   (with server.host: 0.0.0.0 in that gateway.yaml: 127.0.0.1 inside a container is the container's own)
#
# The base is pinned to Python's minor version, as the tests run on (pyproject: requires-python); where
# no registry serves it, scripts/base-image makes an image of that tag from Debian's packages.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --disable-pip-version-check --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN groupadd --gid 10001 gateway && \
    useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin gateway
USER 10001:10001
ENV GATEWAY_CONFIG=/etc/gateway/gateway.yaml PYTHONUNBUFFERED=1
EXPOSE 8080 9090
# SIGTERM drains: no new connections, requests in flight finish within server.shutdown_timeout, exit 0
STOPSIGNAL SIGTERM
# /healthz on the admin port (loopback inside the container by default); GATEWAY_HEALTHCHECK_URL when
# admin: is set elsewhere. No proxy from the environment: the probe is local.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["python3", "-c", \
  "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(os.environ.get('GATEWAY_HEALTHCHECK_URL', 'http://127.0.0.1:9090/healthz'), timeout=4)"]
ENTRYPOINT ["gateway"]
CMD ["serve"]
