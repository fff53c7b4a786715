# syntax=docker/dockerfile:1
# Multi-stage build: a Rust builder, then a distroless, non-root runtime image (~30 MB).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# Compile the dependencies in their own layer so code changes rebuild only the crate.
# The image is built without the simulator (a default cargo feature).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs && echo 'fn main() {}' > benches/scale.rs \
 && cargo build --release --locked --no-default-features --bin vpn-operator \
 && rm -rf src benches
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --no-default-features --bin vpn-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="altostrat-vpn-operator" \
      org.opencontainers.image.description="Kubernetes operator for Altostrat Managed VPN" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /src/target/release/vpn-operator /vpn-operator
# Fewer glibc malloc arenas: the operator is I/O bound, and the default (8 per core) mostly
# holds freed memory (see BENCHMARKS.md).
ENV MALLOC_ARENA_MAX=2
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/vpn-operator"]
CMD ["run"]
