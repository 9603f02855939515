# One image for every gatesync daemon, `gatesync hub` or `gatesync agent` (see docker-compose.yml), and for the
# tools (`gatesync keygen`, `gatesync backup`). Runs as the unprivileged `node` user; state lives in /data.
FROM node:20-bookworm-slim AS build
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY cli ./cli
COPY shared ./shared
COPY hub ./hub
COPY gate-agent ./gate-agent
RUN ln -s /app/bin/gatesync.js /usr/local/bin/gatesync && mkdir -p /data /keys && chown node:node /data /keys
USER node
VOLUME ["/data"]
# Hub API (GATESYNC_HUB_PORT) and scanner API (GATESYNC_AGENT_PORT), as docker-compose.yml sets them.
EXPOSE 8080 8181
ENTRYPOINT ["gatesync"]
