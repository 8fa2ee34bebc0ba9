"""One short, realistic manifest per kind, shown in docs/resources.md.

The tests validate every YAML block of that document against the models, so these
examples cannot drift from the schema.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["EXAMPLES"]

_BACKUP_LOCATION = """\
apiVersion: safehold.io/v1alpha1
kind: BackupLocation
metadata:
  name: primary
  namespace: shop
spec:
  provider: s3
  bucket: shop-backups
  prefix: prod
  endpoint: https://s3.eu-central-1.amazonaws.com
  region: eu-central-1
  credentialsSecretRef:
    name: s3-credentials          # keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
  repositoryPasswordSecretRef:
    name: repository-password
    key: password
  immutabilityDays: 30
  validationInterval: 1h
"""

_BACKUP_POLICY = """\
apiVersion: safehold.io/v1alpha1
kind: BackupPolicy
metadata:
  name: shop
  namespace: shop
spec:
  sources:
    volumes:
      - claimName: uploads
        exclude: ["cache/**"]
      - selector:
          matchLabels:
            backup: "true"
        snapshot:
          volumeSnapshotClassName: csi-snapclass
    databases:
      - name: orders
        engine: postgresql
        host: orders-db.shop.svc
        databases: [orders]
        credentialsSecretRef:
          name: orders-db-backup
    clusterResources:
      excludeResources: [events, secrets]
  hooks:
    preBackup:
      - name: flush
        podSelector:
          matchLabels:
            app: shop
        command: ["sh", "-c", "sync"]
  schedule:
    timeZone: Europe/Berlin
    slots:
      - cron: "0 1-23 * * *"
        type: incremental
      - cron: "0 0 * * 0"
        type: full
  retention:
    keepLast: 24
    keepDaily: 14
    keepWeekly: 8
    keepMonthly: 12
  location:
    name: primary
  replicateTo:
    - name: recovery-site         # a BackupLocation with role: recovery-site
      retention:                  # the site keeps more than the primary
        keepDaily: 30
        keepMonthly: 24
  verification:
    cron: "30 4 * * 6"
    readDataPercent: 5
  job:
    resources:
      requests: {cpu: 500m, memory: 256Mi}
      limits: {memory: 1Gi}
    activeDeadlineSeconds: 7200
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: 600
  successfulRunsHistoryLimit: 5
  failedRunsHistoryLimit: 3
"""

_BACKUP_RUN = """\
apiVersion: safehold.io/v1alpha1
kind: BackupRun
metadata:
  name: shop-before-upgrade
  namespace: shop
spec:
  policyRef:
    name: shop
  type: full
  tags: [before-upgrade]
"""

_RESTORE_REQUEST = """\
apiVersion: safehold.io/v1alpha1
kind: RestoreRequest
metadata:
  name: uploads-yesterday
  namespace: shop
spec:
  policyRef:
    name: shop
  pointInTime: "2026-11-25T22:00:00Z"
  sources: [uploads]
  target:
    claimName: uploads-restored
    storageClassName: fast
  existingResourcePolicy: Fail
  dryRun: false
"""

#: kind -> example manifest (YAML).
EXAMPLES: Mapping[str, str] = {
    "BackupLocation": _BACKUP_LOCATION,
    "BackupPolicy": _BACKUP_POLICY,
    "BackupRun": _BACKUP_RUN,
    "RestoreRequest": _RESTORE_REQUEST,
}
