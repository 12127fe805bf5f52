# Dockerfile - the dae service image: dae-server (HTTP on 8080) and the dae
# command-line tool, with the committed MNIST and Fashion-MNIST models (the
# blind U-Nets).
#
#   docker build -t dae .
#   docker run --rm -p 8080:8080 dae
#   curl --data-binary @noisy.png localhost:8080/denoise > clean.png
#
# Stage 1 compiles with Debian's toolchain and runs the unit and command-line
# tests: a failing test fails the build. Stage 2 is debian:bookworm-slim with
# only the runtime libraries, the two stripped binaries, the models and a
# non-root user. Settings are dae-server's DAE_* environment variables
# (`docker run --rm dae --help` lists them).

FROM debian:bookworm-slim AS build
ARG DEBIAN_FRONTEND=noninteractive
WORKDIR /src
# The package list lives in tools/deps.sh (`make deps`); this layer is
# rebuilt only when that list changes.
COPY tools/deps.sh tools/deps.sh
RUN apt-get update \
 && tools/deps.sh \
 && rm -rf /var/lib/apt/lists/*
COPY Makefile ./
COPY deploy/deploy.mk deploy/deploy.mk
COPY core core
COPY io io
COPY cli cli
COPY server server
COPY tests tests
# The command-line tests decode and encode PNGs with the sweep tool's helpers.
COPY tools/http_sweep.py tools/http_sweep.py
COPY models models
RUN make -j"$(nproc)" build/dae build/dae-server build/test_dae \
 && build/test_dae --jobs "$(nproc)" \
 && tests/cli/run.sh build/dae \
 && mkdir -p /out \
 && strip --strip-unneeded -o /out/dae-server build/dae-server \
 && strip --strip-unneeded -o /out/dae build/dae

FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
# Runtime libraries only. dae calls OpenBLAS's cblas_sgemm directly, so the
# reference-BLAS and LAPACK copies that libopenblas0-pthread also installs
# (7.7 MB) are unregistered and removed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        libacl1 libbz2-1.0 libcjson1 libdeflate0 libgif7 liblz4-1 liblzma5 libnettle8 libzstd1 libjpeg62-turbo libmicrohttpd12 libopenblas0-pthread libpng16-16 zlib1g \
 && for lib in libblas.so.3 liblapack.so.3; do \
        update-alternatives --remove "$lib-x86_64-linux-gnu" "/usr/lib/x86_64-linux-gnu/openblas-pthread/$lib" \
        && rm -f "/usr/lib/x86_64-linux-gnu/openblas-pthread/$lib" || exit 1; \
    done \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /var/cache/debconf/*-old /var/lib/dpkg/*-old \
 && groupadd --system --gid 10001 dae \
 && useradd --system --uid 10001 --gid dae --home-dir /var/lib/dae --no-create-home \
        --shell /usr/sbin/nologin dae \
 && mkdir -p /var/lib/dae/models /var/lib/dae/state /var/lib/dae/data \
 && chown -R dae:dae /var/lib/dae

COPY --from=build /out/dae-server /out/dae /usr/local/bin/
COPY deploy/docker/dae-entrypoint deploy/docker/dae-healthcheck /usr/local/bin/
# The built-in models: the entrypoint copies them into an empty models
# volume, so a fresh volume or bind mount serves them by name.
# (The seed networks, mnist-ae and fashion-mnist-ae, stay out of the image:
# its size limit; PUT /models/{name} adds them.)
COPY models/mnist.safetensors models/fashion-mnist.safetensors /usr/share/dae/models/

# The same variables as the binary (dae-server --help); the directories
# are the volumes below. DAE_STATE_DIR holds training-job records,
# DAE_DATA_DIR the IDX data sets that /train and `dae train` read. No
# DAE_MODEL: the default model is mnist until an activation writes the
# models volume's ACTIVE file, which every replica then follows (a model
# given by DAE_MODEL would win over it). OPENBLAS_NUM_THREADS=1: dae runs
# OpenBLAS on one thread (its own workers split the work), but OpenBLAS
# starts a thread for every further CPU it may run on when it loads (all
# of a node's under a Kubernetes CPU limit), each spinning ~90 ms before
# it sleeps: on 2 CPUs 100-130 ms of CPU in the server's first 1.5 s,
# against 20-30 ms with the variable.
ENV DAE_BIND=0.0.0.0 \
    DAE_PORT=8080 \
    DAE_MODELS_DIR=/var/lib/dae/models \
    DAE_STATE_DIR=/var/lib/dae/state \
    DAE_DATA_DIR=/var/lib/dae/data \
    OPENBLAS_NUM_THREADS=1

LABEL org.opencontainers.image.title="dae" \
      org.opencontainers.image.description="Denoising autoencoder over HTTP: POST an image to /denoise, get it back denoised"

USER 10001:10001
WORKDIR /var/lib/dae
VOLUME ["/var/lib/dae/models", "/var/lib/dae/state", "/var/lib/dae/data"]
EXPOSE 8080
# No curl in the image (it would add about 10 MB of libraries): the check
# is a GET /healthz over bash's /dev/tcp.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/dae-healthcheck"]
# dae-server drains on SIGTERM (readyz 503, in-flight requests finish within
# DAE_DRAIN_TIMEOUT, 20 s by default) and exits 0: give `docker stop` a
# longer timeout than that (docker stop -t 30, stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/dae-entrypoint"]
CMD []
