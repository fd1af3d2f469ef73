{{/* The dashboard (`passito-jobs web`): helpers of the templates in this folder. */}}

{{/* The Secret with the users and tokens files: the chart's, or web.auth.existingSecret. */}}
{{- define "passito-jobs.web.authSecret" -}}
{{- default (include "passito-jobs.componentName" (list . "web-auth")) .Values.web.auth.existingSecret }}
{{- end }}

{{/*
The token of the `helm test` pod: random at install, kept on upgrades (lookup), in a Secret of its
own. The dashboard reads its sha256 as one more tokens file, so the test works in every auth mode.
*/}}
{{- define "passito-jobs.web.testToken" -}}
{{- $name := include "passito-jobs.componentName" (list . "web-test") }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name }}
{{- if and $existing (index $existing.data "token") }}
{{- index $existing.data "token" | b64dec }}
{{- else }}
{{- randAlphaNum 48 }}
{{- end }}
{{- end }}

{{/*
The key that signs the dashboard's CSRF tokens (PASSITO_WEB_CSRF_KEY_FILE), the same for every
replica, in a Secret of its own: web.csrfKey.existingSecret's, or the chart's, random at install
and kept on upgrades (lookup).
*/}}
{{- define "passito-jobs.web.csrfSecret" -}}
{{- default (include "passito-jobs.componentName" (list . "web-csrf")) .Values.web.csrfKey.existingSecret }}
{{- end }}

{{- define "passito-jobs.web.csrfKey" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "passito-jobs.componentName" (list . "web-csrf")) }}
{{- if and $existing $existing.data (index $existing.data "csrf-key") }}
{{- index $existing.data "csrf-key" | b64dec }}
{{- else }}
{{- randAlphaNum 64 }}
{{- end }}
{{- end }}

{{/* PASSITO_WEB_AUTH: the chosen mode, and `token` (API clients, the helm test). */}}
{{- define "passito-jobs.web.modes" -}}
{{- $mode := .Values.web.auth.mode }}
{{- if eq $mode "token" }}token{{ else }}{{ $mode }},token{{ end }}
{{- end }}

{{/* Validation the schema cannot express. */}}
{{- define "passito-jobs.web.validate" -}}
{{- $auth := .Values.web.auth }}
{{- if and (eq $auth.mode "basic") (not $auth.users) (not $auth.existingSecret) }}
{{- fail "web.auth.mode basic needs web.auth.users (lines of `passito-jobs web hash-password`) or web.auth.existingSecret" }}
{{- end }}
{{- with $.Values.web.csrfKey.existingSecret }}
{{- /* Found only against a cluster (not under `helm template`): a Secret without csrf-key would leave the pods unable to start. */}}
{{- $existing := lookup "v1" "Secret" $.Release.Namespace . }}
{{- if and $existing (not (hasKey (default dict $existing.data) "csrf-key")) }}
{{- fail (printf "web.csrfKey.existingSecret %s has no key csrf-key: add one of at least 32 characters (e.g. `openssl rand -base64 48`)" .) }}
{{- end }}
{{- end }}
{{- if and (eq $auth.mode "header") (not $auth.trustedProxies) }}
{{- fail "web.auth.mode header needs web.auth.trustedProxies: the addresses of the proxy that sets the user header" }}
{{- end }}
{{- end }}
