#!/usr/bin/env bash
# Prepares docker-compose.yml's first run: writes .env beside it with fresh random secrets (mode 600) and
# creates the hub's Ed25519 signing key inside the `keys` volume with `gatesync keygen`, putting the public
# key it prints into .env as GATESYNC_TRUSTED_KEYS. Refuses to overwrite an existing .env. Prints no secret.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -e .env ]]; then
  echo "compose-init: .env exists; remove it first to start over (the old secrets will stop working)" >&2
  exit 1
fi
command -v openssl >/dev/null || { echo "compose-init: needs openssl" >&2; exit 1; }

# NATS passwords start with letters: nats-server would read a leading 3e5... as a number.
password() { printf 'pw%s' "$(openssl rand -hex 24)"; }
token() { openssl rand -hex 16; }

umask 077
tmp=$(mktemp .env.XXXXXX)
trap 'rm -f "$tmp"' EXIT
cat >"$tmp" <<ENV
# Written by deploy/compose-init.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). Secrets: keep this file at mode 600.
GATESYNC_ADMIN_KEY=$(openssl rand -hex 32)
GATESYNC_NATS_HUB_PASSWORD=$(password)
GATESYNC_NATS_V1_NORTH_PASSWORD=$(password)
GATESYNC_NATS_V1_SOUTH_PASSWORD=$(password)
GATESYNC_NORTH_SCANNER_TOKENS=lane1:$(token)
GATESYNC_SOUTH_SCANNER_TOKENS=lane1:$(token)
GATESYNC_EXTRA_PUBLIC_KEYS=
ENV

echo "compose-init: creating the hub's signing key in the keys volume (builds the image on first use)..."
# keygen writes the private key into the volume and prints the public one on stderr. The placeholder only
# satisfies the compose file's required-variable check for this one command.
if ! out=$(GATESYNC_TRUSTED_KEYS=pending docker compose --env-file "$tmp" run --rm --no-deps -T hub \
  keygen --kid k1 --out /keys/hub-key.json 2>&1); then
  echo "$out" >&2
  echo "compose-init: keygen failed; if the keys volume already holds hub-key.json, reuse its public key" >&2
  echo "  (GET /.well-known/gatesync/keys.json on a running hub) or remove the volume: docker volume rm gatesync_keys" >&2
  exit 1
fi
trusted=$(printf '%s\n' "$out" | sed -n 's/.*GATESYNC_TRUSTED_KEYS=\([^ ]*\).*/\1/p' | tail -n 1)
if [[ -z $trusted ]]; then
  echo "$out" >&2
  echo "compose-init: keygen printed no GATESYNC_TRUSTED_KEYS line" >&2
  exit 1
fi
echo "GATESYNC_TRUSTED_KEYS=$trusted" >>"$tmp"
mv "$tmp" .env
trap - EXIT
echo "compose-init: wrote .env (trusted key $trusted); next: docker compose up -d --build"
