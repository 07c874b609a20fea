# Images of Fledge, built from the repository root:
#   docker build -t fledge-controller .                    the controller (the last stage, default)
#   docker build --target fledge-sim -t fledge-sim .       the simulator, for sweeps in a cluster
#
# Both binaries are built once, with glibc (no musl target), and run on distroless/cc: glibc,
# libgcc and CA certificates, no shell, no package manager. Both run as UID and GID 65532, the
# distroless `nonroot` user and the UID the Helm chart's podSecurityContext sets; .ci/chart checks
# that the USER, the entrypoint and the port below agree with the chart. (No container engine is
# available where Fledge is built, so these images have not been built there.)

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
        -p fledge-controller --bin fledge-controller \
        -p fledge-simulator --bin fledge-sim \
 && install -D -m 0755 target/release/fledge-controller /out/fledge-controller \
 && install -D -m 0755 target/release/fledge-sim /out/fledge-sim

# The simulator: `fledge-sim sweep /scenarios/low-traffic.yaml --seeds 1000` runs a whole sweep
# in one container, on all its cores. The scenario library is included; mount your own over it.
FROM gcr.io/distroless/cc-debian12:nonroot AS fledge-sim
COPY --from=build /out/fledge-sim /usr/local/bin/fledge-sim
COPY scenarios /scenarios
# A read-only root filesystem leaves /tmp (an emptyDir) for reports.
WORKDIR /tmp
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/fledge-sim"]
CMD ["--help"]

# The controller, as the chart runs it (`args: ["run"]`): the ops server on 8080.
FROM gcr.io/distroless/cc-debian12:nonroot AS fledge-controller
COPY --from=build /out/fledge-controller /usr/local/bin/fledge-controller
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/fledge-controller"]
CMD ["run"]
