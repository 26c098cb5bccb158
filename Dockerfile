# loombridge: a static binary in a small image that runs as a non-root user.
#   docker build --build-arg VERSION=v0.1.0 -t loombridge .
#   docker run -v $PWD/config.yaml:/etc/loombridge/config.yaml:ro -p 9464:9464 loombridge
# The configuration's http.addr must listen on 0.0.0.0:9464 for the health check
# and the published port (deploy/loombridge/config.yaml does).

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/loombridge ./cmd/loombridge
# The data directory, owned by the image's non-root user (65532), so that a named
# volume mounted there starts out writable.
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/loombridge /usr/local/bin/loombridge
# A volume for file sinks, offsets and dead letters; the configuration is mounted
# at /etc/loombridge/config.yaml.
COPY --from=build --chown=65532:65532 /out/data /var/lib/loombridge
WORKDIR /var/lib/loombridge
VOLUME /var/lib/loombridge
EXPOSE 9464/tcp
USER nonroot:nonroot
# A graceful stop finishes messages in flight within shutdown_timeout (30 s by
# default); give the container more than that before it is killed
# (docker stop -t 40, or stop_grace_period in compose).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/loombridge", "healthcheck", "--addr", "127.0.0.1:9464"]
ENTRYPOINT ["/usr/local/bin/loombridge"]
CMD ["run", "-c", "/etc/loombridge/config.yaml"]
