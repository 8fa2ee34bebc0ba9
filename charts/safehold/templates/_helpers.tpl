{{/*
Names and labels shared by every template.
*/}}

{{/* The chart's name, shortened to the 63 characters a label value allows. */}}
{{- define "safehold.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: names every object, so two releases never collide. */}}
{{- define "safehold.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "safehold.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator's pod; never change them between releases. */}}
{{- define "safehold.selectorLabels" -}}
app.kubernetes.io/name: {{ include "safehold.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "safehold.labels" -}}
helm.sh/chart: {{ include "safehold.chart" . }}
{{ include "safehold.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: safehold
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "safehold.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "safehold.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "safehold.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* jobDefaults as compact JSON, empty fields left out, for SAFEHOLD_JOB_DEFAULTS. */}}
{{- define "safehold.jobDefaults" -}}
{{- $out := dict -}}
{{- range $key, $value := .Values.jobDefaults -}}
{{- if or (kindIs "float64" $value) (kindIs "int" $value) (kindIs "int64" $value) $value -}}
{{- $_ := set $out $key $value -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
The rules the operator's ServiceAccount needs in the namespaces it watches: the contract with
the controller (docs/install.md, "RBAC", explains each one). No Secrets: the operator never
reads credentials, its Jobs receive them by reference. No wildcards.
*/}}
{{- define "safehold.namespacedRules" -}}
- apiGroups: ["safehold.io"]
  resources: ["backuplocations", "backuppolicies", "restorerequests"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["safehold.io"]
  resources: ["backupruns"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["safehold.io"]
  resources:
    - backuplocations/status
    - backuppolicies/status
    - backupruns/status
    - restorerequests/status
  verbs: ["get", "patch", "update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
{{- if .Values.execHooks.enabled }}
# exec hooks (spec.hooks): run a command in the application's pods that opted in. WebSocket
# exec is authorized as create since Kubernetes 1.31 and as get before.
- apiGroups: [""]
  resources: ["pods/exec"]
  verbs: ["create", "get"]
{{- end }}
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: ["snapshot.storage.k8s.io"]
  resources: ["volumesnapshots"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch", "list"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# a restore into another namespace: the grant its owners created there (docs/security.md);
# no other ConfigMap, and no list or watch
- apiGroups: [""]
  resources: ["configmaps"]
  resourceNames: ["safehold-restore-grant"]
  verbs: ["get"]
{{- end -}}

{{/* The cluster-scoped things the operator reads: which CRDs exist (kopf's discovery),
which VolumeSnapshotClasses there are (volume sources in snapshot mode), and whether a
namespace a restore targets exists. */}}
{{- define "safehold.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
# a denied restore into another namespace says whether that namespace exists at all
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
- apiGroups: ["snapshot.storage.k8s.io"]
  resources: ["volumesnapshotclasses"]
  verbs: ["get", "list", "watch"]
{{- end -}}

{{- /* The Lease the replicas elect their leader with. */}}
{{- define "safehold.leaseName" -}}
{{ include "safehold.fullname" . }}-leader
{{- end }}

{{/*
The names of imagePullSecrets, comma-separated (for SAFEHOLD_IMAGE_PULL_SECRETS: the Jobs
name the same Secrets, which must exist in their namespaces).
*/}}
{{- define "safehold.pullSecretNames" -}}
{{- $names := list -}}
{{- range . -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}
