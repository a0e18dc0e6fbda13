#!/usr/bin/env bash
# Make the compose secrets: a random cluster secret and admin token, mode 600, owned by the uid the
# image runs as (10001), which compose bind-mounts as they are at /run/secrets/ (compose without
# swarm does not change a secret's owner or mode, and ramster refuses a secret others may read).
#
#   deploy/make-secrets.sh [DIR]      # default DIR: deploy/secrets; existing files are kept
#
# As root the files are chowned directly, else through a throw-away container of IMAGE
# (default ramster:local). Read them later as root or from a node: `docker compose exec node1 ...`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-${RAMSTER_SECRETS_DIR:-$here/secrets}}
uid=${RAMSTER_UID:-10001}
IMAGE=${RAMSTER_IMAGE:-ramster:local}

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
made=()
umask 077
for name in cluster.secret admin.token; do
    [[ -e $dir/$name ]] && continue
    # 32 random bytes, base64: printable, no newline trouble.
    head -c 32 /dev/urandom | base64 >"$dir/$name"
    made+=("$name")
done
if ((${#made[@]} == 0)); then
    echo "make-secrets: $dir already has cluster.secret and admin.token" >&2
    exit 0
fi
if [[ $(id -u) == 0 ]]; then
    (cd "$dir" && chown "$uid:$uid" "${made[@]}" && chmod 600 "${made[@]}")
else
    docker run --rm --network none --user 0 --entrypoint sh -v "$dir:/secrets" "$IMAGE" -c \
        'cd /secrets && chown "$0:$0" "$@" && chmod 600 "$@"' "$uid" "${made[@]}"
fi
echo "make-secrets: made ${made[*]} in $dir (mode 600, uid $uid)" >&2
