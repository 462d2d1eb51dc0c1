#!/bin/bash
# fsbench's random 4 KiB row against one fresh mount, with fio's IOPS per 100 ms: shows how long
# the cold part (fetching) lasts and how fast the warm part runs.
# Needs a server with bucket bench1 holding rand/big.bin (512 MiB), keys AK/SK:
#   ../shared/bench/s3server start --dir /tmp/srv --port-base 23000 --access-key AK --secret-key SK --bucket bench1
#   head -c 512M /dev/urandom > /tmp/big.bin && AWS_ACCESS_KEY_ID=AK AWS_SECRET_ACCESS_KEY=SK \
#     aws --endpoint-url http://127.0.0.1:23000 s3 cp /tmp/big.bin s3://bench1/rand/big.bin
# Usage: bench/rand_phases.sh s3mount|s3fs [TAG]
set -u
name=$1; tag=${2:-x}; ep=${S3_ENDPOINT:-http://127.0.0.1:23000}
w=/tmp/rand_phases; mnt=$w/mnt; cache=$w/cache-$name; mkdir -p $mnt; rm -rf $cache; mkdir -p $cache
case $name in
 s3mount) AWS_ACCESS_KEY_ID=AK AWS_SECRET_ACCESS_KEY=SK s3mount bench1 $mnt --endpoint $ep --cache-dir $cache -o logfile=$w/log-$name ;;
 s3fs) echo AK:SK > $w/passwd; chmod 600 $w/passwd
       s3fs bench1 $mnt -o passwd_file=$w/passwd,url=$ep,use_path_request_style,endpoint=us-east-1,tmpdir=$cache,dbglevel=warn ;;
 *) echo "usage: $0 s3mount|s3fs [TAG]" >&2; exit 2 ;;
esac
for i in $(seq 50); do mountpoint -q $mnt && break; sleep 0.1; done
ls $mnt/rand >/dev/null
fio --name=rr --filename=$mnt/rand/big.bin --readonly --rw=randread --bs=4k --size=512M \
    --ioengine=psync --iodepth=1 --numjobs=1 --direct=0 --runtime=20 --io_size=128M --invalidate=1 \
    --output-format=json --write_iops_log=$w/iops-$name-$tag --log_avg_msec=100 > $w/fio-$name-$tag.json 2>&1
python3 -c "import json; r=json.load(open('$w/fio-$name-$tag.json'))['jobs'][0]['read']; print('$name', int(r['iops']), 'IOPS, fio runtime', r['runtime'], 'ms')"
echo "IOPS per 100 ms: $(awk -F, '{printf "%d ", $2}' $w/iops-$name-${tag}_iops.1.log)"
for i in $(seq 100); do mountpoint -q $mnt || break; fusermount3 -u $mnt 2>/dev/null || fusermount -u $mnt 2>/dev/null; sleep 0.2; done
