# syntax=docker/dockerfile:1
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.Version=${VERSION}" -o /out/cdcd ./cmd/cdcd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cdcd /usr/local/bin/cdcd
COPY rules.json /etc/cdcd/rules.json
ENV CDCD_RULES_FILE=/etc/cdcd/rules.json \
    CDCD_HTTP_ADDR=:9380
EXPOSE 9380
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/cdcd", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/cdcd"]
CMD ["run"]
