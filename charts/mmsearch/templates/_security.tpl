{{/*
Who may call and how the hops are protected: API keys (access.*), the signing keys of page and
feedback tokens, TLS (tls.*). Every secret comes from a Secret; none is ever a value.
*/}}

{{/* Where the chart mounts what web, serving and preprocess read (folders: the kubelet swaps their files on rotation). */}}
{{- define "mmsearch.tlsDir" -}}/etc/mmsearch/tls{{- end -}}
{{- define "mmsearch.keysDir" -}}/etc/mmsearch/access{{- end -}}
{{- define "mmsearch.relayDir" -}}/etc/mmsearch/relay{{- end -}}

{{/* The Secret the chart generates for the signing keys: <fullname>-signing-keys. */}}
{{- define "mmsearch.signingKeysName" -}}
{{- include "mmsearch.componentName" (dict "root" . "component" "signing-keys") -}}
{{- end -}}

{{/* Whether the chart generates that Secret: some signing key has no Secret of the user's. */}}
{{- define "mmsearch.generatesSigningKeys" -}}
{{- if or (not .Values.serving.paging.existingSecret) (and .Values.feedback.enabled (not .Values.feedback.existingSecret)) -}}true{{- end -}}
{{- end -}}

{{/*
The key file's Secret and web's relay key Secret. Keys on (access.existingSecret) needs web's relay key:
without it serving would see every caller as anonymous.
*/}}
{{- define "mmsearch.relaySecret" -}}
{{- .Values.access.relayKey.existingSecret | default .Values.access.existingSecret -}}
{{- end -}}

{{/* MMSEARCH_* access settings of web, serving or the writer: (dict "root" $ "component" "web") */}}
{{- define "mmsearch.accessEnv" -}}
{{- $a := .root.Values.access -}}
- name: MMSEARCH_ANONYMOUS_SCENES
  value: {{ $a.anonymousScenes | quote }}
{{- if $a.existingSecret }}
- name: MMSEARCH_API_KEYS_FILE
  value: {{ printf "%s/%s" (include "mmsearch.keysDir" .) $a.keyFileKey | quote }}
{{- end }}
{{- if eq .component "web" }}
{{- if $a.existingSecret }}
- name: MMSEARCH_SERVING_KEY_FILE
  value: {{ printf "%s/%s" (include "mmsearch.relayDir" .) $a.relayKey.key | quote }}
{{- end }}
{{- if $a.trustedProxies }}
- name: MMSEARCH_TRUSTED_PROXIES
  value: {{ join "," $a.trustedProxies | quote }}
{{- end }}
{{- if $a.clientIpHeader }}
- name: MMSEARCH_CLIENT_IP_HEADER
  value: {{ $a.clientIpHeader | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* MMSEARCH_TLS_* of one component: (dict "root" $ "component" "serving"). */}}
{{- define "mmsearch.tlsEnv" -}}
{{- $t := .root.Values.tls -}}
{{- if $t.enabled }}
{{- $dir := include "mmsearch.tlsDir" . }}
- name: MMSEARCH_TLS_CERT_FILE
  value: {{ printf "%s/tls.crt" $dir | quote }}
- name: MMSEARCH_TLS_KEY_FILE
  value: {{ printf "%s/tls.key" $dir | quote }}
- name: MMSEARCH_TLS_CA_FILE
  value: {{ printf "%s/ca.crt" $dir | quote }}
{{- if ne .component "web" }}
- name: MMSEARCH_TLS_CLIENT_AUTH
  value: {{ $t.mutual | quote }}
{{- else }}
- name: MMSEARCH_HTTPS
  value: {{ $t.web.https | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The Secret holding one component's certificate: tls.<component>.existingSecret, else the Secret of
the Certificate the chart asks cert-manager for. (dict "root" $ "component" "serving")
*/}}
{{- define "mmsearch.tlsSecret" -}}
{{- $t := .root.Values.tls -}}
{{- $own := (index $t .component).existingSecret -}}
{{- if $own -}}
{{- $own -}}
{{- else if $t.certManager.issuerRef.name -}}
{{- printf "%s-tls" (include "mmsearch.componentName" .) -}}
{{- else -}}
{{- fail (printf "tls.enabled is true but %s has no certificate: set tls.%s.existingSecret (a Secret with tls.crt, tls.key and ca.crt) or tls.certManager.issuerRef.name (a cert-manager CA issuer)" .component .component) -}}
{{- end -}}
{{- end -}}

{{/* Values that cannot work together, refused at render. */}}
{{- define "mmsearch.checkSecurity" -}}
{{- $t := .Values.tls -}}
{{- if and $t.mutual (not $t.enabled) -}}
{{- fail "tls.mutual is true but tls.enabled is false: mutual TLS needs TLS (set tls.enabled=true)" -}}
{{- end -}}
{{- if and $t.web.https (not $t.enabled) -}}
{{- fail "tls.web.https is true but tls.enabled is false: HTTPS needs web's certificate (set tls.enabled=true)" -}}
{{- end -}}
{{- end -}}

{{/* One component's certificate Secret as the volume `tls` (only the three files cert-manager writes). */}}
{{- define "mmsearch.tlsVolume" -}}
- name: tls
  secret:
    secretName: {{ include "mmsearch.tlsSecret" . }}
    defaultMode: 0440
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      - {key: ca.crt, path: ca.crt}
{{- end -}}

{{/* Volumes of web, serving, preprocess, the writer or Triton: (dict "root" $ "component" "web"). */}}
{{- define "mmsearch.securityVolumes" -}}
{{- $a := .root.Values.access -}}
{{- if .root.Values.tls.enabled }}
{{ include "mmsearch.tlsVolume" . }}
{{- end }}
{{- if and $a.existingSecret (has .component (list "web" "serving" "writer")) }}
- name: api-keys
  secret:
    secretName: {{ $a.existingSecret }}
    defaultMode: 0440
    items:
      - {key: {{ $a.keyFileKey }}, path: {{ $a.keyFileKey }}}
{{- if eq .component "web" }}
- name: relay-key
  secret:
    secretName: {{ include "mmsearch.relaySecret" .root }}
    defaultMode: 0440
    items:
      - {key: {{ $a.relayKey.key }}, path: {{ $a.relayKey.key }}}
{{- end }}
{{- end }}
{{- end -}}

{{/* Their mounts: read-only folders, never subPath (a subPath mount never sees a rotation). */}}
{{- define "mmsearch.securityMounts" -}}
{{- $a := .root.Values.access -}}
{{- if .root.Values.tls.enabled }}
- name: tls
  mountPath: {{ include "mmsearch.tlsDir" . }}
  readOnly: true
{{- end }}
{{- if and $a.existingSecret (has .component (list "web" "serving" "writer")) }}
- name: api-keys
  mountPath: {{ include "mmsearch.keysDir" . }}
  readOnly: true
{{- if eq .component "web" }}
- name: relay-key
  mountPath: {{ include "mmsearch.relayDir" . }}
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{/*
The probes of a gRPC service (preprocess, serving): the kubelet's gRPC probe on its port, or, with TLS
(which that probe cannot speak), HTTP on its metrics port: /readyz (SERVING) for startup and readiness,
/healthz (the process answers) for liveness. (dict "root" $ "values" .Values.serving "livenessFailures" 6)
*/}}
{{- define "mmsearch.grpcProbes" -}}
{{- $v := .values -}}
{{- $tls := .root.Values.tls.enabled -}}
{{- range $kind := list "startupProbe" "readinessProbe" "livenessProbe" }}
{{ $kind }}:
  {{- if $tls }}
  httpGet:
    path: {{ ternary "/healthz" "/readyz" (eq $kind "livenessProbe") }}
    port: metrics
  timeoutSeconds: 2
  {{- else }}
  grpc:
    port: {{ $v.port }}
  {{- end }}
  {{- if eq $kind "startupProbe" }}
  periodSeconds: {{ $v.startupProbe.periodSeconds }}
  failureThreshold: {{ $v.startupProbe.failureThreshold }}
  {{- else if eq $kind "readinessProbe" }}
  periodSeconds: 5
  failureThreshold: 2
  {{- else }}
  periodSeconds: 10
  failureThreshold: {{ $.livenessFailures }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* The DNS names a component's certificate must carry: its Services, short and namespaced. */}}
{{- define "mmsearch.tlsDnsNames" -}}
{{- $names := list (include "mmsearch.componentName" .) -}}
{{- if has .component (list "serving" "preprocess") -}}
{{- $names = append $names (include "mmsearch.componentName" (dict "root" .root "component" (printf "%s-headless" .component))) -}}
{{- end -}}
{{- $out := list -}}
{{- range $names -}}
{{- $out = concat $out (list . (printf "%s.%s" . $.root.Release.Namespace) (printf "%s.%s.svc" . $.root.Release.Namespace)) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}
