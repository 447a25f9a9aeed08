{{/*
Shared names, labels and fragments. Every resource is "<release>-<component>", so with release "podmotion":
podmotion-operator, podmotion-agent, podmotion-nats, podmotion-webhook.
*/}}

{{/* "<release>-<component>": call with (list . "component"). */}}
{{- define "podmotion.name" -}}
{{- $ctx := index . 0 -}}
{{- printf "%s-%s" $ctx.Release.Name (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries; call with (list . "component"). */}}
{{- define "podmotion.labels" -}}
{{- $ctx := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $ctx.Chart.Name $ctx.Chart.Version | replace "+" "_" }}
{{ include "podmotion.selectorLabels" . }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: podmotion
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
{{- end -}}

{{/* The subset of labels used in selectors (immutable once installed); call with (list . "component"). */}}
{{- define "podmotion.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: podmotion
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* The podmotion image (operator, coordinator and agent). */}}
{{- define "podmotion.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* NATS client URL, through the "<release>-nats" Service. */}}
{{- define "podmotion.natsURL" -}}
{{- printf "nats://%s:4222" (include "podmotion.name" (list . "nats")) -}}
{{- end -}}

{{/* DNS names of the webhook Service, for the serving certificate. */}}
{{- define "podmotion.webhookDNSNames" -}}
{{- $svc := printf "%s.%s.svc" (include "podmotion.name" (list . "webhook")) .Release.Namespace -}}
{{- list $svc (printf "%s.cluster.local" $svc) | toJson -}}
{{- end -}}

{{/* The security context of the operator and coordinator containers. */}}
{{- define "podmotion.restrictedSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Checks on values that would otherwise fail only at run time. */}}
{{- define "podmotion.validate" -}}
{{- if not (regexMatch "^[a-z][a-z0-9]{0,11}$" (toString .Values.clusterName)) -}}
{{- fail (printf "clusterName %q: use 1 to 12 lower-case letters and digits, starting with a letter (the rule the podmotion CLI checks at start)" (toString .Values.clusterName)) -}}
{{- end -}}
{{- if not (regexMatch "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$" (toString .Values.podNamespace)) -}}
{{- fail (printf "podNamespace %q is not a valid Kubernetes namespace name" (toString .Values.podNamespace)) -}}
{{- end -}}
{{- if not (has .Values.webhook.failurePolicy (list "Fail" "Ignore")) -}}
{{- fail (printf "webhook.failurePolicy %q: use Fail or Ignore" (toString .Values.webhook.failurePolicy)) -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled (empty .Values.networkPolicy.nodeCIDRs) -}}
{{- fail "networkPolicy.enabled needs networkPolicy.nodeCIDRs: the agent uses the host network, so its connections to NATS come from node addresses, which no podSelector matches" -}}
{{- end -}}
{{- end -}}
