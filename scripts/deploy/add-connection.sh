#!/usr/bin/env bash
# Add a SuperLink connection to $FLWR_HOME/config.toml (default ~/.flwr), for `flwr run . NAME`.
#
#   bash scripts/deploy/add-connection.sh NAME ADDRESS [CA_CERT]
#   bash scripts/deploy/add-connection.sh dep 127.0.0.1:8000            # insecure
#   bash scripts/deploy/add-connection.sh prod link.example.org:8000 certs/ca.crt
set -euo pipefail
name=${1:?usage: add-connection.sh NAME ADDRESS [CA_CERT]}
address=${2:?usage: add-connection.sh NAME ADDRESS [CA_CERT]}
home=${FLWR_HOME:-$HOME/.flwr}
config="$home/config.toml"
mkdir -p "$home"
[ -f "$config" ] || flwr config list >/dev/null   # creates the default file
if grep -q "^\[superlink\.$name\]" "$config"; then
  echo "connection '$name' already in $config; edit it there" >&2; exit 1
fi
{
  printf '\n[superlink.%s]\naddress = "%s"\n' "$name" "$address"
  if [ -n "${3:-}" ]; then printf 'root-certificates = "%s"\n' "$(realpath "$3")"; else echo 'insecure = true'; fi
} >> "$config"
echo "added [superlink.$name] to $config"
