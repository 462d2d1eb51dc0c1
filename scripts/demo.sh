#!/usr/bin/env bash
# The demo: install what is missing, start a local SeaweedFS S3 server, create a bucket, run the
# RemoteStore seed example against it, and mount the bucket at ./mnt.
#   scripts/demo.sh        bring it up     scripts/demo.sh down   unmount and stop the server
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=$REPO/.work
S3SERVER=${S3SERVER:-$REPO/../shared/bench/s3server}
PORT_BASE=${S3MOUNT_DEMO_PORT_BASE:-21500}
AK=demoAccessKey
SK=demoSecretKey-$(hostname | md5sum | cut -c1-16)

if [ "${1:-up}" = down ]; then
    if grep -qs " $REPO/mnt " /proc/mounts; then fusermount3 -u "$REPO/mnt" || umount -l "$REPO/mnt"; fi
    [ -f "$WORK/server/s3server.json" ] && .venv/bin/python "$S3SERVER" stop --dir "$WORK/server"
    echo "demo: stopped"
    exit 0
fi

./scripts/setup.sh
export PATH="$REPO/.venv/bin:$PATH"
mkdir -p "$WORK/server" "$WORK/seed"
if ! .venv/bin/python "$S3SERVER" status --dir "$WORK/server" >/dev/null 2>&1; then
    [ -f "$S3SERVER" ] || { echo "demo: need $S3SERVER (the shared bench tools) or set S3SERVER" >&2; exit 1; }
    .venv/bin/python "$S3SERVER" start --dir "$WORK/server" --port-base "$PORT_BASE" \
        --access-key "$AK" --secret-key "$SK" --bucket demo,my-other-bucket >/dev/null
fi
ENDPOINT=$(.venv/bin/python "$S3SERVER" status --dir "$WORK/server")
umask 077
cat > "$WORK/s3mount.yaml" <<YAML
s3:
    access_key_id: "$AK"
    secret_access_key: "$SK"
    default_bucket: "demo"
    endpoint: "$ENDPOINT"
YAML
cp "$WORK/s3mount.yaml" "$WORK/seed/s3.yaml"
echo "s3mount demo file, written $(date)" > "$WORK/seed/example"
echo "demo: S3 server at $ENDPOINT; running the RemoteStore seed example"
(cd "$WORK/seed" && "$REPO/.venv/bin/python" "$REPO/tests/seed/example.py")

if [ -f s3mount/cli.py ]; then
    mkdir -p "$REPO/mnt"
    if ! grep -qs " $REPO/mnt " /proc/mounts; then
        .venv/bin/s3mount --config "$WORK/s3mount.yaml" demo "$REPO/mnt" \
            --cache-dir "$WORK/cache" -o logfile="$WORK/s3mount.log"
    fi
    cat <<TXT
demo: bucket 'demo' is mounted at ./mnt. Try:
    cp /etc/hosts mnt/ && ls -l mnt/
    setfattr -n user.state -v processed mnt/hosts && getfattr -d mnt/hosts
    s3mount stats mnt
Tear it down with: scripts/demo.sh down
TXT
fi
