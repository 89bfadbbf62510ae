# A runtime image of the gateway: `docker build -t gateway . && docker run -p 8080:8080 \
#   -v $PWD/gateway.yaml:/etc/gateway/gateway.yaml -e GITHUB_CLIENT_SECRET gateway`
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 gateway
USER 10001
ENV GATEWAY_CONFIG=/etc/gateway/gateway.yaml PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["gateway"]
CMD ["serve"]
