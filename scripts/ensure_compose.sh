#!/usr/bin/env bash
# Make `docker compose` (the Compose v2 CLI plugin) available for `docker compose config`.
#
# `docker compose config` only parses and validates docker-compose.yml; it needs no Docker
# engine. When the plugin is missing, this takes Debian's build of it (package docker-compose,
# v2 since trixie) from the Debian package registry with `apt-get download`, unpacks it without
# installing it system-wide, and puts the binary in ~/.docker/cli-plugins, where the docker CLI
# looks for plugins. Exits non-zero, naming what is missing, when that is not possible.
set -euo pipefail

if docker compose version >/dev/null 2>&1; then
    exit 0
fi
command -v docker >/dev/null || { echo "ensure_compose: the docker CLI is not installed" >&2; exit 1; }
command -v apt-get >/dev/null || { echo "ensure_compose: no apt-get; install the docker compose plugin" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
echo "deb http://deb.debian.org/debian trixie main" >"$work/sources.list"
apt_opts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
          -o "APT::Sandbox::User=root" -qq)
apt-get "${apt_opts[@]}" update
(cd "$work" && apt-get "${apt_opts[@]}" download docker-compose)
dpkg-deb -x "$work"/docker-compose_*.deb "$work/x"
mkdir -p "$HOME/.docker/cli-plugins"
install -m 0755 "$work/x/usr/libexec/docker/cli-plugins/docker-compose" "$HOME/.docker/cli-plugins/docker-compose"
docker compose version
