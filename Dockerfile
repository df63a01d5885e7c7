# syntax=docker/dockerfile:1
#
# gpu-dra: the kubelet plugin image (deploy/daemonset.yaml runs `gpu-dra driver` from it).
#
#   docker build -t ghcr.io/gpu-dra/gpu-dra:0.1.0 .
#
# Three stages: `build` compiles and bundles the TypeScript, `deps` installs the production dependencies
# only (npm ci --omit=dev), and the runtime image holds node, those dependencies, dist/ and
# proto/ (the gRPC protocols are loaded at run time). Build stages run as the unprivileged
# `node` user. test/e2e/package.test.ts assembles the runtime stage from its COPY lines and
# starts the driver from it, so a file the driver needs at run time cannot go missing here.
#
# The runtime runs as root, on purpose: the plugin opens /dev/nvidia* and /dev/nvidia-caps/*
# through NVML, creates its unix sockets in the root-owned kubelet directories
# /var/lib/kubelet/plugins_registry and /var/lib/kubelet/plugins/<driver>, and writes CDI
# specs to /var/run/cdi, which the container runtime reads. The DaemonSet runs it privileged
# for the same reasons; nothing else in the cluster runs this image.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
RUN chown node:node /src
USER node
COPY --chown=node:node package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY --chown=node:node tsconfig.json tsconfig.build.json ./
COPY --chown=node:node src ./src
COPY --chown=node:node scripts ./scripts
# tsc type-checks; scripts/bundle.mjs writes dist/gpu-dra.mjs (the entry the image runs) and the
# chunks it loads on demand, dist/chunks/.
RUN npm run build

FROM ${NODE_IMAGE} AS deps
WORKDIR /src
RUN chown node:node /src
USER node
COPY --chown=node:node package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM ${NODE_IMAGE}
LABEL org.opencontainers.image.title="gpu-dra" \
      org.opencontainers.image.description="Kubernetes DRA driver for NVIDIA GPUs" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production
WORKDIR /app
COPY package.json ./
COPY proto ./proto
COPY --from=deps /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
RUN ln -s /app/dist/gpu-dra.mjs /usr/local/bin/gpu-dra && chmod +x /app/dist/gpu-dra.mjs
# Root on purpose (see the header): device nodes, kubelet plugin sockets, CDI specs.
USER 0:0
# A 1 MiB young generation (V8's default grows to 16): the driver's allocations are short-lived
# and small, and it kept ~14 MiB of RSS that bought nothing measurable (BENCHMARKS.md).
ENTRYPOINT ["node", "--max-semi-space-size=1", "/app/dist/gpu-dra.mjs"]
CMD ["driver"]
