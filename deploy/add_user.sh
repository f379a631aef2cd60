#!/bin/sh
# The images' unprivileged user "s1" with user id $1 (the Dockerfile's CONTAINER_UID), and
# the cache folders a bind-mounted Hugging Face / vLLM cache lands in. A user the base image
# already has with that id (Ubuntu's "ubuntu") is replaced. Used by both Dockerfile targets.
set -eu
uid="$1"
existing="$(getent passwd "${uid}" | cut -d: -f1)"
if [ -n "${existing}" ]; then userdel "${existing}"; fi
useradd --uid "${uid}" --create-home --shell /bin/bash s1
mkdir -p /home/s1/.cache/huggingface /home/s1/.cache/vllm
chown -R s1:s1 /home/s1/.cache
