{{- define "gpu-dra.name" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "gpu-dra.serviceAccountName" -}}
{{- printf "%s-kubelet-plugin" (include "gpu-dra.name" .) -}}
{{- end -}}

{{- define "gpu-dra.labels" -}}
app.kubernetes.io/name: {{ include "gpu-dra.name" . }}
{{- end -}}
