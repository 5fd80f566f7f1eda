# MinIO at the local stack's exact module version (e2e/local/lib/common.sh MINIO_VERSION), built
# from the Go module proxy as e2e/local/lib/install.sh does: MinIO publishes no image for it.
# Build args come from e2e/kind/images.env (e2e/kind/run passes them).
ARG GO_IMAGE
ARG MINIO_RUNTIME_IMAGE
FROM ${GO_IMAGE} AS build
ARG MINIO_VERSION
# The go command verifies the module against the checksum database, as the local install does.
RUN CGO_ENABLED=0 GOBIN=/out go install -trimpath -ldflags '-s -w' "github.com/minio/minio@${MINIO_VERSION}"

FROM ${MINIO_RUNTIME_IMAGE}
COPY --from=build /out/minio /usr/bin/minio
USER 65532:65532
ENTRYPOINT ["/usr/bin/minio"]
