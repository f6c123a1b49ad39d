#!/bin/sh
# One-shot init of the artifact store (service minio-init in docker/compose.yaml). Idempotent.
#   - bucket alpr-mlflow-artifacts (MLflow's --artifacts-destination), private
#   - a MinIO user for MLflow whose policy (mlflow-artifacts-policy.json) allows that bucket only, so the MinIO root
#     credentials never leave MinIO and a leaked MLflow key pair exposes nothing else.
# Every credential comes from the environment (docker/.env through compose); nothing is echoed.
set -eu

BUCKET=alpr-mlflow-artifacts
POLICY=alpr-mlflow-artifacts-rw

# MinIO may still be starting even after its healthcheck passed once; retry the login for a minute.
tries=0
until mc alias set minio http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "minio-init: cannot log in to http://minio:9000 with MINIO_ROOT_USER/MINIO_ROOT_PASSWORD" >&2
    exit 1
  fi
  sleep 1
done

mc mb --ignore-existing "minio/$BUCKET"
mc anonymous set none "minio/$BUCKET" >/dev/null

# `policy create` replaces a policy of the same name, `user add` resets the secret of an existing user: both are
# safe to repeat. Attaching an already attached policy is an error in mc, hence the tolerance.
mc admin policy create minio "$POLICY" /init/mlflow-artifacts-policy.json
mc admin user add minio "$MLFLOW_S3_ACCESS_KEY_ID" "$MLFLOW_S3_SECRET_ACCESS_KEY" >/dev/null
mc admin policy attach minio "$POLICY" --user "$MLFLOW_S3_ACCESS_KEY_ID" >/dev/null 2>&1 || true

echo "minio-init: bucket $BUCKET ready; MLflow's key pair may use it and nothing else"
