# syntax=docker/dockerfile:1
#
# weir container image: a release build of the `weir` binary on distroless.
#
#   docker build -t weir:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9901:9901 -e OPENAI_API_KEY=sk-... weir:0.1.0
#   docker run --rm -p 8080:8080 -p 9901:9901 -v "$PWD/my-policy.yaml:/etc/weir/weir.yaml:ro" weir:0.1.0
#
# The default policy, /etc/weir/weir.yaml, is policies/openai.yaml with both
# listeners on 0.0.0.0 (a container's 127.0.0.1 is unreachable from outside).
# A policy of your own must bind 0.0.0.0 too. The shipped policies are in
# /etc/weir/policies for reference (they bind 127.0.0.1).

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------- build
# Bookworm, like the runtime image: the binary links the same glibc.
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# jemalloc (weir's allocator) builds with make; zstd with the C compiler the
# image already has.
RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*

# 1. Dependencies only. This layer is rebuilt only when Cargo.toml or
#    Cargo.lock change: stub targets stand in for the sources, one for the
#    library, the binary, and every target the manifest declares
#    ([[bin]]/[[example]]/[[test]]/[[bench]]: cargo wants their files to
#    exist even when it builds only `weir`). The stubs of the declared
#    targets stay for step 2, which copies only src/ and policies/.
COPY Cargo.toml Cargo.lock ./
# --- stubs: begin (.ci/deploy-checks.sh runs these lines against the manifest)
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && awk -F'"' ' \
      function flush() { if (kind != "" && name != "") print (path != "" ? path : dir[kind] "/" name ".rs") } \
      BEGIN { dir["bin"] = "src/bin"; dir["example"] = "examples"; dir["test"] = "tests"; dir["bench"] = "benches" } \
      /^\[/ { flush(); kind = ""; name = ""; path = "" } \
      /^\[\[(bin|example|test|bench)\]\]/ { kind = $0; gsub(/\[|\]| /, "", kind) } \
      kind != "" && /^name *=/ { name = $2 } \
      kind != "" && /^path *=/ { path = $2 } \
      END { flush() }' Cargo.toml \
    | while read -r target; do \
        mkdir -p "$(dirname "$target")"; \
        [ -e "$target" ] || echo 'fn main() {}' > "$target"; \
      done
# --- stubs: end
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked --bin weir

# 2. weir itself. The stubs' build left fingerprints newer than the real
#    sources may be; touching them makes cargo rebuild the crate for sure.
COPY src ./src
COPY policies ./policies
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    touch src/lib.rs src/main.rs \
 && cargo build --release --locked --bin weir \
 && mkdir /out \
 && cp target/release/weir /out/weir \
 && sed -E 's/^(listen|admin): 127\.0\.0\.1:/\1: 0.0.0.0:/' policies/openai.yaml > /out/weir.yaml \
 && grep -q '^listen: 0\.0\.0\.0:8080$' /out/weir.yaml \
 && grep -q '^admin: 0\.0\.0\.0:9901$' /out/weir.yaml \
 && OPENAI_API_KEY=build-check /out/weir check --config /out/weir.yaml

# ---------------------------------------------------------------- busybox
# A static busybox, for the HEALTHCHECK's wget and the Kubernetes preStop
# `sleep` (distroless has no shell and no tools).
FROM busybox:1.36-musl AS busybox

# ---------------------------------------------------------------- runtime
# glibc, libgcc and CA certificates, no shell; runs as uid 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=busybox /bin/busybox /busybox
COPY --from=build /out/weir /usr/local/bin/weir
COPY --from=build /out/weir.yaml /etc/weir/weir.yaml
COPY policies/ /etc/weir/policies/
ENV WEIR_CONFIG=/etc/weir/weir.yaml
USER 65532:65532
# 8080: the proxy (`listen`); 9901: admin (`admin`): /metrics, /healthz, /readyz.
EXPOSE 8080 9901
# Docker and Compose use this; Kubernetes ignores it (use the probes in
# helm/weir). Assumes the admin listener on port 9901.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9901/healthz"]
# `docker run IMAGE` serves $WEIR_CONFIG; `docker run IMAGE check` validates it;
# `docker run IMAGE --config /path` serves another file.
ENTRYPOINT ["/usr/local/bin/weir"]
