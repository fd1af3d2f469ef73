{{/* Names ------------------------------------------------------------------------------- */}}

{{/* The chart name, or nameOverride. */}}
{{- define "passito-jobs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The object name prefix, truncated to 63 characters (the DNS label limit): fullnameOverride, or
the release name when it already contains the chart name, or <release>-<chart>.
*/}}
{{- define "passito-jobs.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A component's object name: <fullname>-<component>, within 63 characters.
Usage: include "passito-jobs.componentName" (list . "worker")
*/}}
{{- define "passito-jobs.componentName" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $suffix := printf "-%s" $component }}
{{- printf "%s%s" (include "passito-jobs.fullname" $root | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "passito-jobs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels ------------------------------------------------------------------------------ */}}

{{/* Labels that never change for an object: pod selectors use only these. */}}
{{- define "passito-jobs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "passito-jobs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "passito-jobs.labels" -}}
helm.sh/chart: {{ include "passito-jobs.chart" . }}
{{ include "passito-jobs.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: passito-jobs
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component. Usage: include "passito-jobs.componentSelectorLabels" (list . "worker") */}}
{{- define "passito-jobs.componentSelectorLabels" -}}
{{ include "passito-jobs.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Labels of one component's objects. Usage: include "passito-jobs.componentLabels" (list . "worker") */}}
{{- define "passito-jobs.componentLabels" -}}
{{ include "passito-jobs.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Service accounts ---------------------------------------------------------------------- */}}

{{/* The ServiceAccount of the workers, the exporter and the jobs (no API access). */}}
{{- define "passito-jobs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "passito-jobs.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's ServiceAccount (bound to its Role). */}}
{{- define "passito-jobs.operatorServiceAccountName" -}}
{{- default (include "passito-jobs.componentName" (list . "operator")) .Values.operator.serviceAccount.name }}
{{- end }}

{{/* Images ------------------------------------------------------------------------------- */}}

{{/* An image reference. Usage: include "passito-jobs.image" (list . .Values.worker.image) */}}
{{- define "passito-jobs.image" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- $tag := default $root.Chart.AppVersion $root.Values.image.tag }}
{{- if $root.Values.image.registry }}
{{- printf "%s/%s:%s" (trimSuffix "/" $root.Values.image.registry) $image.repository $tag }}
{{- else }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}
{{- end }}

{{- define "passito-jobs.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Secrets and database ---------------------------------------------------------------- */}}

{{/* The Secret holding PASSITO_DATABASE_URL, PASSITO_SECRET_KEY and PASSITO_SMTP_PASSWORD. */}}
{{- define "passito-jobs.secretName" -}}
{{- default (include "passito-jobs.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* True (non-empty) when a database is configured one way or another. */}}
{{- define "passito-jobs.hasDatabase" -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.databaseUrl .Values.postgresql.enabled }}true{{ end }}
{{- end }}

{{/*
The dev PostgreSQL password: the value, else the one already in the cluster (upgrades), else a
new random one. Computed once per render and kept in .Values, because two templates (the
PostgreSQL Secret and the chart Secret's database URL) must agree on it.
*/}}
{{- define "passito-jobs.postgresqlPassword" -}}
{{- if not .Values.postgresql.generatedPassword }}
{{- $password := .Values.postgresql.password }}
{{- if not $password }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "passito-jobs.componentName" (list . "postgresql")) }}
{{- if $existing }}
{{- $password = index $existing.data "POSTGRES_PASSWORD" | b64dec }}
{{- else }}
{{- $password = randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- $_ := set .Values.postgresql "generatedPassword" $password }}
{{- end }}
{{- .Values.postgresql.generatedPassword }}
{{- end }}

{{/* PASSITO_DATABASE_URL for the chart Secret. */}}
{{- define "passito-jobs.databaseUrl" -}}
{{- if .Values.secrets.databaseUrl }}
{{- .Values.secrets.databaseUrl }}
{{- else if .Values.postgresql.enabled }}
{{- printf "postgresql://passito:%s@%s:5432/passito" (include "passito-jobs.postgresqlPassword" .) (include "passito-jobs.componentName" (list . "postgresql")) }}
{{- end }}
{{- end }}

{{/* Environment ---------------------------------------------------------------------------- */}}

{{/* The settings of every container: database, logging, and the user's extraEnv. */}}
{{- define "passito-jobs.commonEnv" -}}
- name: PASSITO_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "passito-jobs.secretName" . }}
      key: PASSITO_DATABASE_URL
- name: PASSITO_LOG_LEVEL
  value: {{ .Values.logging.level | quote }}
- name: PASSITO_LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod and container boilerplate --------------------------------------------------------- */}}

{{/* The writable /tmp every container gets (the root filesystem is read-only). */}}
{{- define "passito-jobs.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end }}

{{- define "passito-jobs.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
True when the migration hook cannot run before install (the chart creates the Secret or the
database itself): pods then migrate in an init container.
*/}}
{{- define "passito-jobs.migrateInPods" -}}
{{- if and .Values.migration.enabled (or (not .Values.secrets.existingSecret) .Values.postgresql.enabled) }}true{{ end }}
{{- end }}

{{/*
The `migrate` init container of the worker, operator and exporter pods (see migrateInPods): it
returns once the schema is current, applying it if nobody has yet. Until the database answers it
fails, and the kubelet retries it.
*/}}
{{- define "passito-jobs.migrateInitContainer" -}}
{{- if include "passito-jobs.migrateInPods" . }}
initContainers:
  - name: migrate
    image: {{ include "passito-jobs.image" (list . .Values.health.image) }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args: [migrate]
    env:
      {{- include "passito-jobs.commonEnv" . | nindent 6 }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml .Values.migration.resources | nindent 6 }}
    volumeMounts:
      {{- include "passito-jobs.tmpVolumeMount" . | nindent 6 }}
{{- end }}
{{- end }}

{{/* Validation that JSON schema cannot express (it compares two values) ----------------------- */}}

{{- define "passito-jobs.validate" -}}
{{- $a := .Values.autoscaling }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%v) must not exceed autoscaling.maxReplicas (%v)" $a.minReplicas $a.maxReplicas) }}
{{- end }}
{{- if gt (float64 $a.scaleDownThreshold) (float64 $a.scaleUpThreshold) }}
{{- fail (printf "autoscaling.scaleDownThreshold (%v) must not exceed autoscaling.scaleUpThreshold (%v)" $a.scaleDownThreshold $a.scaleUpThreshold) }}
{{- end }}
{{- if and (not (kindIs "invalid" $a.pausedReplicas)) (gt (int $a.pausedReplicas) (int $a.maxReplicas)) }}
{{- fail (printf "autoscaling.pausedReplicas (%v) must not exceed autoscaling.maxReplicas (%v)" $a.pausedReplicas $a.maxReplicas) }}
{{- end }}
{{- if and .Values.email.smtp.user (eq .Values.email.smtp.security "none") }}
{{- fail "email.smtp.user needs email.smtp.security starttls or tls: the password would cross the network in clear text" }}
{{- end }}
{{- if and .Values.secrets.secretKey (lt (len .Values.secrets.secretKey) 32) }}
{{- fail "secrets.secretKey must be at least 32 characters" }}
{{- end }}
{{- if and .Values.monitoring.alertmanagerConfig.enabled (not (and .Values.monitoring.alertmanagerConfig.to .Values.monitoring.alertmanagerConfig.smarthost)) }}
{{- fail "monitoring.alertmanagerConfig needs `to` and `smarthost`" }}
{{- end }}
{{- end }}
