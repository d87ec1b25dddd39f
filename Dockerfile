# One image for every role of the messenger API:
#   web        messenger-api                 (the default command)
#   consumer   messenger-run-task-consumer
#   migrations messenger-db migrate
# Build: docker build -t messenger-api .   (or: make docker-build)

ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: compile TypeScript with the full dependency set
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY messenger ./messenger
COPY migrations ./migrations
COPY web ./web
RUN npm run build

# --- deps: production dependencies only, no compiler, no test tools
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && npm cache clean --force

# --- runtime
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/app/data
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json swagger.yml ./
# Every entry of package.json "bin" becomes a command on PATH, so the roles are
# started by name; a bin whose file a build does not have yet stays unlinked.
RUN node -e ' \
      const fs = require("fs"); \
      const bins = require("./package.json").bin; \
      for (const [name, file] of Object.entries(bins)) { \
        if (!fs.existsSync(file)) { console.log("skipping " + name + ": " + file + " not built"); continue; } \
        fs.chmodSync(file, 0o755); \
        fs.symlinkSync("/app/" + file, "/usr/local/bin/" + name); \
      }' \
 && mkdir -p /app/data && chown node:node /app/data
USER node
EXPOSE 8080
# Liveness of the web role; compose overrides it per role (readiness is /health).
# No spaces inside the script: podman 4.3 splits a CMD healthcheck at spaces.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/ping').then((r)=>process.exit(r.ok?0:1),()=>process.exit(1))"]
CMD ["messenger-api"]
