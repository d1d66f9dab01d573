# stackmesh: one Dockerfile, one image per service, chosen by the EXTRAS build argument.
#
#   service              EXTRAS          image (as deploy/docker-compose.yml names it)
#   registry, gateway,   (none)          stackmesh-core        (no torch, no model libraries)
#     scoring, eval
#   inference,           inference,      stackmesh-inference   (torch CPU, sentence-transformers, llama.cpp, models;
#     post_training      post_training                          transformers + peft: post_training's inline::huggingface
#                                                               trains, inference's inline::transformers serves)
#   safety               (none) *        stackmesh-safety      (* EXTRA_NO_DEPS="semgrep==1.100.0 codeshield==1.0.1")
#   vector_io            vector_io       stackmesh-vector-io
#   datasetio            datasetio       stackmesh-datasetio   (pandas, pyarrow)
#   tool_runtime         tool_runtime    stackmesh-tool-runtime
#
#   docker build --build-arg EXTRAS=inference,post_training -t stackmesh-inference .
#   docker build --build-arg EXTRA_NO_DEPS="semgrep==1.100.0 codeshield==1.0.1" -t stackmesh-safety .
#
# Every container runs `stackmesh serve <service> ...` (the ENTRYPOINT is `stackmesh serve`) as an
# unprivileged user, and reports health through grpc.health.v1 (`python -m stackmesh.probe`).
#
# Base image. No image registry can be reached on the machines this project is developed on, so the
# default is a locally imported Debian bookworm with Debian's Python 3.11 (scripts/deploy_test.sh builds
# it with debootstrap + `docker import`). Anywhere a registry is reachable:
#     docker build --build-arg BASE_IMAGE=python:3.11-slim-bookworm ...
#
# Wheels. `docker build` has no package index here either, so the builder installs from a wheelhouse
# built on the host into .wheels/wheelhouse/ (scripts/deploy_test.sh does it:
# `pip wheel -w .wheels/wheelhouse --find-links .wheels torch==2.13.0 ".[build,inference,vector_io,tool_runtime,datasetio,post_training]"`
# and `pip wheel --no-deps -w .wheels/wheelhouse semgrep==1.100.0 codeshield==1.0.1`;
# llama-cpp-python comes from .wheels/, built once with CMAKE_ARGS=-DGGML_NATIVE=OFF). Where an index is
# reachable the wheelhouse may be absent or partial:
#     docker build --build-arg PIP_NO_INDEX=0 --build-arg BUILDER_APT_PACKAGES="build-essential cmake" ...
# and the builder fetches what is missing and compiles llama-cpp-python itself (portable: GGML_NATIVE=OFF;
# a -march=native build crashes with SIGILL on hosts that advertise AMX/AVX-512 they do not run).
#
# Only the classic builder's features are used (no heredocs, no RUN --mount): Debian's docker.io 20.10
# without buildx builds it.

ARG BASE_IMAGE=local/py311:bookworm

# ---------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

ARG EXTRAS=""
ARG PIP_NO_INDEX=1
ARG BUILDER_APT_PACKAGES=""
# Installed before the extras when they need torch: an unpinned torch is a multi-GB CUDA build.
ARG TORCH_SPEC="torch==2.13.0"

ENV PIP_NO_INDEX=${PIP_NO_INDEX} \
    PIP_FIND_LINKS=/wheelhouse \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    CMAKE_ARGS="-DGGML_NATIVE=OFF"

RUN if [ -n "$BUILDER_APT_PACKAGES" ]; then \
        apt-get update && apt-get install -y --no-install-recommends $BUILDER_APT_PACKAGES \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# The wheelhouse is optional: the glob keeps COPY from failing when .wheels/wheelhouse is absent
# (pyproject.toml always matches, and is needed below anyway).
COPY pyproject.toml .wheels/wheelhouse* /wheelhouse/

# Code generation tools live in their own venv: grpcio-tools never reaches the runtime image.
RUN python3 -m venv /opt/codegen \
    && /opt/codegen/bin/pip install --quiet "setuptools>=68" wheel \
       $(python3 -c "import tomllib; print(' '.join(tomllib.load(open('/wheelhouse/pyproject.toml', 'rb'))['project']['optional-dependencies']['build']))")

# Runtime dependencies first (a layer that only changes with pyproject.toml or the wheelhouse):
# the core dependencies plus those of each extra in EXTRAS (comma or space separated).
RUN python3 -m venv /opt/venv \
    && python3 -c "import sys, tomllib; p = tomllib.load(open('/wheelhouse/pyproject.toml', 'rb'))['project']; extras = sys.argv[1].replace(',', ' ').split(); missing = [e for e in extras if e not in p.get('optional-dependencies', {})]; [print(f'warning: pyproject.toml has no extra {e!r}; nothing installed for it', file=sys.stderr) for e in missing]; print('\n'.join(p['dependencies'] + [r for e in extras for r in p.get('optional-dependencies', {}).get(e, [])]))" "$EXTRAS" > /tmp/requirements.txt \
    && cat /tmp/requirements.txt \
    && if grep -qiE '^(torch|sentence-transformers|transformers)' /tmp/requirements.txt; then \
           /opt/venv/bin/pip install --quiet "$TORCH_SPEC"; \
       fi \
    && /opt/venv/bin/pip install --quiet -r /tmp/requirements.txt

# Packages installed without their dependencies (space separated; the safety image's CodeShield and
# semgrep: semgrep's Python dependencies pin protobuf<5, which breaks grpc, and CodeShield only runs
# semgrep's standalone semgrep-core binary). CodeShield's first import makes a symlink next to that
# binary inside site-packages (semgrep/bin/osemgrep), which the unprivileged runtime user could not
# write: it is made here, as root, and travels with /opt/venv.
ARG EXTRA_NO_DEPS=""
RUN if [ -n "$EXTRA_NO_DEPS" ]; then \
        /opt/venv/bin/pip install --quiet --no-deps $EXTRA_NO_DEPS \
        && if ls -d /opt/venv/lib/python3*/site-packages/codeshield >/dev/null 2>&1; then \
               /opt/venv/bin/python -c "import codeshield.insecure_code_detector.oss as o; print('semgrep:', o.SEMGREP_BINARY_PATH)"; \
           fi; \
    fi

# The sources; generated protobuf/gRPC code is produced here, from protos/, never copied in.
WORKDIR /src
COPY README.md pyproject.toml ./
COPY protos/ protos/
COPY scripts/gen_protos.py scripts/gen_protos.py
COPY stackmesh/ stackmesh/
COPY services/ services/
COPY gateway/ gateway/
RUN /opt/codegen/bin/python scripts/gen_protos.py \
    && /opt/codegen/bin/pip wheel --quiet --no-deps --no-build-isolation -w /tmp/dist . \
    && /opt/venv/bin/pip install --quiet --no-deps /tmp/dist/stackmesh-*.whl \
    && cd / && /opt/venv/bin/python -c "import stackmesh.registry.v1.registry_pb2_grpc, stackmesh.inference.v1.inference_pb2_grpc, services.common.runner, gateway.app, stackmesh.probe"
RUN /opt/venv/bin/pip check || echo "warning: pip check reported the conflicts above"

# ---------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

ARG EXTRAS=""
LABEL org.opencontainers.image.title="stackmesh" \
      org.opencontainers.image.description="stackmesh gRPC mesh service (extras: ${EXTRAS})"

# An unprivileged user with a fixed uid (Kubernetes runAsNonRoot checks the number), and /data owned
# by it: a fresh named volume mounted there inherits that ownership.
RUN groupadd --gid 10001 stackmesh \
    && useradd --uid 10001 --gid 10001 --no-log-init --home-dir /home/stackmesh --create-home \
               --shell /usr/sbin/nologin stackmesh \
    && mkdir -p /data /etc/stackmesh \
    && chown 10001:10001 /data

COPY --from=builder /opt/venv /opt/venv
# llama.cpp's libraries link the OpenMP runtime (libgomp.so.1), which slim and minimal Debian images
# lack: installed from apt where it is missing (the local debootstrap base carries it already).
# Then the native libraries must load here, not at the first chat request.
RUN if ls -d /opt/venv/lib/python3*/site-packages/llama_cpp >/dev/null 2>&1; then \
        if ! ldconfig -p | grep -q 'libgomp\.so\.1 '; then \
            apt-get update && apt-get install -y --no-install-recommends libgomp1 \
            && rm -rf /var/lib/apt/lists/*; \
        fi \
        && /opt/venv/bin/python -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__, 'loads')"; \
    fi
# A default run config (the one compose uses); compose mounts its own, Kubernetes a ConfigMap.
COPY deploy/compose.run.yaml /etc/stackmesh/run.yaml

ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    ANONYMIZED_TELEMETRY=False \
    STACKMESH_CONFIG=/etc/stackmesh/run.yaml \
    STACKMESH_DATA_DIR=/data \
    STACKMESH_EXTRAS=${EXTRAS} \
    STACKMESH_PROBE_TARGET=127.0.0.1:50051

USER 10001:10001
WORKDIR /home/stackmesh
# grpc.health.v1, never a bare port check. Compose and Kubernetes set the port of each service
# (STACKMESH_PROBE_TARGET here, native grpc probes there).
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "stackmesh.probe", "--quiet"]

ENTRYPOINT ["stackmesh", "serve"]
CMD ["gateway", "--host", "0.0.0.0"]
