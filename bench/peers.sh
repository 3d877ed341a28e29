# bench/peers.sh: sourced by the bench scripts. Where a peer runtime is installed.

# find_tool NAME: the path of NAME on PATH, else in /work/tools/bin or ~/.cargo/bin (where
# `cargo install ... --root /work/tools` and a plain `cargo install` put it); nothing if absent.
find_tool() {
  local name=$1
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  for dir in /work/tools/bin "$HOME/.cargo/bin"; do
    if [[ -x "$dir/$name" ]]; then echo "$dir/$name"; return; fi
  done
}
