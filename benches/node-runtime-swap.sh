#!/bin/bash
# `nimbus` with other Node runtime files: for comparing Node bootstraps with one server
# binary (docs/performance.md, "Node stem-cell cold start (issue 19)").
#
#   NIMBUS_REAL=target/release/nimbus VARIANT=DIR \
#     target/release/nimbus-bench --nimbus benches/node-runtime-swap.sh --only cold,node
#
# DIR holds bootstrap.js (and any modules next to it, such as warm.js and warm-esm.mjs). For
# `serve`, a watcher waits until the server has written DATA_DIR/runtimes/node/bootstrap.js
# (the first thing ProcessExecutor::new does, before the sandbox probe and long before any
# runtime or stem cell starts), removes the warm modules and puts DIR's files in their place;
# every Node runtime of that server then runs them. Other commands run unchanged.
real=${NIMBUS_REAL:?NIMBUS_REAL: the nimbus binary}
if [ "$1" = serve ] && [ -n "$VARIANT" ]; then
  dd=
  prev=
  for a in "$@"; do
    [ "$prev" = --data-dir ] && dd=$a
    case $a in --data-dir=*) dd=${a#--data-dir=} ;; esac
    prev=$a
  done
  if [ -n "$dd" ]; then
    (
      node=$dd/runtimes/node
      for _ in $(seq 1 20000); do [ -f "$node/bootstrap.js" ] && break; sleep 0.001; done
      rm -f "$node/warm.js" "$node/warm-esm.mjs"
      for v in "$VARIANT"/*; do
        cp "$v" "$node/.swap" && mv "$node/.swap" "$node/$(basename "$v")"
      done
      echo "node-runtime-swap: $VARIANT in $node" >&2
    ) &
  fi
fi
exec "$real" "$@"
