{{- define "sqe-operator.name" -}}
{{- if contains "sqe-operator" .Release.Name -}}{{ .Release.Name | trunc 63 }}
{{- else -}}{{ printf "%s-sqe-operator" .Release.Name | trunc 63 }}{{- end -}}
{{- end -}}
{{- define "sqe-operator.labels" -}}
app.kubernetes.io/name: sqe-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "sqe-operator.selector" -}}
app.kubernetes.io/name: sqe-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
