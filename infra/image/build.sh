#!/usr/bin/env bash
# Builds the worker image from the Dockerfile, unchanged (`make image`).
#
#   bash infra/image/build.sh [TAG]        TAG defaults to $ICEFEED_IMAGE or icefeed:dev
#
# With a reachable Docker daemon: `docker build` (the base image comes from its registry).
# Otherwise: buildah, daemonless, from a stand-in base image made locally by
# infra/image/stand-in-base.sh under the FROM's exact name, with `--pull=never` and `--layers`
# (a second build reuses every layer whose inputs did not change) and the docker format (the OCI
# format drops HEALTHCHECK).
#
# Environment: ICEFEED_IMAGE (tag), ICEFEED_IMAGE_BUILDER (docker | buildah: skip the detection),
# and those of infra/image/stand-in-base.sh.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TAG="${1:-${ICEFEED_IMAGE:-icefeed:dev}}"
BUILDER="${ICEFEED_IMAGE_BUILDER:-}"

if [[ -z "$BUILDER" ]]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then BUILDER=docker; else BUILDER=buildah; fi
fi

started=$SECONDS
case "$BUILDER" in
  docker)
    docker build -t "$TAG" "$REPO"
    ;;
  buildah)
    # shellcheck source=infra/image/env.sh
    source "$REPO/infra/image/env.sh"
    command -v buildah >/dev/null 2>&1 \
      || { echo "image: no Docker daemon and no buildah (apt-get install buildah debootstrap)" >&2; exit 1; }
    # One build at a time per cache: a second one (CI starts one early, the tests another) waits,
    # then finds every layer built.
    cache="${ICEFEED_IMAGE_CACHE:-$REPO/build/image}"
    mkdir -p "$cache"
    exec 9>"$cache/build.lock"
    flock 9
    echo "image: waited $((SECONDS - started)) s for the build lock"
    base_started=$SECONDS
    bash "$REPO/infra/image/stand-in-base.sh"
    base_done=$SECONDS
    buildah bud --layers --pull=never --format docker --tag "$TAG" "$REPO"
    echo "image: stand-in base $((base_done - base_started)) s, buildah bud $((SECONDS - base_done)) s"
    ;;
  *)
    echo "image: ICEFEED_IMAGE_BUILDER must be docker or buildah, not '$BUILDER'" >&2
    exit 2
    ;;
esac
echo "image: built $TAG with $BUILDER in $((SECONDS - started)) s"
