# syntax=docker/dockerfile:1
# pkmanager image: multi-stage, non-root, minimal.
#
# Base: gcr.io/distroless/base-debian12:nonroot. pkmanager needs cgo (blst, the
# BLS12-381 library, is C and assembly), so the binary links against glibc:
# distroless/static would not run it. base-debian12 carries glibc, CA
# certificates and tzdata, no shell or package manager, and runs as uid 65532.
#
#   docker build -t pkmanager .
#
# This is the published image. The real-cluster tests (test/node) cannot pull
# anything, so scripts/k8s-node/images.sh builds its twin without an image
# tool: the same ./cmd/pkmanager with the same CGO_CFLAGS, -trimpath and
# ldflags, linked statically (netgo, osusergo: no glibc in the image), and the
# same USER 65532:65532, ENTRYPOINT, CMD and ports, in one reproducible layer
# (sorted, mtime 0) holding only the binary, /etc/passwd, /etc/group and /tmp
# (no CA certificates or tzdata). Keep the two in step.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
# VERSION (e.g. v1.2.3) overrides the version the binary reads from its build information.
ARG VERSION=
# -trimpath: no build paths in the binary. blst's portable build (no ADX
# instructions) so the image runs on every x86-64 CPU.
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 CGO_CFLAGS="-O2 -D__BLST_PORTABLE__" \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/pkmanager ./cmd/pkmanager

FROM gcr.io/distroless/base-debian12:nonroot
COPY --from=build /out/pkmanager /usr/local/bin/pkmanager
USER 65532:65532
EXPOSE 8000 8080
ENTRYPOINT ["/usr/local/bin/pkmanager"]
CMD ["serve"]
