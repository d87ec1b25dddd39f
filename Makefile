# make help lists every target. Settings are environment variables (docs/settings.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help install build run-dev run-prod stop-prod logs-prod run-local migrate test test-services test-browser test-faults lint typecheck check bench docker-build compose-config test-image ci

IMAGE ?= messenger-api:latest
# Docker Compose v2 plugin when present, else the standalone docker-compose.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

help: ## list every target
	@echo "usage: make <target>   (settings come from the environment, e.g. PORT=8090 make run-local)"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Reinstalls only when node_modules does not satisfy package.json (npm ls): a checkout or pull
# makes package.json newer than node_modules without changing a dependency, and npm ci first
# empties node_modules. Never through a symbolic link: npm ci empties the folder it points to
# (another checkout's, in use) and installs a new one here.
node_modules: package.json package-lock.json
	@if npm ls >/dev/null 2>&1; then :; \
	elif [ -L node_modules ]; then \
	  echo "make: node_modules links to $$(readlink node_modules), whose packages do not match package.json (npm ls says what differs); run npm ci in the checkout that folder belongs to, or replace the link with npm ci here (it would empty the folder it points to)" >&2; \
	  exit 1; \
	else npm ci --no-audit --no-fund; fi
	@touch node_modules

install: node_modules ## install dependencies from the lockfile (npm ci) unless node_modules satisfies package.json

build: node_modules ## compile TypeScript into dist/ (npm run build; npm start does it too)
	npm run -s build

run-dev: node_modules ## embedded mode (PGlite in ./data, no services), reloads on change
	npm run dev

run-prod: ## the production stack in Docker: build, then compose up (nginx on HTTP_PORT, default 8080)
	$(COMPOSE) -f docker-compose.yml up -d --build
	$(COMPOSE) -f docker-compose.yml ps

stop-prod: ## stop the Docker stack (data volumes are kept)
	$(COMPOSE) -f docker-compose.yml down

logs-prod: ## follow the Docker stack's logs
	$(COMPOSE) -f docker-compose.yml logs -f --tail=100

run-local: node_modules ## services mode here, no Docker: migrate db "messenger", WORKERS_NUM web workers + consumer (+ synchronizer with MESSAGE_STORAGE_TYPE=rabbitmq); Ctrl-C stops all
	deploy/run-local.sh

migrate: node_modules ## apply migrations to DATABASE_URL (or the embedded ./data when unset)
	npm run -s migrate

test: node_modules ## the test suite in the embedded mode
	npm test

test-services: node_modules ## the test suite against local PostgreSQL, Redis and RabbitMQ
	npm run -s test:services

test-browser: node_modules ## the web client and /docs in headless Chromium (needs Debian's chromium package)
	npm run -s test:browser

test-faults: node_modules ## the fault suite: private PostgreSQL/Redis/RabbitMQ stopped and restarted under load
	npm run -s test:faults

lint: node_modules ## eslint
	npm run -s lint

typecheck: node_modules ## tsc in strict mode over sources and tests
	npm run -s typecheck

check: typecheck lint build test test-browser test-services test-faults ## typecheck, lint, build, test, test-browser, test-services, test-faults

bench: node_modules ## the benchmark (npm run bench)
	npm run bench

docker-build: ## build the one production image (IMAGE, default messenger-api:latest)
	docker build -t $(IMAGE) .

compose-config: ## validate docker-compose.yml (no Docker engine needed)
	$(COMPOSE) -f docker-compose.yml config -q && echo "docker-compose.yml is valid"

test-image: ## build the image with the real Dockerfile and run the compose stack with podman (local base images, no registry), curl walkthrough through nginx, then tear down
	deploy/test-image.sh

ci: ## what CI runs (.ci/run)
	bash .ci/run
