#!/bin/bash
# Cold sequential dd through a fresh s3mount, 3 times: MB/s and daemon user/sys ticks each.
# Needs a server from ../shared/bench/s3server start --dir /tmp/srv --port-base 23000 --access-key AK
# --secret-key SK --bucket bench1, and a 512 MiB object bench1/big.bin. RA=KiB sets read_ahead_kb.
# Used for bench/README.md "Sequential read: spliced replies and a 4 MiB readahead".
export PATH=/work/main/.venv/bin:$PATH
eval "$(/work/shared/bench/s3server env --dir /tmp/srv | grep export)"
M=/tmp/exp/mnt; mkdir -p $M; out=""
for i in 1 2 3; do
  rm -rf /tmp/exp/cache; echo 1 > /proc/sys/vm/drop_caches
  s3mount bench1 $M --endpoint $S3_ENDPOINT --cache-dir /tmp/exp/cache -o logfile=/tmp/exp/log
  PID=$(pgrep -f "s3mount bench1 $M" | head -1)
  [ -n "$RA" ] && echo $RA > /sys/class/bdi/$(mountpoint -d $M)/read_ahead_kb
  read u0 s0 < <(awk '{print $14, $15}' /proc/$PID/stat)
  r=$(dd if=$M/big.bin of=/dev/null bs=1M 2>&1 | tail -1 | awk '{print $(NF-1)$NF}')
  read u1 s1 < <(awk '{print $14, $15}' /proc/$PID/stat)
  out="$out $r(u$((u1-u0))/s$((s1-s0)))"
  fusermount3 -u $M
done
echo "$LABEL:$out"
