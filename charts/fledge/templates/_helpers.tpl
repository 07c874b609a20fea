{{/* The release's full name, capped at 63 characters. */}}
{{- define "fledge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fledge.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "fledge.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fledge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fledge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: with serviceAccount.create false, name the existing ServiceAccount to run as" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The port the ops server listens on in the container, fixed: `service.port` is the Service's
only. A port below 1024 would need NET_BIND_SERVICE, which a non-root process does not keep on
every runtime; the Dockerfile EXPOSEs the same port.
*/}}
{{- define "fledge.opsPort" -}}8080{{- end -}}

{{/* The image: repository@digest when a digest is set, else repository:tag. */}}
{{- define "fledge.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/*
The rules granted where Canaries are reconciled, from rbac/permissions.yaml: the Canary rules,
the MetricTemplate rules, the routing rules of `provider` and of `extraProviders` (each family
once), and the watch rules of `provider`.
*/}}
{{- define "fledge.watchedRules" -}}
{{- $perms := .Files.Get "rbac/permissions.yaml" | fromYaml -}}
{{- $rules := concat $perms.canaries $perms.metricTemplates -}}
{{- if .Values.flaggerCanaries -}}
{{- $rules = concat $rules $perms.flaggerCanaries $perms.flaggerMetricTemplates -}}
{{- end -}}
{{- $wanted := prepend .Values.extraProviders .Values.provider -}}
{{- range $name, $family := $perms.routing -}}
{{- $used := false -}}
{{- range $wanted -}}{{- if has . $family.providers -}}{{- $used = true -}}{{- end -}}{{- end -}}
{{- if $used -}}{{- $rules = concat $rules $family.rules -}}{{- end -}}
{{- if has $.Values.provider $family.providers -}}{{- $rules = concat $rules $family.watch -}}{{- end -}}
{{- end -}}
{{- include "fledge.rules" $rules -}}
{{- end -}}

{{/* Rules as RBAC YAML, each under a comment saying why it is needed. */}}
{{- define "fledge.rules" -}}
rules:
{{- range . }}
  # {{ .why }}
  - apiGroups: {{ toJson .apiGroups }}
    resources: {{ toJson .resources }}
    verbs: {{ toJson .verbs }}
    {{- with .resourceNames }}
    resourceNames: {{ toJson . }}
    {{- end }}
{{- end }}
{{- end -}}

{{/* A binding of the controller's ServiceAccount: (list root kind name namespace). */}}
{{- define "fledge.binding" -}}
{{- $root := index . 0 -}}
{{- $kind := index . 1 -}}
{{- $name := index . 2 -}}
{{- $namespace := index . 3 -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ $kind }}Binding
metadata:
  name: {{ $name }}
  {{- with $namespace }}
  namespace: {{ . }}
  {{- end }}
  labels:
    {{- include "fledge.labels" $root | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: {{ $kind }}
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ include "fledge.serviceAccountName" $root }}
    namespace: {{ $root.Release.Namespace }}
{{- end -}}

{{/*
The NetworkPolicy egress rule to the Prometheus of `prometheus.address`: to
`networkPolicy.prometheus.to` if set, else to the pods (`podSelector`) of its namespace
(`namespace`, else the one the address names as a Service: `<svc>.<ns>`, `<svc>.<ns>.svc...`,
or a bare `<svc>` in the release's namespace), on `port` or the address's port.
*/}}
{{- define "fledge.prometheusEgress" -}}
{{- $np := .Values.networkPolicy.prometheus -}}
{{- $url := urlParse .Values.prometheus.address -}}
{{- $port := $np.port | int -}}
{{- if not $port -}}
{{- $port = regexFind ":[0-9]+$" $url.host | trimPrefix ":" | default (ternary 443 80 (eq $url.scheme "https")) | int -}}
{{- end -}}
{{- $peers := $np.to -}}
{{- if not $peers -}}
{{- $namespace := $np.namespace -}}
{{- $service := "^[^.:]+\\.([^.:]+)(\\.svc(\\.[^:]+)?)?$" -}}
{{- if $namespace -}}
{{- /* set by the user */ -}}
{{- else if regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $url.hostname -}}
{{- $namespace = .Release.Namespace -}}
{{- else if regexMatch $service $url.hostname -}}
{{- $namespace = regexReplaceAll $service $url.hostname "${1}" -}}
{{- else -}}
{{- fail (printf "networkPolicy.prometheus: cannot tell the namespace of Prometheus from prometheus.address %q (its host is not a Service name <svc>.<namespace>): set networkPolicy.prometheus.namespace, or networkPolicy.prometheus.to for a Prometheus outside the cluster" .Values.prometheus.address) -}}
{{- end -}}
{{- $peer := dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" $namespace)) -}}
{{- with $np.podSelector -}}
{{- $_ := set $peer "podSelector" (dict "matchLabels" .) -}}
{{- end -}}
{{- $peers = list $peer -}}
{{- end -}}
- to:
    {{- toYaml $peers | nindent 4 }}
  ports:
    - port: {{ $port }}
      protocol: TCP
{{- end -}}

{{/* A Prometheus duration of the schema's form (1h2m3s4ms) in milliseconds. */}}
{{- define "fledge.durationMs" -}}
{{- $parts := regexReplaceAll "^(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?$" . "${1} ${2} ${3} ${4}" | splitList " " -}}
{{- $ms := 0 -}}
{{- range $i, $unit := list 3600000 60000 1000 1 -}}
{{- $ms = add $ms (mul (index $parts $i | default "0" | int64) $unit) -}}
{{- end -}}
{{- $ms -}}
{{- end -}}
