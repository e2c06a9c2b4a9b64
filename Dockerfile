# memproxy as a container: `docker build -t memproxy .` then
#   docker run -p 8080:8080 -v memproxy-data:/data -e OPENAI_API_KEY -e MEMPROXY_MASTER_KEY memproxy
# Two stages: the build stage installs CPU-only torch and memproxy into a venv and exports the
# embedder to ONNX (int8) once; the runtime stage copies the venv and the exported model and runs
# as a non-root user with its data on the /data volume. See README "Operating memproxy".

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# torch's CPU build: PyPI's default torch for Linux carries CUDA (several GB). TORCH_FIND_LINKS
# lets an offline build use a local wheel directory or server instead.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MEMPROXY_CACHE_DIR=/opt/memproxy-cache
RUN python3 -m venv /opt/memproxy
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY memcubes ./memcubes
RUN /opt/memproxy/bin/pip install --extra-index-url "${TORCH_INDEX}" ${TORCH_FIND_LINKS:+--find-links "${TORCH_FIND_LINKS}"} \
        "torch==${TORCH_VERSION}" \
    && /opt/memproxy/bin/pip install "/src[otel]"
# Export the embedder now (torch -> ONNX -> int8, checked against torch): the first start of a
# container then loads the exported file in about a second instead of exporting it.
RUN /opt/memproxy/bin/python -c "from memcubes.config import EmbedderSettings; from memcubes.embedder import build_embedder; build_embedder(EmbedderSettings()).close()" \
    && ls /opt/memproxy-cache/memproxy/embedders/

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin memproxy \
    && mkdir -p /data \
    && chown memproxy:memproxy /data
COPY --from=build /opt/memproxy /opt/memproxy
COPY --from=build /opt/memproxy-cache /opt/memproxy-cache
COPY config/ /etc/memproxy/
# In a container memproxy listens on every interface and keeps its data on the volume; a config
# mounted over /etc/memproxy/default.yaml (or named by MEMPROXY_CONFIG) supplies the rest.
ENV PATH=/opt/memproxy/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    MEMPROXY_CACHE_DIR=/opt/memproxy-cache \
    MEMPROXY_CONFIG=/etc/memproxy/default.yaml \
    MEMPROXY_SERVER__HOST=0.0.0.0 \
    MEMPROXY_SERVER__PORT=8080 \
    MEMPROXY_MEMORY__DATA_DIR=/data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=90s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status != 200)"]
ENTRYPOINT ["memproxy"]
CMD ["serve"]
