# syntax=docker/dockerfile:1
# The hab-bootstrap image: one static binary on scratch, non-root. The webhook, the certificate
# keeper (`certs watch`) and the role sidecar injected into Habitat pods all run this image.
#
#   docker build -t hab-bootstrap:0.1.0 .
#
# The build stage runs `cargo build --release --locked` for the musl target of the build machine
# (x86_64 or aarch64: build each platform natively or under emulation). scripts/image.sh runs the
# same cargo command without Docker and assembles the same image with umoci.
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
# Cargo.toml names the bench target, so benches/ must be there for the manifest to load.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked --target "$target" --bin hab-bootstrap \
 && install -D -m 0755 "target/$target/release/hab-bootstrap" /out/hab-bootstrap

FROM scratch
COPY --from=build /out/hab-bootstrap /hab-bootstrap
# Numeric, so that runAsNonRoot can be verified without an /etc/passwd.
USER 65532:65532
ENTRYPOINT ["/hab-bootstrap"]
CMD ["--help"]
