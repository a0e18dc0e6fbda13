#!/usr/bin/env bash
# Build a local Debian base image with Python 3 without pulling anything from a registry:
# debootstrap a minimal Debian from this machine's configured apt mirror, then `docker import` it.
#
#   sudo deploy/build-base-image.sh [IMAGE]      # default IMAGE: ramster-base:bookworm
#
# The image is built once: an existing IMAGE is kept unless REBUILD=1. Needs root, debootstrap and
# a Docker engine. SUITE (default bookworm), MIRROR and SECURITY_MIRROR override what is read from
# /etc/apt/sources.list{,.d/*}; SECURITY_MIRROR=none skips the security updates.
set -euo pipefail

IMAGE=${1:-ramster-base:bookworm}
SUITE=${SUITE:-bookworm}
PACKAGES=python3,python3-venv

say() { printf 'build-base-image: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# The first mirror of the configured apt sources that serves SUITE (deb822 or one-line format).
configured_mirror() {
    local suite=$1 files=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] && files+=("$f")
    done
    ((${#files[@]})) || return 0
    awk -v suite="$suite" '
        function flush() {
            if (uri != "" && types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ")) { print uri; found = 1; exit }
            uri = ""; suites = ""; types = ""
        }
        FNR == 1 { flush() }
        /^[[:space:]]*#/ { next }
        /^[[:space:]]*$/ { flush(); next }
        /^Types:/ { sub(/^Types:[[:space:]]*/, ""); types = $0; next }
        /^URIs:/ { uri = $2; next }
        /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0; next }
        /^deb[[:space:]]/ {
            i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { print $i; found = 1; exit }
        }
        END { if (!found) flush() }
    ' "${files[@]}"
}

if docker image inspect "$IMAGE" >/dev/null 2>&1 && [[ ${REBUILD:-0} != 1 ]]; then
    say "$IMAGE exists (REBUILD=1 to build it again)"
    exit 0
fi
[[ $(id -u) == 0 ]] || die "needs root (debootstrap builds a root file system)"
command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
docker info >/dev/null 2>&1 || die "no Docker engine answers"

MIRROR=${MIRROR:-$(configured_mirror "$SUITE")}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-$(configured_mirror "$SUITE-security")}

work=$(mktemp -d /var/tmp/ramster-base.XXXXXX)
root=$work/root
cleanup() {
    # debootstrap mounts /proc and /sys inside the target; never delete through a mount.
    local m
    awk -v r="$root" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" || true
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

start=$SECONDS
say "debootstrap $SUITE from $MIRROR with $PACKAGES"
debootstrap --variant=minbase --include="$PACKAGES" --components=main \
    "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    die "debootstrap failed"
}

{
    echo "deb $MIRROR $SUITE main"
    if [[ -n $SECURITY_MIRROR && $SECURITY_MIRROR != none ]]; then
        echo "deb $SECURITY_MIRROR $SUITE-security main"
    fi
} >"$root/etc/apt/sources.list"
if [[ -n $SECURITY_MIRROR && $SECURITY_MIRROR != none ]]; then
    say "security updates from $SECURITY_MIRROR"
    chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c \
        'apt-get update -qq && apt-get upgrade -y -qq' >>"$work/debootstrap.log" 2>&1 || {
        tail -n 30 "$work/debootstrap.log" >&2
        die "security updates failed"
    }
fi

# What a container never needs: package lists and caches, documentation, locales, man pages.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/tmp/* "$root"/var/tmp/*
find "$root"/usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} +

python=$(chroot "$root" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
say "docker import as $IMAGE (Debian $SUITE, Python $python)"
tar -C "$root" --numeric-owner --xattrs -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap $SUITE minbase + $PACKAGES from $MIRROR" \
    - "$IMAGE" >/dev/null
say "$IMAGE built in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
