# presence-host with its bundled plugins, on the embedded SQLite store.
#
#   docker build -t presence-host .
#   docker run -p 8080:8080 -v presence-data:/var/lib/presence \
#       -e PRESENCE_ADMIN_TOKEN=change-me presence-host
#
# Two stages: the toolchain builds the host (release) and the plugins
# (wasm32-wasip2); the final image holds the binary, the plugins and nothing
# else (distroless: glibc, CA certificates, no shell, a non-root user).

FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo xtask plugins \
 && cargo build --release --locked --package presence-host \
 && mkdir -p /out/data \
 && cp target/release/presence-host /out/ \
 && cp -r target/plugins /out/plugins

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/presence-host /usr/local/bin/presence-host
COPY --from=build /out/plugins /opt/presence/plugins
# The data folder (database, master key, compile cache) belongs to the image's
# non-root user, so a fresh named volume mounted there is writable.
COPY --from=build --chown=nonroot:nonroot /out/data /var/lib/presence
ENV PRESENCE_DATA_DIR=/var/lib/presence \
    PRESENCE_PLUGINS_DIR=/opt/presence/plugins \
    PRESENCE_LISTEN=0.0.0.0:8080 \
    PRESENCE_LOG_FORMAT=json
VOLUME /var/lib/presence
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/presence-host"]
CMD ["serve"]
