#!/usr/bin/env bash
# Makes a local stand-in for the Dockerfile's base image (python:3.11-slim on Debian bookworm),
# for machines that can reach Debian and PyPI but no container registry. The result is stored
# in buildah's local storage under the exact name the Dockerfile's FROM uses, so
# `buildah bud --pull=never` builds the Dockerfile unchanged.
#
#   bash infra/image/stand-in-base.sh
#
# What the stand-in holds: a Debian bookworm minbase root filesystem (debootstrap) with Debian's
# python3 (3.11), python3-venv and passwd (groupadd/useradd); /usr/local/bin/python -> python3 as
# in the official image; this machine's CA bundle as /etc/ssl/certs/ca-certificates.crt and an
# /etc/pip.conf naming it (pip uses its own CA list otherwise, and downloads here may pass a TLS
# proxy whose CA only this machine trusts). It is NOT the official image: its Python is Debian's
# (3.11.2 on bookworm), not 3.11.14 under /usr/local.
#
# Caching: the root filesystem (the slow part, ~40 s of debootstrap) is kept as a tar file under
# $ICEFEED_IMAGE_CACHE (default build/image), named by the hash of its recipe, so a change to the
# recipe makes a new one. The image carries a label hashing the recipe, the image configuration
# and the CA bundle; when the stored image has the wanted label, nothing is done.
#
# Environment: ICEFEED_IMAGE_CACHE, ICEFEED_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# ICEFEED_CA_BUNDLE (default $SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt),
# BUILDAH_ISOLATION (infra/image/env.sh). Needs root, buildah and debootstrap.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=infra/image/env.sh
source "$REPO/infra/image/env.sh"

SUITE=bookworm
PACKAGES=python3,python3-venv,passwd
MIRROR="${ICEFEED_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${ICEFEED_IMAGE_CACHE:-$REPO/build/image}"
CA_BUNDLE="${ICEFEED_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
LABEL=org.icefeed.stand-in

say() { printf 'stand-in base: %s\n' "$*"; }
die() { printf 'stand-in base: %s\n' "$*" >&2; exit 1; }

# The one external base of the Dockerfile: every FROM that is not an earlier stage's name.
base_name() {
  awk 'toupper($1) == "FROM" {
         image = $2; if (image in stage) next; print image
         if (toupper($3) == "AS") stage[$4] = 1
       }' "$REPO/Dockerfile" | sort -u
}

# A name without a registry is Docker Hub's: store it under the name a registry pull would give.
qualified() {
  local name="$1" first="${1%%/*}"
  if [[ "$name" != */* ]]; then
    name="docker.io/library/$name"
  elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then
    name="docker.io/$name"
  fi
  printf '%s' "$name"
}

make_rootfs() { # TAR: debootstrap the root filesystem and keep it as TAR
  local tar="$1" dir
  command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
  dir="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  # shellcheck disable=SC2064 # expand now: the trap must remove this very directory
  trap "rm -rf '$dir' '$tar.partial'" EXIT
  say "debootstrap --variant=minbase $SUITE from $MIRROR (about a minute) ..."
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$dir" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 30 "$CACHE/debootstrap.log"; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  ln -s /usr/bin/python3 "$dir/usr/local/bin/python"
  # What a registry's slim image does not carry either: package caches and lists.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/* "$dir"/tmp/*
  tar --numeric-owner --xattrs -C "$dir" -cf "$tar.partial" .
  mv "$tar.partial" "$tar"
  rm -rf "$dir"
  find "$CACHE" -maxdepth 1 -name 'rootfs-*.tar' ! -path "$tar" -delete  # earlier recipes
  trap - EXIT
}

main() {
  [[ "$(id -u)" == 0 ]] || die "needs root (debootstrap; buildah with root storage)"
  command -v buildah >/dev/null || die "buildah not found (apt-get install buildah)"
  [[ -r "$CA_BUNDLE" ]] || die "CA bundle $CA_BUNDLE not readable (set ICEFEED_CA_BUNDLE)"
  local names name recipe want have tar ctr started
  names="$(base_name)"
  [[ -n "$names" && "$names" != *$'\n'* ]] || die "expected one base image in the Dockerfile, found: ${names:-none}"
  name="$(qualified "$names")"
  # The keys hash the recipe as bash sees it (declare -f drops comments): editing a comment here
  # neither re-runs debootstrap nor remakes the image.
  recipe="$(printf '%s\n' "$SUITE" "$PACKAGES" "$(declare -f make_rootfs)" | sha256sum | cut -c1-16)"
  recipe="$recipe-$(dpkg --print-architecture)"
  want="$(printf '%s\n' "$recipe" "$(declare -f main)" | sha256sum | cut -c1-16)"
  want="$want-$(sha256sum "$CA_BUNDLE" | cut -c1-16)"
  have="$(buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$LABEL\"}}" "$name" 2>/dev/null || true)"
  if [[ "$have" == "$want" ]]; then
    say "$name is up to date ($want)"
    return 0
  fi
  started=$SECONDS
  mkdir -p "$CACHE"
  tar="$CACHE/rootfs-$SUITE-$recipe.tar"
  if [[ -f "$tar" ]]; then
    say "root filesystem from the cache: $tar"
  else
    make_rootfs "$tar"
  fi
  ctr="$(buildah from scratch)"
  # shellcheck disable=SC2064
  trap "buildah rm '$ctr' >/dev/null 2>&1 || true" EXIT
  buildah add --quiet "$ctr" "$tar" / >/dev/null
  buildah copy --quiet --chmod 0644 "$ctr" "$CA_BUNDLE" /etc/ssl/certs/ca-certificates.crt >/dev/null
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$CACHE/pip.conf"
  buildah copy --quiet --chmod 0644 "$ctr" "$CACHE/pip.conf" /etc/pip.conf >/dev/null
  buildah config \
    --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --cmd python3 \
    --label "$LABEL=$want" \
    --label "org.opencontainers.image.description=Local stand-in for $names (Debian $SUITE minbase + python3)" \
    "$ctr"
  buildah commit --quiet --rm "$ctr" "$name" >/dev/null
  trap - EXIT
  say "$name committed in $((SECONDS - started)) s ($want)"
}

main "$@"
