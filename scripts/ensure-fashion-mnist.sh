#!/usr/bin/env bash
# Make sure Fashion-MNIST is available. Where apt is available and we are root, install Debian's
# dataset-fashion-mnist (IDX files under /usr/share/datasets/fashion-mnist). Otherwise say what the
# loader will do (look in --data-dir / EDGESLIM_DATA / the cache, then download from the official mirror).
set -u
dir=/usr/share/datasets/fashion-mnist
have() { [ -f "$1/train-images-idx3-ubyte.gz" ] || [ -f "$1/train-images-idx3-ubyte" ]; }
if have "$dir" || { [ -n "${EDGESLIM_DATA:-}" ] && have "$EDGESLIM_DATA"; }; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's dataset-fashion-mnist ..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    && have "$dir" && exit 0
  echo "note: apt-get could not install dataset-fashion-mnist; the loader will try its cache and the official mirror" >&2
else
  echo "note: Fashion-MNIST not found in $dir; the loader will look in EDGESLIM_DATA, its cache, then download it" >&2
fi
exit 0
