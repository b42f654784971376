# Multi-stage build of the release binary on Debian (bookworm).
#   docker build -t ringfort .
#   docker run --network host -v ringfort-data:/var/lib/ringfort ringfort
FROM rust:1-bookworm AS build
# libopus for the Opus codec (found through pkg-config).
RUN apt-get update && apt-get install -y --no-install-recommends libopus-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
# Cargo.toml names the benchmark examples; their files must exist to load the manifest.
COPY bench/relay/relay_bench.rs bench/relay/relay_bench.rs
COPY bench/alloc_count.rs bench/alloc_count.rs
COPY bench/media/transcode_bench.rs bench/media/mixer_bench.rs bench/media/player_bench.rs bench/media/
# transcode_bench and player_bench embed the speech sample.
COPY tests/data/speech tests/data/speech
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin ringfort \
    && rm -rf src
COPY src ./src
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin ringfort

FROM debian:bookworm-slim
# tzdata: the time zones of the dialplan's time sets (read from /usr/share/zoneinfo).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libopus0 tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/ringfort --shell /usr/sbin/nologin ringfort \
    && mkdir -p /etc/ringfort /usr/share/ringfort /var/lib/ringfort \
    && chown ringfort:ringfort /var/lib/ringfort
COPY --from=build /src/target/release/ringfort /usr/local/bin/ringfort
COPY ringfort.toml /etc/ringfort/ringfort.toml
COPY dialplans /usr/share/ringfort/dialplans
COPY sounds /usr/share/ringfort/sounds
# Paths in the config resolve against /etc/ringfort; point data and assets elsewhere.
ENV RINGFORT_NODE_DATA_DIR=/var/lib/ringfort \
    RINGFORT_PATHS_DIALPLANS=/usr/share/ringfort/dialplans \
    RINGFORT_PATHS_SOUNDS=/usr/share/ringfort/sounds \
    RINGFORT_HTTP_LISTEN=0.0.0.0:8080
USER ringfort
VOLUME /var/lib/ringfort
EXPOSE 5060/udp 5060/tcp 8080/tcp 10000-20000/udp
ENTRYPOINT ["/usr/local/bin/ringfort", "--config", "/etc/ringfort/ringfort.toml"]
CMD ["serve"]
