#!/bin/sh
# gRPC health check (grpc.health.v1.Health/Check, service "") with curl alone, for the image's
# HEALTHCHECK: no grpc_health_probe binary to ship. Sends one empty HealthCheckRequest frame over
# HTTP/2 cleartext and succeeds only when the reply is exactly the SERVING message: 5-byte gRPC
# frame header (uncompressed, length 2) + field 1 varint 1 = 00 00000002 08 01.
# NOT_SERVING (08 02), a gRPC error (empty body, grpc-status in the trailers) or no answer fail.
set -eu
address="${NIMBLE_HEALTH_ADDRESS:-127.0.0.1:8001}"
reply=$(printf '\000\000\000\000\000' |
  curl --silent --fail --max-time 3 --http2-prior-knowledge \
    -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- \
    "http://${address}/grpc.health.v1.Health/Check" | od -An -tx1 | tr -d ' \n')
[ "$reply" = "00000000020801" ]
