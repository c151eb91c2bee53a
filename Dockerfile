# syntax=docker/dockerfile:1
#
# pprof-exporter container image: a statically linked binary on an empty base.
#
#   docker build -t pprof-exporter .
#
# Stage "build" compiles the exporter with glibc linked in statically
# (crt-static), so the runtime stage needs no libc, loader or shell. It lays out
# the whole runtime file tree under /out/rootfs, so the runtime stage is a
# single COPY. scripts/build-image.sh reuses the runtime stage verbatim with a
# binary built on the host, for machines without registry access.

FROM rust:1.95-slim-bookworm AS build

# Command substitution with a pipe below: fail the step if any part fails.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

WORKDIR /src
COPY . .

# An explicit --target keeps RUSTFLAGS away from build scripts and proc-macros,
# which must stay dynamically linked for the host. The host triple is asked of
# rustc so that the same file builds on amd64 and arm64. pack-relative-relocs stores
# the position-independent binary's 10,000 relocations in 3 KB instead of 250 KB,
# which the binary reads at every start (docs/performance.md, step 33).
# scripts/link-ordered lays out the code that runs together, so that less of the
# binary is resident (step 34); it runs from /src, cargo's working directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    triple="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS='-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs -C linker=scripts/link-ordered' \
    cargo build --release --locked --target "$triple" \
 && install -D -m 0755 "target/$triple/release/pprof-exporter" /out/rootfs/pprof-exporter \
 && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /out/rootfs/etc/ssl/certs/ca-certificates.crt \
 && /out/rootfs/pprof-exporter --version

# Runtime stage: nothing but the binary and the CA roots.
FROM scratch
COPY --from=build /out/rootfs/ /
# Numeric, so that Kubernetes runAsNonRoot can verify it without an /etc/passwd.
USER 65532:65532
EXPOSE 10060
ENTRYPOINT ["/pprof-exporter"]
