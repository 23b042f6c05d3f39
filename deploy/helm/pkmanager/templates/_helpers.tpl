{{/* The app.kubernetes.io/name label: the chart's name (or nameOverride). */}}
{{- define "pkmanager.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object names: fullnameOverride, else the release name when it contains the name, else RELEASE-NAME. */}}
{{- define "pkmanager.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "pkmanager.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object: the base's app.kubernetes.io/name plus Helm's usual ones. */}}
{{- define "pkmanager.labels" -}}
app.kubernetes.io/name: {{ include "pkmanager.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The selector of the server's pods: the base's (the name only; one release per namespace). */}}
{{- define "pkmanager.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pkmanager.name" . }}
{{- end -}}
