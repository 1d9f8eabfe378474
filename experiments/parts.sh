# Sourced by the experiment scripts: run_parts "<default parts>" "$@" runs the named parts (shell
# functions of the script) in order, each timed; with no names, the default list.
run_parts() {
  local defaults=$1
  shift
  local parts=("$@")
  [ ${#parts[@]} -gt 0 ] || read -r -a parts <<< "$defaults"
  for part in "${parts[@]}"; do
    echo "=== $part ($(date +%T))"
    SECONDS=0
    "$part"
    echo "=== $part done in ${SECONDS}s"
  done
}
