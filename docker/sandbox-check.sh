#!/bin/sh
# What docker/Dockerfile promises, checked without a Docker engine (none runs on the CI and
# development machines): build/vitd runs as uid/gid 10001 with a read-only root filesystem, a
# tmpfs /tmp, no capabilities and fresh namespaces (bubblewrap), configured only through the
# image's VITD_* variables, writing only the model store on its volume (/var/lib/vitd, here a
# temporary folder); the image's HEALTHCHECK command (bash /dev/tcp) reports healthy; the admin
# token is read from a secret file at /run/secrets/vitd_admin_token (VITD_ADMIN_TOKEN_FILE, as
# compose.yaml mounts it): the admin listener answers 401 without it and 200 with it, and the
# token never reaches the log; SIGTERM drains both listeners and exits 0; the store then holds
# the model as version 1, active.
# The sandbox shares the host's network namespace, so both listeners bind 127.0.0.1 here
# (the image binds 0.0.0.0 inside its own namespace).
#   docker/sandbox-check.sh [MODEL]     (default: a committed test model)
set -eu
cd "$(dirname "$0")/.."
command -v bwrap >/dev/null || { echo "sandbox-check: needs bubblewrap (apt-get install bubblewrap)"; exit 1; }
model=${1:-tests/data/golden/vit_s32_d64.safetensors}
port=${PORT:-18089}
aport=${ADMIN_PORT:-18088}
log=$(mktemp)
vol=$(mktemp -d)   # the /var/lib/vitd volume
tok=$(mktemp)      # the compose secret
trap 'rm -f "$log" "$tok"; rm -rf "$vol"' EXIT
token=sandbox-check-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$token" >"$tok"
chmod 600 "$tok"   # ours, so uid 10001 in the sandbox (its user namespace maps 10001 to us): mode 600, no warning
# the probe, exactly as the Dockerfile's HEALTHCHECK runs it
probe=$(sed -n 's/^  CMD \["bash", "-c", "\(.*\)"\]$/\1/p' docker/Dockerfile | sed 's/\\\\/\\/g')
[ -n "$probe" ] || { echo "sandbox-check: HEALTHCHECK not found in docker/Dockerfile"; exit 1; }

# a root like the image's: /usr and /etc of this Debian read-only, the binary, the config and
# the model bound in, then the root itself remounted read-only
bwrap --tmpfs / --ro-bind /usr /usr --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
      --symlink usr/bin /bin --symlink usr/sbin /sbin --ro-bind /etc /etc \
      --ro-bind "$(pwd)/build/vitd" /app/vitd --ro-bind "$(pwd)/config/vitd.json" /app/vitd.json \
      --ro-bind "$(pwd)/$model" /models/m.safetensors --bind "$vol" /var/lib/vitd \
      --ro-bind "$tok" /run/secrets/vitd_admin_token \
      --dev /dev --proc /proc --tmpfs /tmp \
      --remount-ro / --unshare-all --share-net --die-with-parent \
      --uid 10001 --gid 10001 --cap-drop ALL --chdir / \
      --setenv VITD_CONFIG /app/vitd.json --setenv VITD_HOST 127.0.0.1 --setenv VITD_PORT "$port" \
      --setenv VITD_MODELS m=/models/m.safetensors --setenv VITD_STORE_DIR /var/lib/vitd/store \
      --setenv VITD_LOG_FORMAT json \
      --setenv VITD_ADMIN_HOST 127.0.0.1 --setenv VITD_ADMIN_PORT "$aport" \
      --setenv VITD_ADMIN_TOKEN_FILE /run/secrets/vitd_admin_token \
      -- /app/vitd serve >"$log" 2>&1 &
pid=$!
ok=""
for i in $(seq 1 100); do
  if VITD_PORT=$port bash -c "$probe" 2>/dev/null; then ok=1; break; fi
  sleep 0.1
done
[ -n "$ok" ] || { cat "$log"; kill "$pid"; echo "sandbox-check: FAIL: HEALTHCHECK never passed"; exit 1; }
echo "sandbox-check: HEALTHCHECK passes (uid 10001, read-only /, no capabilities)"
curl -s -H 'Content-Type: image/jpeg' --data-binary @tests/data/photos/butterfly.jpg \
     "http://127.0.0.1:$port/v1/models/m/classify?top_k=1"; echo
# the admin listener: on, token from the secret file, 401 without it
a401=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$aport/admin/models")
a200=$(curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$aport/admin/models")
case "$a401 $a200" in
  '401 {"models":[{"name":"m",'*) echo "sandbox-check: admin API: 401 without the token, 200 with the secret file's token" ;;
  *) cat "$log"; kill "$pid"; echo "sandbox-check: FAIL: admin API: $a401 / $a200"; exit 1 ;;
esac
# bwrap does not forward signals: send SIGTERM to vitd itself (a descendant of bwrap)
vpid=""; p=$pid
for i in 1 2 3; do
  for c in $(ps -o pid= --ppid "$p"); do p=$c; done
  [ "$(ps -o comm= -p "$p")" = vitd ] && { vpid=$p; break; }
done
[ -n "$vpid" ] || { kill "$pid"; echo "sandbox-check: FAIL: vitd process not found"; exit 1; }
kill -TERM "$vpid"
rc=0; wait "$pid" || rc=$?
grep -q '"msg":"stopped"' "$log" || { cat "$log"; echo "sandbox-check: FAIL: no clean stop"; exit 1; }
! grep -q "$token" "$log" || { echo "sandbox-check: FAIL: the admin token is in the log"; exit 1; }
! grep -q 'admin_token_file.*can be read' "$log" || { cat "$log"; echo "sandbox-check: FAIL: token file mode warning"; exit 1; }
echo "sandbox-check: SIGTERM -> exit $rc"
[ -f "$vol/store/m/1/model.safetensors" ] && grep -q '"active": 1' "$vol/store/m/state.json" ||
  { ls -R "$vol"; echo "sandbox-check: FAIL: the model store on the volume lacks version 1"; exit 1; }
echo "sandbox-check: model store on the volume: m version 1 active"
[ "$rc" = 0 ]
