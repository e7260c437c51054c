#!/bin/sh
# Installs the Debian packages vitd needs, only those that are missing.
# Used by the Makefile (make, make test, make bench), by .ci/run and by docker/Dockerfile.
#   scripts/deps.sh build     compilers and -dev libraries
#   scripts/deps.sh runtime   shared libraries only (the container's runtime stage)
#   scripts/deps.sh test      build + the test-time references (PyTorch, Pillow, curl)
#   scripts/deps.sh bench     test + load generators and Node.js (ONNX Runtime is fetched by npm)
set -eu

build="gcc make pkg-config libc6-dev libdnnl-dev libmicrohttpd-dev libjansson-dev libturbojpeg0-dev libpng-dev"
runtime="libdnnl2 libmicrohttpd12 libjansson4 libturbojpeg0 libpng16-16 libgomp1 ca-certificates"
test="$build python3 python3-torch python3-torchvision python3-pil python3-numpy curl dataset-fashion-mnist"
bench="$test wrk nodejs npm"

case "${1:-build}" in
  build) want=$build ;;
  runtime) want=$runtime ;;
  test) want=$test ;;
  bench) want=$bench ;;
  *) echo "usage: $0 build|runtime|test|bench" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
  # npm/nodejs may come from elsewhere than Debian (a Node install on PATH is as good)
  case $p in nodejs) command -v node >/dev/null 2>&1 && continue ;; npm) command -v npm >/dev/null 2>&1 && continue ;; esac
  s=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  case "$s" in ii*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0

echo "deps: installing:$missing" >&2
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "deps: not root and no sudo; install these packages:$missing" >&2; exit 1
  fi
else SUDO=""; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
