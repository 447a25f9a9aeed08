#!/bin/sh
# PostgreSQL 15 as a pod: its data directory on the pod's volume "data", TCP only (no unix socket on a
# path outside the pod), trust authentication from the cluster's own addresses (the pod is reachable only
# from namespaces the local cluster made). Run as the postgres user:
#   podmotion pod run db --node node-1 --port 5432 --user postgres --volume data -- workloads/postgres_pod.sh 5432
set -eu
port=$1
bin=/usr/lib/postgresql/15/bin
data="$PODMOTION_VOLUME_DATA/pg"
if [ ! -f "$data/PG_VERSION" ]; then
  "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-instructions >/dev/null
  echo "host all all 10.244.0.0/16 trust" >>"$data/pg_hba.conf"
fi
# Dynamic shared memory as files in the data directory (pg_dynshmem), which move with the volume, not in
# the node's /dev/shm; no parallel workers.
exec "$bin/postgres" -D "$data" -c listen_addresses='0.0.0.0' -c port="$port" -c unix_socket_directories='' \
  -c shared_buffers=64MB -c dynamic_shared_memory_type=mmap -c max_parallel_workers_per_gather=0 \
  -c max_connections=40 -c logging_collector=off -c fsync=on
