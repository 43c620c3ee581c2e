#!/usr/bin/env bash
# Makes the data the tests and the demo use available, and says so when it cannot.
#  - Fashion-MNIST: Debian's dataset-fashion-mnist when apt is usable as root, else torchvision's
#    download into the clsp data cache, else the tests that need it are skipped (they print why).
#  - Chromium (headless report test): Debian's chromium when apt is usable as root.
set -uo pipefail
FMNIST=/usr/share/datasets/fashion-mnist
CACHE="${CLSP_DATA_ROOT:-$HOME/.cache/clsp/data}"
apt_ok() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
apt_updated=0
apt_install() {
  if [ $apt_updated = 0 ]; then apt-get update -qq >/dev/null 2>&1; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

if [ -f "$FMNIST/train-images-idx3-ubyte.gz" ] || [ -f "$CACHE/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
  :
elif apt_ok && apt_install dataset-fashion-mnist && [ -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  echo "provision: installed Debian's dataset-fashion-mnist"
else
  echo "provision: Debian's dataset-fashion-mnist is not installable here; trying torchvision's download"
  if ! .venv/bin/python -m clsp.data.fetch fashion-mnist --root "$CACHE"; then
    echo "provision: Fashion-MNIST is unavailable; the tests that need it will be skipped (they say so)"
  fi
fi

if ! command -v chromium >/dev/null; then
  if apt_ok && apt_install chromium; then
    echo "provision: installed Debian's chromium (headless report test)"
  else
    echo "provision: chromium is not installable here; the headless report test will be skipped (it says so)"
  fi
fi
exit 0
