#!/usr/bin/env bash
# Fetches real sample videos for the tests from Debian's opencv-doc package:
# vtest.avi, Megamind.avi, Megamind_bugy.avi (damaged) and tree.avi (header claims more frames
# than decode). Usage: tools/fetch_test_videos.sh DEST. Tests skip cleanly when DEST is empty.
set -euo pipefail
dest=${1:?usage: $0 DEST}
want=(vtest.avi Megamind.avi Megamind_bugy.avi tree.avi)
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
have=0
for f in "${want[@]}"; do [ -s "$dest/$f" ] && have=$((have + 1)); done
[ "$have" -eq "${#want[@]}" ] && exit 0
command -v apt-get >/dev/null || { echo "fetch_test_videos: no apt-get; real-video tests will skip" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download opencv-doc >/dev/null 2>&1; then
  apt-get update >/dev/null 2>&1 || true
  apt-get download opencv-doc >/dev/null 2>&1 || { echo "fetch_test_videos: cannot download opencv-doc; real-video tests will skip" >&2; exit 1; }
fi
dpkg-deb -x opencv-doc_*.deb root
src=root/usr/share/doc/opencv-doc/examples/data
for f in "${want[@]}"; do
  if [ -f "$src/$f" ]; then cp "$src/$f" "$dest/$f.tmp" && mv "$dest/$f.tmp" "$dest/$f"
  elif [ -f "$src/$f.gz" ]; then gunzip -c "$src/$f.gz" > "$dest/$f.tmp" && mv "$dest/$f.tmp" "$dest/$f"
  fi
done
ls -l "$dest"
