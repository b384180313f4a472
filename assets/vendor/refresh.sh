#!/usr/bin/env bash
# Re-downloads the vendored GraphiQL and React builds at their pinned versions from the npm
# registry (`npm pack`, never a CDN), checks each tarball against its pinned integrity, and
# prints the sha256 of every file that the binary embeds (src/web.rs).
#
# Usage: bash assets/vendor/refresh.sh
# To move to another version: change it below, run with PIN_CHECK=0 once, and paste the
# `npm pack` integrity it prints into the table (and the version into src/web.rs, whose
# asset URLs carry it, and README.md here).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# package@version   integrity of the tarball (npm's dist.integrity)   files: from:to ...
pins=(
  "graphiql@3.8.3|sha512-cuPDYtXVKV86Pu5PHBX642Odi/uVEE2y1Jxq5rGO/Qy1G2lRp7ZZ7a/T30RzxhuLSWo9zUbzq0P3U49//H0Ugw==|graphiql.min.js:graphiql/graphiql.min.js graphiql.min.css:graphiql/graphiql.min.css LICENSE:graphiql/LICENSE"
  "react@18.3.1|sha512-wS+hAgJShR0KhEvPJArfuPVN1+Hz1t0Y6n5jLrGQbkb4urgPE/0Rve+1kMB1v/oWgHgm4WIcV+i7F2pTVj+2iQ==|umd/react.production.min.js:react/react.production.min.js LICENSE:react/LICENSE"
  "react-dom@18.3.1|sha512-5m4nQKp+rZRb09LNH59GM4BxTh9251/ylbKIbpe7TpGxfJ+9kv6BLkLBXIjjspbgbnIBNqlI23tRnTWT0snUIw==|umd/react-dom.production.min.js:react-dom/react-dom.production.min.js LICENSE:react-dom/LICENSE"
)

for pin in "${pins[@]}"; do
  IFS='|' read -r spec integrity files <<<"$pin"
  tarball="$work/$(cd "$work" && npm pack --silent "$spec")"
  actual="sha512-$(node -e 'const c=require("crypto"),f=require("fs");process.stdout.write(c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$tarball")"
  if [ "$actual" != "$integrity" ] && [ "${PIN_CHECK:-1}" != 0 ]; then
    echo "$spec: tarball integrity $actual, pinned $integrity" >&2
    exit 1
  fi
  echo "$spec $actual"
  unpacked="$work/${spec%@*}"
  mkdir -p "$unpacked"
  tar -xzf "$tarball" -C "$unpacked"
  for file in $files; do
    mkdir -p "$here/$(dirname "${file#*:}")"
    cp "$unpacked/package/${file%%:*}" "$here/${file#*:}"
  done
done

cd "$here"
sha256sum graphiql/* react/* react-dom/* | tee SHA256SUMS
