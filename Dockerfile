# Multi-stage build: a small runtime image with the berry binary (stock plugins
# embedded) and the demo config, running as an unprivileged user.
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/berry

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/berry --create-home berry
COPY --from=build /src/target/release/berry /usr/local/bin/berry
COPY config/ /etc/berry/
# The demo's admin token is public (it is in the README) and Berry refuses to serve
# it on an address other machines reach: the image runs the demo without an admin API.
RUN sed -i '/^admin_token = "berry-demo-admin"/d' /etc/berry/berry.toml
USER berry
ENV CONFIG_PATH=/etc/berry/berry.toml \
    BIND_ADDRESS=0.0.0.0:8080 \
    BERRY_CACHE_DIR=/var/lib/berry/cache \
    BERRY_DATA_DIR=/var/lib/berry \
    BERRY_LOG_FORMAT=json
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/berry"]
CMD ["serve"]
