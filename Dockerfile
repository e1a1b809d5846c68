# Builds with BuildKit (DOCKER_BUILDKIT=1, or any recent `docker build`): its built-in Dockerfile
# frontend has the cache mounts below, so no "# syntax=" line pulls a frontend image.
# Build stage: compile csrd in release mode.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# jemalloc's settings (returning freed memory to the OS) are build-time environment.
COPY .cargo ./.cargo
# The workspace's test-support crate: cargo reads every member's manifest to resolve the lockfile.
COPY tests/support ./tests/support
# hyper with smaller per-connection buffers (Cargo.toml, [patch.crates-io]).
COPY vendor ./vendor
COPY src ./src
COPY migrations ./migrations
# BuildKit cache mounts keep the registry and the compiled dependencies between builds: a
# change to src/ recompiles csrd alone. The binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin csrd \
 && cp target/release/csrd /usr/local/bin/csrd

# Runtime stage: the binary alone on a slim Debian.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/csrd --create-home csrd
COPY --from=build /usr/local/bin/csrd /usr/local/bin/csrd
USER csrd
WORKDIR /var/lib/csrd
ENV CSRD_LISTEN=0.0.0.0:8080
EXPOSE 8080 9090
ENTRYPOINT ["csrd"]
CMD ["serve"]
