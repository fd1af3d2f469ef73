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

{{/* Modes --------------------------------------------------------------------------------- */}}

{{/*
postgresql.mode: bundled, external or cloudnativepg. The deprecated postgresql.enabled (kept for
one release) maps onto it: true means bundled. Combined with cloudnativepg it is an error rather
than a guess. false was the old default and says nothing.
*/}}
{{- define "passito-jobs.postgresqlMode" -}}
{{- $p := .Values.postgresql }}
{{- if eq (toString $p.enabled) "true" }}
{{- if eq $p.mode "cloudnativepg" }}
{{- fail "postgresql.enabled (deprecated) means postgresql.mode bundled: remove it when postgresql.mode is cloudnativepg" }}
{{- end }}
{{- print "bundled" }}
{{- else }}
{{- print $p.mode }}
{{- end }}
{{- end }}

{{/*
autoscaling.engine: operator, keda or none. The deprecated autoscaling.enabled (kept for one
release) maps onto it: false means none. true was the old default and says nothing.
*/}}
{{- define "passito-jobs.autoscalingEngine" -}}
{{- $a := .Values.autoscaling }}
{{- if eq (toString $a.enabled) "false" }}
{{- if eq $a.engine "keda" }}
{{- fail "autoscaling.enabled=false (deprecated) means autoscaling.engine none: remove it when autoscaling.engine is keda" }}
{{- end }}
{{- print "none" }}
{{- else }}
{{- print $a.engine }}
{{- end }}
{{- end }}

{{/* True (non-empty) when the chart runs the operator: engine operator and operator.enabled. */}}
{{- define "passito-jobs.runOperator" -}}
{{- if and .Values.operator.enabled (eq (include "passito-jobs.autoscalingEngine" .) "operator") }}true{{ end }}
{{- end }}

{{/* Secrets and database ---------------------------------------------------------------- */}}

{{/* The Secret holding PASSITO_SECRET_KEY, PASSITO_SMTP_PASSWORD and the URLs given as values. */}}
{{- define "passito-jobs.secretName" -}}
{{- default (include "passito-jobs.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
The CloudNativePG Cluster (postgresql.mode cloudnativepg). Its services (<name>-rw), secrets
(<name>-app) and pods (<name>-N) append to the name: 50 characters leave room for them.
*/}}
{{- define "passito-jobs.cnpgClusterName" -}}
{{- include "passito-jobs.componentName" (list . "postgresql") | trunc 50 | trimSuffix "-" }}
{{- end }}

{{/* True (non-empty) when a database is configured one way or another. */}}
{{- define "passito-jobs.hasDatabase" -}}
{{- $mode := include "passito-jobs.postgresqlMode" . }}
{{- if or (ne $mode "external") .Values.secrets.existingSecret .Values.secrets.databaseUrl .Values.postgresql.external.existingSecret }}true{{ end }}
{{- end }}

{{/*
The Secret and key holding the URL of PostgreSQL itself (never the pooler), as YAML {name, key}:
what KEDA and, without pgbouncer, every workload connect with.
*/}}
{{- define "passito-jobs.databaseSecretRef" -}}
{{- $mode := include "passito-jobs.postgresqlMode" . }}
{{- if eq $mode "cloudnativepg" }}
name: {{ printf "%s-app" (include "passito-jobs.cnpgClusterName" .) }}
key: uri
{{- else if and (eq $mode "external") .Values.postgresql.external.existingSecret }}
name: {{ .Values.postgresql.external.existingSecret }}
key: {{ .Values.postgresql.external.existingSecretKey }}
{{- else }}
name: {{ include "passito-jobs.secretName" . }}
key: PASSITO_DATABASE_URL
{{- end }}
{{- end }}

{{/*
True (non-empty) when the workloads' URL is built in the pod: a CloudNativePG Pooler in front of
the chart's Cluster. The Cluster's application secret names its -rw service, not the pooler, so
the `database-url` init container writes the pooler's URL from that secret's parts.
*/}}
{{- define "passito-jobs.buildsPoolerUrl" -}}
{{- if and .Values.pgbouncer.enabled (eq (include "passito-jobs.postgresqlMode" .) "cloudnativepg") }}true{{ end }}
{{- end }}

{{/*
The Secret and key the workloads read their database URL from, as YAML {name, key}: the pooler's
with pgbouncer.enabled, else PostgreSQL's. Empty when the pod builds it (buildsPoolerUrl).
*/}}
{{- define "passito-jobs.workloadDatabaseSecretRef" -}}
{{- if include "passito-jobs.buildsPoolerUrl" . }}
{{- else if .Values.pgbouncer.enabled }}
name: {{ include "passito-jobs.secretName" . }}
key: POOLER_DATABASE_URL
{{- else }}
{{- include "passito-jobs.databaseSecretRef" . }}
{{- end }}
{{- end }}

{{/*
The bundled PostgreSQL's password: the value, else the one already in the cluster (upgrades),
else a new random one. Computed once per render and kept in .Values, because two templates (the
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
{{- $mode := include "passito-jobs.postgresqlMode" . }}
{{- if eq $mode "bundled" }}
{{- printf "postgresql://passito:%s@%s:5432/passito" (include "passito-jobs.postgresqlPassword" .) (include "passito-jobs.componentName" (list . "postgresql")) }}
{{- else if eq $mode "external" }}
{{- .Values.secrets.databaseUrl }}
{{- end }}
{{- end }}

{{/* Secrets as files ---------------------------------------------------------------------- */}}

{{/*
Secrets reach the pods as read-only files, never as environment variables (which leak through
/proc/<pid>/environ, crash reports and `kubectl describe`): the settings name the files
(PASSITO_*_FILE). Mode 0400 keeps them to the file's owner and group; the kubelet makes them
group-owned by the pod's fsGroup, which is how the non-root user reads them (validate checks
that podSecurityContext keeps an fsGroup).
*/}}
{{- define "passito-jobs.secretsDir" -}}
/var/run/secrets/passito
{{- end }}

{{- define "passito-jobs.databaseUrlFile" -}}
{{- if include "passito-jobs.buildsPoolerUrl" . }}/var/run/passito/database/database-url
{{- else }}{{ include "passito-jobs.secretsDir" . }}/database-url
{{- end }}
{{- end }}

{{/*
The secret volumes of a pod. Usage: include "passito-jobs.secretVolumes" (list . $appSecrets),
where $appSecrets (the signing key and SMTP password) is true for the workers only.
*/}}
{{- define "passito-jobs.secretVolumes" -}}
{{- $root := index . 0 }}
{{- $app := index . 1 }}
{{- $database := include "passito-jobs.workloadDatabaseSecretRef" $root | fromYaml }}
{{- if or $database.name $app }}
- name: secrets
  projected:
    defaultMode: 0400
    sources:
      {{- if $database.name }}
      - secret:
          name: {{ $database.name }}
          items:
            - key: {{ $database.key }}
              path: database-url
      {{- end }}
      {{- if $app }}
      - secret:
          name: {{ include "passito-jobs.secretName" $root }}
          items:
            - key: PASSITO_SECRET_KEY
              path: secret-key
            {{- if $root.Values.email.smtp.user }}
            - key: PASSITO_SMTP_PASSWORD
              path: smtp-password
            {{- end }}
      {{- end }}
{{- end }}
{{- if include "passito-jobs.buildsPoolerUrl" $root }}
# The Cluster's application credentials, for the database-url init container only.
- name: database-credentials
  secret:
    secretName: {{ printf "%s-app" (include "passito-jobs.cnpgClusterName" $root) }}
    defaultMode: 0400
    items:
      - key: username
        path: username
      - key: password
        path: password
      - key: dbname
        path: dbname
# The pooler's URL, in memory only.
- name: database-url
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- end }}

{{/* The mounts of those volumes in a container. Usage: as secretVolumes. */}}
{{- define "passito-jobs.secretVolumeMounts" -}}
{{- $root := index . 0 }}
{{- $app := index . 1 }}
{{- $database := include "passito-jobs.workloadDatabaseSecretRef" $root | fromYaml }}
{{- if or $database.name $app }}
- name: secrets
  mountPath: {{ include "passito-jobs.secretsDir" $root }}
  readOnly: true
{{- end }}
{{- if include "passito-jobs.buildsPoolerUrl" $root }}
- name: database-url
  mountPath: /var/run/passito/database
  readOnly: true
{{- end }}
{{- end }}

{{/* Environment ---------------------------------------------------------------------------- */}}

{{/* The settings of every container: database, logging, and the user's extraEnv. */}}
{{- define "passito-jobs.commonEnv" -}}
- name: PASSITO_DATABASE_URL_FILE
  value: {{ include "passito-jobs.databaseUrlFile" . }}
{{- if .Values.pgbouncer.enabled }}
# PgBouncer in transaction mode cannot carry LISTEN/NOTIFY: poll instead.
- name: PASSITO_LISTEN
  value: "false"
{{- end }}
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
True when the migration hook cannot run before install: the chart creates the database URL's
Secret or the database itself (bundled, cloudnativepg), which Helm does only after the
pre-install hooks. Pods then migrate in an init container.
*/}}
{{- define "passito-jobs.migrateInPods" -}}
{{- $external := eq (include "passito-jobs.postgresqlMode" .) "external" }}
{{- $ownSecret := or .Values.secrets.existingSecret .Values.postgresql.external.existingSecret }}
{{- $poolerSecret := or (not .Values.pgbouncer.enabled) .Values.secrets.existingSecret }}
{{- if and .Values.migration.enabled (not (and $external $ownSecret $poolerSecret)) }}true{{ end }}
{{- end }}

{{/*
The `queues:` values as the JSON of `passito-jobs migrate --queue-settings`: the same settings,
named as the command line names them (keyConcurrency: key_concurrency), numbers as integers. A
setting not given stays out, so the command leaves it as it is.
*/}}
{{- define "passito-jobs.queueSettings" -}}
{{- $settings := dict }}
{{- range $queue, $given := .Values.queues }}
{{- $one := dict }}
{{- range $name, $key := dict "paused" "paused" "concurrency" "concurrency" "rate" "rate" "keyConcurrency" "key_concurrency" }}
{{- if hasKey $given $name }}
{{- $value := index $given $name }}
{{- if or (kindIs "float64" $value) (kindIs "int64" $value) (kindIs "int" $value) }}
{{- $value = int64 $value }}
{{- end }}
{{- $_ := set $one $key $value }}
{{- end }}
{{- end }}
{{- $_ := set $settings $queue $one }}
{{- end }}
{{- toJson $settings }}
{{- end }}

{{/*
The init containers of a pod, in order:
- `database-url` (buildsPoolerUrl): writes the CloudNativePG Pooler's URL, built from the
  Cluster's application secret, into the in-memory database-url volume;
- `migrate` ($migrate and migrateInPods): returns once the schema is current, applying it if
  nobody has yet. Until the database answers it fails, and the kubelet retries it.
Usage: include "passito-jobs.initContainers" (list . $migrate)
*/}}
{{- define "passito-jobs.initContainers" -}}
{{- $root := index . 0 }}
{{- $buildUrl := include "passito-jobs.buildsPoolerUrl" $root }}
{{- $migrate := and (index . 1) (include "passito-jobs.migrateInPods" $root) }}
{{- if or $buildUrl $migrate }}
initContainers:
  {{- if $buildUrl }}
  - name: database-url
    image: {{ include "passito-jobs.image" (list $root $root.Values.health.image) }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    # Arguments: the credentials' folder, the URL file (created mode 0400), the pooler's host.
    command: [python3, -c]
    args:
      - |
        import os, sys, urllib.parse
        source, target, host = sys.argv[1:4]
        def part(key):
            with open(os.path.join(source, key), encoding="utf-8") as file:
                return urllib.parse.quote(file.read(), safe="")
        url = f"postgresql://{part('username')}:{part('password')}@{host}:5432/{part('dbname')}"
        if os.path.lexists(target):
            os.unlink(target)
        with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "w") as file:
            file.write(url)
      - /var/run/secrets/cloudnativepg
      - /var/run/passito/database/database-url
      - {{ include "passito-jobs.componentName" (list $root "pgbouncer") }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    resources:
      requests:
        cpu: 10m
        memory: 32Mi
      limits:
        cpu: 100m
        memory: 64Mi
    volumeMounts:
      - name: database-credentials
        mountPath: /var/run/secrets/cloudnativepg
        readOnly: true
      - name: database-url
        mountPath: /var/run/passito/database
  {{- end }}
  {{- if $migrate }}
  - name: migrate
    image: {{ include "passito-jobs.image" (list $root $root.Values.health.image) }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args: [migrate]
    env:
      {{- include "passito-jobs.commonEnv" $root | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml $root.Values.migration.resources | nindent 6 }}
    volumeMounts:
      {{- include "passito-jobs.tmpVolumeMount" $root | nindent 6 }}
      {{- include "passito-jobs.secretVolumeMounts" (list $root false) | nindent 6 }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
The query the autoscaler scales on: ready plus in-flight jobs in autoscaling.queues (all when
empty), from passito_jobs.load(), the SQL function the operator's load reader calls, so KEDA and
the operator count the same jobs. Queue names become SQL string literals (quotes doubled).
*/}}
{{- define "passito-jobs.loadQuery" -}}
{{- $literals := list }}
{{- range .Values.autoscaling.queues }}
{{- $literals = append $literals (printf "'%s'" (replace "'" "''" .)) }}
{{- end }}
{{- if $literals }}
{{- printf "SELECT ready + processing FROM passito_jobs.load(ARRAY[%s]::text[])" (join ", " $literals) }}
{{- else }}
{{- print "SELECT ready + processing FROM passito_jobs.load(NULL::text[])" }}
{{- end }}
{{- end }}

{{/*
Whole seconds of a duration value: 30, "30s", "2m" or "1h" (the schema allows only these forms).
Usage: include "passito-jobs.seconds" .Values.worker.shutdownTimeout
*/}}
{{- define "passito-jobs.seconds" -}}
{{- $text := toString . }}
{{- if hasSuffix "h" $text }}{{ mul (atoi (trimSuffix "h" $text)) 3600 }}
{{- else if hasSuffix "m" $text }}{{ mul (atoi (trimSuffix "m" $text)) 60 }}
{{- else }}{{ atoi (trimSuffix "s" $text) }}
{{- end }}
{{- end }}

{{/* Validation that JSON schema cannot express (it compares values) ----------------------- */}}

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
{{- if and (eq (include "passito-jobs.autoscalingEngine" .) "keda") (gt (int $a.cooldownPeriod) 3600) }}
{{- fail (printf "autoscaling.cooldownPeriod (%v) must not exceed 3600 with autoscaling.engine keda: it is the HPA's scale-down window, which Kubernetes caps at an hour" $a.cooldownPeriod) }}
{{- end }}
{{- if not .Values.podSecurityContext.fsGroup }}
{{- fail "podSecurityContext.fsGroup must be set: the secret files are mode 0400 and group-owned by the fsGroup, the only way the non-root user can read them" }}
{{- end }}
{{- $mode := include "passito-jobs.postgresqlMode" . }}
{{- $cnpg := .Values.postgresql.cloudnativepg }}
{{- if and (eq $mode "cloudnativepg") (ge (int $cnpg.synchronousReplicas) (int $cnpg.instances)) }}
{{- fail (printf "postgresql.cloudnativepg.synchronousReplicas (%v) must be below instances (%v): a commit waits for that many standbys" $cnpg.synchronousReplicas $cnpg.instances) }}
{{- end }}
{{- if .Values.pgbouncer.enabled }}
{{- if and (eq $mode "cloudnativepg") .Values.secrets.poolerUrl }}
{{- fail "secrets.poolerUrl must be empty with postgresql.mode cloudnativepg: the chart renders the Pooler and builds its URL" }}
{{- end }}
{{- if and (ne $mode "cloudnativepg") (not (or .Values.secrets.poolerUrl .Values.secrets.existingSecret)) }}
{{- fail "pgbouncer.enabled needs the pooler's URL: secrets.poolerUrl, or the key POOLER_DATABASE_URL in secrets.existingSecret" }}
{{- end }}
{{- if and (eq (include "passito-jobs.autoscalingEngine" .) "keda") (eq $mode "external") (not (or .Values.secrets.databaseUrl .Values.secrets.existingSecret .Values.postgresql.external.existingSecret)) }}
{{- fail "autoscaling.engine keda connects straight to PostgreSQL, not through the pooler: give its URL too (secrets.databaseUrl, secrets.existingSecret or postgresql.external.existingSecret)" }}
{{- end }}
{{- end }}
{{- end }}
