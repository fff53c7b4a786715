#!/usr/bin/env bash
# Renders the Krew manifest of `kubectl altostrat` (deploy/krew/altostrat.yaml) for a release:
#   scripts/krew-manifest.sh VERSION OWNER/REPO DIST_DIR > altostrat.yaml
# DIST_DIR holds the release archives kubectl-altostrat_<VERSION>_<os>_<arch>.tar.gz of every
# platform the template names; each one's SHA-256 goes into the manifest. Fails if an archive
# is missing or a placeholder is left.
set -euo pipefail

if [ "$#" -ne 3 ]; then
  echo "usage: $0 VERSION OWNER/REPO DIST_DIR" >&2
  exit 2
fi
version="$1" repository="$2" dist="$3"
template="$(dirname "$0")/../deploy/krew/altostrat.yaml"

manifest="$(sed -e "s|@VERSION@|$version|g" -e "s|@REPOSITORY@|$repository|g" "$template")"
for platform in $(grep -o '@SHA256_[a-z]*_[a-z0-9]*@' "$template" | sort -u | sed 's/@SHA256_\(.*\)@/\1/'); do
  archive="$dist/kubectl-altostrat_${version}_${platform}.tar.gz"
  if [ ! -f "$archive" ]; then
    echo "$0: $archive is missing" >&2
    exit 1
  fi
  sum="$(sha256sum "$archive" | cut -d' ' -f1)"
  manifest="${manifest//@SHA256_${platform}@/$sum}"
done
if grep -q '@[A-Z0-9_a-z]*@' <<<"$manifest"; then
  echo "$0: placeholders left in the manifest" >&2
  exit 1
fi
printf '%s\n' "$manifest"
