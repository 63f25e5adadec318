{{/* Names: <release> when it contains the chart name, else <release>-<chart>; 63 characters at most. */}}
{{- define "hab-bootstrap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hab-bootstrap.fullname" -}}
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

{{/* Labels on every object. */}}
{{- define "hab-bootstrap.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "hab-bootstrap.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "hab-bootstrap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hab-bootstrap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The image of the webhook, the certificate keeper and (by default) the sidecar. */}}
{{- define "hab-bootstrap.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "hab-bootstrap.tlsSecret" -}}
{{- default (printf "%s-tls" (include "hab-bootstrap.fullname" .)) .Values.certificates.secretName }}
{{- end }}

{{- define "hab-bootstrap.certsName" -}}
{{- printf "%s-certs" (include "hab-bootstrap.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The restricted Pod Security profile, without a fixed UID (the image runs as 65532). */}}
{{- define "hab-bootstrap.podSecurityContext" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "hab-bootstrap.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* A Go duration as liveReadTimeout takes it ("2s", "1m30s", "500ms"), in milliseconds. */}}
{{- define "hab-bootstrap.milliseconds" -}}
{{- $total := 0 }}
{{- range regexFindAll "[0-9]+(ms|h|m|s)" . -1 }}
{{- $number := regexFind "^[0-9]+" . }}
{{- $unit := get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000) (trimPrefix $number .) }}
{{- $total = add $total (mul (int $number) $unit) }}
{{- end }}
{{- $total }}
{{- end }}

{{/* Refuse values that would make a broken install. */}}
{{- define "hab-bootstrap.validate" -}}
{{- /* The webhook answers within webhook.timeoutSeconds less its margin (a quarter, at most 1 s:
src/webhook/deadline.rs); a review makes up to three API calls in turn, each capped by
liveReadTimeout. One call that hangs must leave time for the next, or a slow optional check
(the SubjectAccessReview) turns into a denial. */}}
{{- $timeout := mul (int .Values.webhook.timeoutSeconds) 1000 }}
{{- $budget := sub $timeout (min (div $timeout 4) 1000) }}
{{- $read := int (include "hab-bootstrap.milliseconds" .Values.liveReadTimeout) }}
{{- if gt (mul $read 2) $budget }}
{{- fail (printf "liveReadTimeout (%s) is more than half of the %dms the webhook has to answer within webhook.timeoutSeconds (%v, less its margin): one API call that hangs would leave no time for the next; set liveReadTimeout to at most %dms or raise webhook.timeoutSeconds" .Values.liveReadTimeout $budget .Values.webhook.timeoutSeconds (div $budget 2)) }}
{{- end }}
{{- $stop := add .Values.shutdownDelaySeconds .Values.drainTimeoutSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $stop) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be longer than shutdownDelaySeconds + drainTimeoutSeconds (%v)" .Values.terminationGracePeriodSeconds $stop) }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled .Values.networkPolicy.enabled (not .Values.networkPolicy.metricsFrom) }}
{{- fail "serviceMonitor.enabled: the NetworkPolicy lets nobody reach /metrics; set networkPolicy.metricsFrom to where Prometheus scrapes from (e.g. a namespaceSelector of its namespace), or networkPolicy.enabled=false" }}
{{- end }}
{{- if and (eq .Values.certificates.mode "provided") (not .Values.certificates.secretName) }}
{{- fail "certificates.mode=provided needs certificates.secretName (your kubernetes.io/tls Secret)" }}
{{- end }}
{{- if and (eq .Values.certificates.mode "provided") (not .Values.certificates.provided.caBundle) }}
{{- fail "certificates.mode=provided needs certificates.provided.caBundle (base64 PEM of the CA that signed it)" }}
{{- end }}
{{- end }}
