#!/usr/bin/env bash
# Regenerates the Go code for api/**/*.proto. The generated files are committed,
# so building and testing never need protoc; run this after editing a .proto.
# Needs: protoc (Debian: protobuf-compiler and libprotobuf-dev), and the Go plugins installed below.
set -euo pipefail
cd "$(dirname "$0")/.."
go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0
export PATH="$(go env GOPATH)/bin:$PATH"
for f in $(find api -name "*.proto" | sort); do
  protoc -I . -I /usr/include \
    --go_out=. --go_opt=module=github.com/pkmanager/pkmanager \
    --go-grpc_out=. --go-grpc_opt=module=github.com/pkmanager/pkmanager \
    "$f"
done
