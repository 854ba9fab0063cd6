# syntax=docker/dockerfile:1
#
# prometheus-multi-tenant-proxy: a static binary on distroless, run as non-root.
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t prometheus-multi-tenant-proxy .

FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH=amd64
# CGO off: the binary needs no libc, so it runs on an image without one.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/prometheus-multi-tenant-proxy ./cmd/proxy

# static: CA certificates, tzdata and /etc/passwd, nothing else; nonroot is UID 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/prometheus-multi-tenant-proxy /usr/local/bin/prometheus-multi-tenant-proxy
USER 65532:65532
# 8080: the query API; 9091: metrics and probes when server.management_address is ":9091".
EXPOSE 8080 9091
ENTRYPOINT ["/usr/local/bin/prometheus-multi-tenant-proxy"]
CMD ["--config=/etc/prometheus-multi-tenant-proxy/config.yaml", "--port=8080"]
