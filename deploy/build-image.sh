#!/usr/bin/env bash
# Build the ramster image from wheels made on this host, so the image build itself needs no network:
#
#   deploy/build-image.sh                               # FROM python:3.11-slim, tagged ramster:local
#   BASE_IMAGE=ramster-base:bookworm deploy/build-image.sh      # FROM a local base (no registry)
#
# Steps: ramster's own wheel from this checkout (`pip wheel`), its dependencies as binary wheels
# for the base image's Python and platform (`pip download`, pinned to what PYTHON has installed,
# so the image runs the versions the test suite ran), then `docker build` of deploy/Dockerfile
# with deploy/ as the context (only the Dockerfile, healthcheck.py and .wheels/ are sent).
# Unchanged wheels reuse Docker's layer cache, so a rebuild after a code change takes seconds.
#
# Variables: BASE_IMAGE (python:3.11-slim), IMAGE (ramster:local), PYTHON (.venv/bin/python if it
# exists, else python3): the interpreter whose pip builds and downloads.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
IMAGE=${IMAGE:-ramster:local}
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $repo/.venv/bin/python ]]; then PYTHON=$repo/.venv/bin/python; else PYTHON=python3; fi
fi

say() { printf 'build-image: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

docker info >/dev/null 2>&1 || die "no Docker engine answers"
start=$SECONDS

# What the base image runs: Python X.Y, the machine, glibc (docker run pulls a registry base once).
read -r pyver machine glibc < <(docker run --rm --network none --entrypoint python3 "$BASE_IMAGE" -c \
    'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.machine(), platform.libc_ver()[1])') \
    || die "cannot run python3 in $BASE_IMAGE"
[[ $glibc =~ ^2\.([0-9]+)$ ]] || die "$BASE_IMAGE: glibc not found (musl images are not supported)"
say "$BASE_IMAGE: Python $pyver on $machine, glibc $glibc"

# Every manylinux tag that glibc accepts, newest first.
platforms=()
for ((minor = BASH_REMATCH[1]; minor >= 5; minor--)); do
    platforms+=(--platform "manylinux_2_${minor}_${machine}")
done
platforms+=(--platform "manylinux2014_${machine}" --platform "manylinux2010_${machine}"
    --platform "manylinux1_${machine}")

wheels=$here/.wheels
rm -rf "$wheels"
mkdir -p "$wheels/ramster" "$wheels/deps"
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$PYTHON" -m pip freeze --exclude-editable >"$constraints"

"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$wheels/ramster" "$repo"
"$PYTHON" -m pip download --quiet --dest "$wheels/deps" --constraint "$constraints" \
    --only-binary=:all: --python-version "$pyver" --implementation cp "${platforms[@]}" \
    "$wheels"/ramster/*.whl
# pip download puts ramster's own wheel next to its dependencies; it is installed in a layer of
# its own so that a code change does not rebuild the dependencies' layer.
rm -f "$wheels"/deps/ramster-*.whl
say "$(find "$wheels" -name '*.whl' | wc -l) wheels in $((SECONDS - start)) s"

# The build stage is tagged too (IMAGE-build), so that its layers stay the cache of the next build
# while older images of ours that lost their tag are pruned; nothing else is touched.
[[ ${IMAGE##*/} == *:* ]] && build_tag=$IMAGE-build || build_tag=$IMAGE:latest-build
for target in "--target=build --tag=$build_tag" "--tag=$IMAGE"; do
    # shellcheck disable=SC2086 # two words on purpose
    DOCKER_CLI_HINTS=false docker build --quiet $target --build-arg BASE_IMAGE="$BASE_IMAGE" \
        --file "$here/Dockerfile" "$here" 2> >(grep -v -e DEPRECATED -e 'legacy builder' \
        -e buildx -e '^ *$' >&2) >/dev/null
done
docker image prune --force --filter label=io.ramster.image >/dev/null
version=$(docker run --rm --network none --entrypoint ramster "$IMAGE" --version)
say "$IMAGE ($version on $BASE_IMAGE) built in $((SECONDS - start)) s"
