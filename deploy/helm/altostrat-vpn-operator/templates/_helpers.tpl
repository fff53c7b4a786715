{{- define "avo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "avo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "avo.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "avo.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "avo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "avo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "avo.labels" -}}
{{ include "avo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The operator image: repository@digest when a digest is set, else repository:tag. */}}
{{- define "avo.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Label matchers of the operator's series in the PrometheusRule's expressions. */}}
{{- define "avo.metricsSelector" -}}
{{- .Values.metrics.prometheusRule.selector | default (printf "job=%q, namespace=%q" (printf "%s-metrics" (include "avo.fullname" .)) .Release.Namespace) -}}
{{- end -}}

{{- define "avo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "avo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The Secret holding the operator's token: an existing one, the one the chart creates from
altostrat.token, or, with neither, a Secret of that same name (<fullname>-token, key token) that
the installer creates. A render against a cluster (helm install/upgrade, --dry-run=server) fails
when that Secret is missing; a render without one (helm template, scanners, Argo CD) cannot look
and renders, and the pod then waits in ContainerCreating with a FailedMount event naming it.
*/}}
{{- define "avo.tokenSecretName" -}}
{{- if .Values.altostrat.existingSecret -}}
{{- .Values.altostrat.existingSecret -}}
{{- else -}}
{{- $name := printf "%s-token" (include "avo.fullname" .) -}}
{{- if and (not .Values.altostrat.token) (lookup "v1" "Namespace" "" "kube-system") (not (lookup "v1" "Secret" .Release.Namespace $name)) -}}
{{- fail (printf "set altostrat.existingSecret (recommended) or altostrat.token, or create the Secret %s (key token) in %s: the operator needs an Altostrat API token" $name .Release.Namespace) -}}
{{- end -}}
{{- $name -}}
{{- end -}}
{{- end -}}

{{- define "avo.tokenSecretKey" -}}
{{- if .Values.altostrat.existingSecret -}}{{ .Values.altostrat.existingSecretKey }}{{- else -}}token{{- end -}}
{{- end -}}

{{- define "avo.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/* Rules on the operator's own kinds and on Secrets, shared by the ClusterRole and the
     per-namespace Roles. Secrets: get (credentialsSecretRef, and each profile Secret at resync),
     patch (the credentials-in-use finalizer), create/update/delete (a VpnPeer's
     spec.profileSecret). RBAC cannot limit these by label, and the names are the users': the
     ValidatingAdmissionPolicy of admission-policy.yaml limits the writes to the Secrets the
     operator labels as its own. No list or watch. */}}
{{- define "avo.resourceRules" -}}
- apiGroups: ["vpn.altostrat.io"]
  resources: ["vpninstances", "vpnpeers"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["vpn.altostrat.io"]
  resources: ["vpninstances/status", "vpnpeers/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["vpn.altostrat.io"]
  resources: ["vpninstances/finalizers", "vpnpeers/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "update", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* What stays cluster-wide even when watchNamespaces limits everything else to Roles: read
     access to the operator's own CRDs, which it compares with its schema at start-up (refusing
     to run against older ones), and the cluster-scoped objects it reads or writes. */}}
{{- define "avo.crdRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  resourceNames: ["ownershiprecords.vpn.altostrat.io", "vpncredentials.vpn.altostrat.io", "vpninstances.vpn.altostrat.io", "vpnpeers.vpn.altostrat.io"]
  verbs: ["get"]
# Ownership records are cluster-scoped, so even a namespace-scoped install needs them
# cluster-wide: every installation must see every record to never take another's object.
- apiGroups: ["vpn.altostrat.io"]
  resources: ["ownershiprecords"]
  verbs: ["get", "list", "create", "update", "delete"]
# Grants select namespaces by label; namespace labels are read cluster-wide.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
# Shared credentials (cluster-scoped): read, and their health written to status.
- apiGroups: ["vpn.altostrat.io"]
  resources: ["vpncredentials"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["vpn.altostrat.io"]
  resources: ["vpncredentials/status"]
  verbs: ["get", "patch", "update"]
{{- end -}}
