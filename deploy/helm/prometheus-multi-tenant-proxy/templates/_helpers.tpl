{{/* The chart's name, or nameOverride. */}}
{{- define "pmtp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every object: fullnameOverride, else the release name when it
already holds the chart's name (so the release "prometheus-multi-tenant-proxy"
names its objects exactly like deploy/kubernetes), else release-chart.
*/}}
{{- define "pmtp.fullname" -}}
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

{{- define "pmtp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object the chart templates. */}}
{{- define "pmtp.labels" -}}
helm.sh/chart: {{ include "pmtp.chart" . }}
{{ include "pmtp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: prometheus-multi-tenant-proxy
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* What the Service, PDB, NetworkPolicy and spread constraints select. */}}
{{- define "pmtp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pmtp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pmtp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pmtp.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pmtp.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Where Secrets and ConfigMaps the proxy reads as files are mounted. */}}
{{- define "pmtp.configDir" -}}/etc/prometheus-multi-tenant-proxy{{- end }}
{{- define "pmtp.secretsDir" -}}/etc/prometheus-multi-tenant-proxy-secrets{{- end }}
{{- define "pmtp.tenantsDir" -}}/etc/prometheus-multi-tenant-proxy-tenants{{- end }}

{{/*
The proxy's config.yaml: .Values.config (values.yaml holds the defaults,
which are deploy/kubernetes' ConfigMap; helm merges a user's config over
them key by key), then the keys the chart derives from other values: the
management port, the clusters with their kubeconfig Secrets, the files
taken from Secrets and ConfigMaps. A derived key wins over config.
*/}}
{{- define "pmtp.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $sd := include "pmtp.secretsDir" . }}
{{- $derived := dict "server" (dict "management_address" (printf ":%v" .Values.containerPorts.management)) }}
{{- if .Values.clusters }}
{{- $entries := list }}
{{- range $i, $c := .Values.clusters }}
{{- $e := omit $c "kubeconfigSecret" }}
{{- with $c.kubeconfigSecret }}
{{- $_ := set $e "kubeconfig" (printf "%s/kubeconfig-%d/%s" $sd $i (.key | default "kubeconfig")) }}
{{- end }}
{{- $entries = append $entries $e }}
{{- end }}
{{- if not $cfg.discovery }}
{{- $_ := set $cfg "discovery" dict }}
{{- end }}
{{- $_ := set $cfg.discovery "kubernetes" $entries }}
{{- end }}
{{- with .Values.secretFiles }}
{{- with .authKubeconfig }}
{{- $derived = mergeOverwrite $derived (dict "auth" (dict "kubernetes" (dict "kubeconfig" (printf "%s/auth-kubeconfig/%s" $sd (.key | default "kubeconfig"))))) }}
{{- end }}
{{- with .jwtPublicKeys }}
{{- $derived = mergeOverwrite $derived (dict "auth" (dict "jwt" (dict "public_key_file" (printf "%s/jwt-public-keys/%s" $sd (.key | default "keys.pem"))))) }}
{{- end }}
{{- with .apiKeys }}
{{- $derived = mergeOverwrite $derived (dict "auth" (dict "api_keys_file" (printf "%s/api-keys/%s" $sd (.key | default "api-keys")))) }}
{{- end }}
{{- with .jwtSecretKey }}
{{- $derived = mergeOverwrite $derived (dict "auth" (dict "jwt" (dict "secret_key_file" (printf "%s/jwt-secret-key/%s" $sd (.key | default "secret-key"))))) }}
{{- end }}
{{- with .cacheSigningKey }}
{{- $derived = mergeOverwrite $derived (dict "cache" (dict "signing_key_file" (printf "%s/cache-signing-key/%s" $sd (.key | default "signing-key")))) }}
{{- end }}
{{- with .redisPassword }}
{{- $derived = mergeOverwrite $derived (dict "cache" (dict "redis" (dict "password_file" (printf "%s/redis-password/%s" $sd (.key | default "password"))))) }}
{{- end }}
{{- with .redisSentinelPassword }}
{{- $derived = mergeOverwrite $derived (dict "cache" (dict "redis" (dict "sentinel_password_file" (printf "%s/redis-sentinel-password/%s" $sd (.key | default "password"))))) }}
{{- end }}
{{- with .redisTLS }}
{{- $tls := dict "ca_file" (printf "%s/redis-tls/ca.crt" $sd) }}
{{- if .clientCertificate }}
{{- $_ := set $tls "cert_file" (printf "%s/redis-tls/tls.crt" $sd) }}
{{- $_ := set $tls "key_file" (printf "%s/redis-tls/tls.key" $sd) }}
{{- end }}
{{- $derived = mergeOverwrite $derived (dict "cache" (dict "redis" (dict "tls_enabled" true "tls_config" $tls))) }}
{{- end }}
{{- with .serverTLS }}
{{- $tls := dict "cert_file" (printf "%s/server-tls/tls.crt" $sd) "key_file" (printf "%s/server-tls/tls.key" $sd) }}
{{- if .clientCA }}
{{- $_ := set $tls "client_ca_file" (printf "%s/server-tls/ca.crt" $sd) }}
{{- end }}
{{- $derived = mergeOverwrite $derived (dict "server" (dict "tls" $tls)) }}
{{- end }}
{{- end }}
{{- if .Values.tenantFiles.configMaps }}
{{- $files := list }}
{{- range .Values.tenantFiles.configMaps }}
{{- $files = append $files (printf "%s/%s/*.yaml" (include "pmtp.tenantsDir" $) .) }}
{{- end }}
{{- $derived = mergeOverwrite $derived (dict "tenants" (dict "files" (concat (($cfg.tenants | default dict).files | default list) $files))) }}
{{- end }}
{{- toYaml (mergeOverwrite $cfg $derived) }}
{{- end }}

{{/*
The Secrets the proxy reads as files, as a YAML list of {volume,
secretName, dir}: each is mounted at secretsDir/dir.
*/}}
{{- define "pmtp.secretMounts" -}}
{{- $out := list }}
{{- range $i, $c := .Values.clusters }}
{{- with $c.kubeconfigSecret }}
{{- $out = append $out (dict "volume" (printf "kubeconfig-%d" $i) "secretName" .secretName "dir" (printf "kubeconfig-%d" $i)) }}
{{- end }}
{{- end }}
{{- $dirs := dict "authKubeconfig" "auth-kubeconfig" "jwtPublicKeys" "jwt-public-keys" "apiKeys" "api-keys" "cacheSigningKey" "cache-signing-key" "jwtSecretKey" "jwt-secret-key" "redisPassword" "redis-password" "redisSentinelPassword" "redis-sentinel-password" "redisTLS" "redis-tls" "serverTLS" "server-tls" }}
{{- range $k, $dir := $dirs }}
{{- with (get $.Values.secretFiles $k) }}
{{- $out = append $out (dict "volume" $dir "secretName" .secretName "dir" $dir) }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}
