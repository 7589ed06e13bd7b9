# Build the server, then run it on a slim image. Configuration comes from the
# environment (see README "Configuration"); compose.yaml wires it to Postgres.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin palisade

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 palisade
COPY --from=build /src/target/release/palisade /usr/local/bin/palisade
USER palisade
ENV HOST=0.0.0.0 PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/palisade"]
CMD ["serve"]
