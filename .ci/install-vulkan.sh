#!/usr/bin/env bash
# Installs Mesa's lavapipe (software Vulkan) from bookworm-backports when the machine
# has no Vulkan driver. On a machine that already has one, installs nothing.
set -euo pipefail
if compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null || compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null; then
  echo "install-vulkan: a Vulkan driver is already installed; nothing to do"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
src=/etc/apt/sources.list.d/debian.sources
bp=/etc/apt/sources.list.d/infer-backports.sources
if [ -f "$src" ] && grep -q bookworm "$src" && [ ! -f "$bp" ]; then
  # Copy the first stanza with its suite changed: no mirror address is written here.
  awk 'BEGIN{RS="";ORS="\n\n"} NR==1{print; exit}' "$src" \
    | sed -E 's/^Suites:.*/Suites: bookworm-backports/' | $SUDO tee "$bp" >/dev/null
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
if [ -f "$bp" ]; then
  $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers >/dev/null
else
  $SUDO apt-get install -y -qq mesa-vulkan-drivers >/dev/null
fi
echo "install-vulkan: installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
