#!/bin/sh
# Redis as a pod, its data (append-only file) on the pod's volume "data". Run as the redis user:
#   podmotion pod run cache --node node-1 --port 6379 --user redis --volume data -- workloads/redis_pod.sh 6379
set -eu
exec /usr/bin/redis-server --port "$1" --bind 0.0.0.0 --protected-mode no --dir "$PODMOTION_VOLUME_DATA" \
  --appendonly yes --appendfsync everysec --save "" --daemonize no --logfile ""
