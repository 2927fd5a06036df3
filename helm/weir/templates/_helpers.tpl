{{/*
The chart name, overridable with nameOverride.
*/}}
{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources: <release>-weir, or just the
release name when it already contains the chart name.
*/}}
{{- define "weir.fullname" -}}
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
chart-version for the helm.sh/chart label.
*/}}
{{- define "weir.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "weir.labels" -}}
helm.sh/chart: {{ include "weir.chart" . }}
{{ include "weir.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the release's pods (never change them on upgrade: a
Deployment's selector is immutable).
*/}}
{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount's name.
*/}}
{{- define "weir.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weir.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The ConfigMap holding weir.yaml: the user's, or the one the chart renders.
*/}}
{{- define "weir.policyConfigMapName" -}}
{{- if .Values.existingConfigMap }}
{{- .Values.existingConfigMap }}
{{- else }}
{{- printf "%s-policy" (include "weir.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
host:port for a listener: IPv6 addresses in brackets.
*/}}
{{- define "weir.listenAddr" -}}
{{- $host := .host | toString }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host (int .port) }}
{{- else }}
{{- printf "%s:%d" $host (int .port) }}
{{- end }}
{{- end }}

{{/*
The policy file: .Values.policy with listen, admin and
shutdown.drain_timeout filled in by the chart.
*/}}
{{- define "weir.policy" -}}
{{- $policy := deepCopy (.Values.policy | default dict) }}
{{- range $key := list "listen" "admin" "shutdown" }}
{{- if hasKey $policy $key }}
{{- fail (printf "policy.%s is set by the chart (from listenAddress, ports and drainTimeoutSeconds); remove it from policy" $key) }}
{{- end }}
{{- end }}
{{- if not (hasKey $policy "upstreams") }}
{{- fail "policy.upstreams is required: at least one upstream with route and url" }}
{{- end }}
{{- $_ := set $policy "listen" (include "weir.listenAddr" (dict "host" .Values.listenAddress "port" .Values.ports.proxy)) }}
{{- $_ := set $policy "admin" (include "weir.listenAddr" (dict "host" .Values.listenAddress "port" .Values.ports.admin)) }}
{{- $_ := set $policy "shutdown" (dict "drain_timeout" (printf "%ds" (int .Values.drainTimeoutSeconds))) }}
{{- toYaml $policy }}
{{- end }}
