# deploy/deploy.mk - the container and deployment targets, included at the
# end of the Makefile (`include deploy/deploy.mk`).
#
#   make data          download the official MNIST and Fashion-MNIST files
#                      into $DAE_DATA_DIR (or DATA_FLAGS="--dir DIR")
#   make image         build the container image $(IMAGE_NAME) with docker
#   make test-deploy   build and test the image, docker-compose with
#                      Prometheus, the alert rules and the Kubernetes
#                      manifests, for real (tests/deploy/run.sh; root)

IMAGE_NAME ?= dae:latest
DATA_FLAGS ?=

.PHONY: data image test-deploy

data: ## download the official MNIST and Fashion-MNIST files into $DAE_DATA_DIR, checking their MD5s
	tools/fetch_data.sh $(DATA_FLAGS)

image: ## build the container image (IMAGE_NAME, default dae:latest) with docker
	docker build -t $(IMAGE_NAME) .

# Provisioning first (packages, npm modules, the base image; cached in
# $(BUILD)/deploy), then the checks against a Docker daemon of their own.
test-deploy: ## test the Dockerfile, image, compose + Prometheus, alert rules and k8s manifests (root)
	DEPLOY_CACHE=$(abspath $(BUILD)/deploy) tools/deploy_deps.sh
	DEPLOY_CACHE=$(abspath $(BUILD)/deploy) tools/dockerd_private.sh tests/deploy/run.sh
