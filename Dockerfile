# syntax=docker/dockerfile:1
# devplane's container image: the one `devplane` binary (controller, frontdoor, webhook, up, …)
# on distroless, as a non-root user, with no shell or package manager at run time.
#
#   docker build -t devplane:dev .
#   docker run --rm devplane:dev controller --help

ARG RUST_VERSION=1.95

# Build on the Debian release the runtime image is made from, so the binary links against the
# same glibc.
FROM rust:${RUST_VERSION}-slim-bookworm AS build
# protoc generates the etcd client at build time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler=3.21.* \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory across builds (the binary is copied
# out of the mounted target in the same step); --locked builds exactly Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p devplane \
    && install -D -m 0755 target/release/devplane /out/usr/local/bin/devplane \
    && install -d -m 0750 /out/var/lib/devplane

# glibc, libgcc and CA certificates; user nonroot is 65532, which the manifests run as.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/devplane /usr/local/bin/devplane
# Where `devplane up` keeps its store, CA and tokens when run from the image.
COPY --from=build --chown=65532:65532 /out/var/lib/devplane /var/lib/devplane
ENV DEVPLANE_DATA_DIR=/var/lib/devplane
USER 65532:65532
# API (up), device MQTT, MQTTS, application MQTT, HTTP, HTTPS, CoAP, CoAPS, admin endpoints,
# webhook.
EXPOSE 6443 1883 8883 1884 8080 8443 5683/udp 5684/udp 8081 8082 8083 9443
ENTRYPOINT ["/usr/local/bin/devplane"]
CMD ["--help"]
