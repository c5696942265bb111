#!/usr/bin/env bash
# Build an isolated virtual environment for the peer JaxGCRL (CPU), used only by
# bench/peers/jaxgcrl_*.py.  JaxGCRL is NOT a dependency of plax and is never
# installed into plax's own environment.
#
# Usage:
#   bash bench/peers/jaxgcrl_setup.sh
#   VENV=/somewhere/venv JAXGCRL_SRC=/path/to/JaxGCRL bash bench/peers/jaxgcrl_setup.sh
#
# Environment variables:
#   VENV          venv to create (default: <repo>/.venv-jaxgcrl); reused if it exists
#   JAXGCRL_SRC   JaxGCRL source tree (default: <repo>/.jaxgcrl-src, extracted from
#                 the local bare mirror, or cloned from GitHub at $JAXGCRL_COMMIT)
#   JAXGCRL_MIRROR  bare git mirror to extract from
#                 (default: /work/.mirror/MichalBortkiewicz+JaxGCRL/repo)
#   JAXGCRL_COMMIT  commit to use (default: 6dccab2)
#   PYTHON        interpreter used to create the venv (default: python3.11)
#
# Pins: JaxGCRL 6dccab2 pins jax==0.4.25, brax==0.12.1, mujoco(-mjx)==3.2.7,
# numpy<2 in pyproject.toml; the other versions below are those of its uv.lock,
# with jaxlib switched from 0.4.25+cuda12.cudnn89 to the plain CPU 0.4.25 wheel
# and the nvidia-* CUDA packages dropped.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$REPO_ROOT/.venv-jaxgcrl}"
JAXGCRL_SRC="${JAXGCRL_SRC:-$REPO_ROOT/.jaxgcrl-src}"
JAXGCRL_MIRROR="${JAXGCRL_MIRROR:-/work/.mirror/MichalBortkiewicz+JaxGCRL/repo}"
JAXGCRL_COMMIT="${JAXGCRL_COMMIT:-6dccab2}"
PYTHON="${PYTHON:-python3.11}"

say() { echo "[jaxgcrl_setup] $*"; }
t_start=$(date +%s)

# --- 1. JaxGCRL source ---------------------------------------------------------
if [ -f "$JAXGCRL_SRC/jaxgcrl/agents/crl/crl.py" ]; then
  say "using existing JaxGCRL source at $JAXGCRL_SRC"
elif [ -d "$JAXGCRL_MIRROR" ]; then
  say "extracting $JAXGCRL_COMMIT from mirror $JAXGCRL_MIRROR into $JAXGCRL_SRC"
  mkdir -p "$JAXGCRL_SRC"
  # Some large blobs (e.g. imgs/push.gif) may be absent from the mirror, which
  # makes a plain `git archive HEAD` fail; archive only paths whose blobs exist.
  paths_file="$(mktemp)"
  git -C "$JAXGCRL_MIRROR" ls-tree -r "$JAXGCRL_COMMIT" | while read -r _mode type hash path; do
    if [ "$type" = blob ] && git -C "$JAXGCRL_MIRROR" cat-file -e "$hash" 2>/dev/null; then
      printf '%s\n' "$path"
    else
      echo "[jaxgcrl_setup]   skipping missing object: $path" >&2
    fi
  done > "$paths_file"
  # shellcheck disable=SC2046
  git -C "$JAXGCRL_MIRROR" archive "$JAXGCRL_COMMIT" -- $(cat "$paths_file") | tar -x -C "$JAXGCRL_SRC"
  rm -f "$paths_file"
  echo "$(git -C "$JAXGCRL_MIRROR" rev-parse "$JAXGCRL_COMMIT")" > "$JAXGCRL_SRC/.jaxgcrl_commit"
else
  say "no source and no mirror: cloning https://github.com/MichalBortkiewicz/JaxGCRL at $JAXGCRL_COMMIT"
  git clone https://github.com/MichalBortkiewicz/JaxGCRL "$JAXGCRL_SRC"
  git -C "$JAXGCRL_SRC" checkout "$JAXGCRL_COMMIT"
  git -C "$JAXGCRL_SRC" rev-parse HEAD > "$JAXGCRL_SRC/.jaxgcrl_commit"
fi

# --- 2. venv --------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating venv $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
  "$PYTHON" -m venv "$VENV"
else
  say "reusing venv $VENV"
fi
PY="$VENV/bin/python"

# --- 3. pinned dependencies (CPU) ----------------------------------------------
constraints="$(mktemp)"
cat > "$constraints" <<'EOF'
jax==0.4.25
jaxlib==0.4.25
brax==0.12.1
flax==0.8.4
optax==0.2.2
chex==0.1.86
orbax-checkpoint==0.5.18
tensorstore==0.1.72
ml-dtypes==0.5.1
numpy==1.26.4
scipy==1.15.2
mujoco==3.2.7
mujoco-mjx==3.2.7
etils==1.12.2
jaxopt==0.8.3
ml-collections==1.0.0
matplotlib==3.8.4
tyro==0.9.17
wandb==0.19.8
wandb-osh==1.2.2
protobuf==5.29.4
typing-extensions==4.12.2
EOF
say "installing pinned dependencies (constraints: $(tr '\n' ' ' < "$constraints"))"
"$PY" -m pip install --quiet --upgrade "pip>=25.0.1" setuptools wheel
"$PY" -m pip install --quiet -c "$constraints" \
  jax jaxlib brax flax optax chex orbax-checkpoint ml-dtypes numpy scipy \
  mujoco mujoco-mjx matplotlib tyro wandb wandb-osh
rm -f "$constraints"

# --- 4. JaxGCRL itself (no deps) -----------------------------------------------
say "installing JaxGCRL from $JAXGCRL_SRC (pip install --no-deps -e)"
if ! "$PY" -m pip install --quiet --no-deps -e "$JAXGCRL_SRC"; then
  say "editable install failed; falling back to a .pth file (PYTHONPATH-style)"
  site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$JAXGCRL_SRC" > "$site/jaxgcrl_src.pth"
fi

# --- 5. smoke check ---------------------------------------------------------------
say "smoke check"
WANDB_MODE=disabled JAX_PLATFORMS=cpu "$PY" - <<'EOF'
import jax, jaxlib, brax, flax, optax, mujoco, numpy, ml_dtypes
import jaxgcrl
from jaxgcrl.agents.crl.crl import CRL
from jaxgcrl.utils.env import create_env
env = create_env("ant")
print("[jaxgcrl_setup]   jax", jax.__version__, "jaxlib", jaxlib.__version__, "brax", brax.__version__,
      "flax", flax.__version__, "optax", optax.__version__, "mujoco", mujoco.__version__,
      "numpy", numpy.__version__, "ml_dtypes", ml_dtypes.__version__)
print("[jaxgcrl_setup]   jaxgcrl from", jaxgcrl.__file__, "devices", jax.devices())
print("[jaxgcrl_setup]   ant observation_size", env.observation_size, "action_size", env.action_size)
EOF
"$PY" -m pip freeze > "$VENV/jaxgcrl-freeze.txt"
say "pip freeze written to $VENV/jaxgcrl-freeze.txt"

# --- 6. gitignore check ------------------------------------------------------------
for p in "$VENV" "$JAXGCRL_SRC"; do
  case "$p" in
    "$REPO_ROOT"/*)
      rel="${p#"$REPO_ROOT"/}"
      if git -C "$REPO_ROOT" check-ignore -q "$rel"; then
        say "$rel is git-ignored"
      else
        say "WARNING: $rel is NOT ignored by $REPO_ROOT/.gitignore"
      fi ;;
  esac
done
say "done in $(( $(date +%s) - t_start )) s; use: $VENV/bin/python bench/peers/jaxgcrl_crl.py --help"
