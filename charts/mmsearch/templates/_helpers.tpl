{{/*
Names. Every helper is prefixed with the chart name.
*/}}
{{- define "mmsearch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mmsearch.fullname" -}}
{{- $full := "" -}}
{{- if .Values.fullnameOverride -}}
{{- $full = .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- $full = .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $full = printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- /* Services need DNS-1035 labels: a name that starts with a digit renders, then the API server refuses it. */ -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $full) -}}
{{- fail (printf "the object names would start with %q (release name %q, fullnameOverride %q, nameOverride %q), which is not a DNS-1035 label: use lowercase letters, digits and '-', starting with a letter (a release name like that, or set fullnameOverride)" $full .Release.Name .Values.fullnameOverride .Values.nameOverride) -}}
{{- end -}}
{{- $full -}}
{{- end -}}

{{/* The name of one component's objects: mmsearch.componentName (dict "root" $ "component" "serving") */}}
{{- define "mmsearch.componentName" -}}
{{- printf "%s-%s" (include "mmsearch.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{- define "mmsearch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component (immutable: never add to these). */}}
{{- define "mmsearch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mmsearch.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every label of one component's objects. */}}
{{- define "mmsearch.labels" -}}
helm.sh/chart: {{ include "mmsearch.chart" .root }}
{{ include "mmsearch.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: mmsearch
{{- end -}}

{{/* Pod template labels: the component's labels plus podLabels. */}}
{{- define "mmsearch.podLabels" -}}
{{ include "mmsearch.labels" . }}
{{- with .root.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
An image reference from a component's image block, falling back to the chart's
`image` (repository, tag = appVersion). A digest wins over the tag.
Call: mmsearch.image (dict "root" $ "image" .Values.serving.image)
*/}}
{{- define "mmsearch.image" -}}
{{- $base := .root.Values.image -}}
{{- $img := .image | default dict -}}
{{- $repo := $img.repository | default $base.repository -}}
{{- $digest := $img.digest | default (ternary "" $base.digest (hasKey $img "repository")) -}}
{{- $tag := $img.tag | default (ternary .root.Chart.AppVersion $base.tag (empty $base.tag)) -}}
{{- if $digest -}}
{{- printf "%s@%s" $repo $digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{- define "mmsearch.imagePullPolicy" -}}
{{- (.image | default dict).pullPolicy | default .root.Values.image.pullPolicy -}}
{{- end -}}

{{- define "mmsearch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mmsearch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mmsearch.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "mmsearch.componentName" (dict "root" . "component" "operator")) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Pod-level scheduling and security shared by every Deployment. Call with (dict "root" $ "values" .Values.serving). */}}
{{- define "mmsearch.podScheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "mmsearch.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "mmsearch.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/*
Settings every service shares (services.common.settings.ServiceSettings).
The metrics server is separate for the gRPC services only: web serves /metrics
on its HTTP port (services/web/settings.py).
*/}}
{{- define "mmsearch.commonEnv" -}}
{{- if and (hasKey .values "metricsPort") (eq (int .values.port) (int .values.metricsPort)) -}}
{{- fail (printf "%s.port and %s.metricsPort are both %v: a service and its /metrics server need two different ports" .component .component .values.port) -}}
{{- end -}}
- name: MMSEARCH_HOST
  value: "0.0.0.0"
- name: MMSEARCH_PORT
  value: {{ .values.port | quote }}
{{- if hasKey .values "metricsPort" }}
- name: MMSEARCH_METRICS_HOST
  value: "0.0.0.0"
- name: MMSEARCH_METRICS_PORT
  value: {{ .values.metricsPort | quote }}
{{- end }}
{{- if ne .component "web" }}
- name: MMSEARCH_REFLECTION
  value: {{ .root.Values.grpcReflection | quote }}
{{- end }}
- name: MMSEARCH_LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
- name: MMSEARCH_LOG_JSON
  value: {{ .root.Values.logJson | quote }}
- name: MMSEARCH_GRACE_SECONDS
  value: {{ .root.Values.graceSeconds | quote }}
{{- with .root.Values.tracing }}
{{- if .otlpEndpoint }}
{{- /* The standard variables: services/runtime/tracing.py turns tracing on from them. */}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .otlpEndpoint | quote }}
- name: OTEL_EXPORTER_OTLP_INSECURE
  value: {{ .insecure | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "%s-%s" (include "mmsearch.fullname" $.root) $.component | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.namespace=%s" $.root.Release.Namespace | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .sampleRatio | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
S3 access to the model repository (services.common.artifacts reads
MMSEARCH_S3_ENDPOINT_URL and the standard AWS_* variables; so does Triton).
*/}}
{{- define "mmsearch.s3Env" -}}
{{- $s3 := .Values.modelRepository.s3 -}}
{{- if $s3.endpointUrl }}
- name: MMSEARCH_S3_ENDPOINT_URL
  value: {{ $s3.endpointUrl | quote }}
{{- end }}
- name: AWS_DEFAULT_REGION
  value: {{ $s3.region | quote }}
{{- if $s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $s3.existingSecret }}
      key: {{ $s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s3.existingSecret }}
      key: {{ $s3.secretAccessKeyKey }}
{{- end }}
{{- end -}}

{{/* One exported model's folder in the repository: REPO/NAME. */}}
{{- define "mmsearch.modelFolder" -}}
{{- printf "%s/%s" (trimSuffix "/" .root.Values.modelRepository.uri) .name -}}
{{- end -}}

{{/* MMSEARCH_MODELS for preprocess: a JSON object {name: REPO/NAME}. */}}
{{- define "mmsearch.preprocessModels" -}}
{{- $root := . -}}
{{- $models := dict -}}
{{- range .Values.modelRepository.models -}}
{{- $_ := set $models . (include "mmsearch.modelFolder" (dict "root" $root "name" .)) -}}
{{- end -}}
{{- toJson $models -}}
{{- end -}}

{{/*
Triton's --model-repository. Triton names a custom S3 endpoint inside the URI:
s3://host:port/bucket/prefix (plain HTTP) or s3://https://host:port/bucket/prefix.
*/}}
{{- define "mmsearch.tritonRepository" -}}
{{- $uri := trimSuffix "/" .Values.modelRepository.uri -}}
{{- $endpoint := .Values.modelRepository.s3.endpointUrl -}}
{{- if and $endpoint (hasPrefix "s3://" $uri) -}}
{{- $u := urlParse $endpoint -}}
{{- $scheme := ternary "https://" "" (eq $u.scheme "https") -}}
{{- printf "s3://%s%s/%s" $scheme $u.host (trimPrefix "s3://" $uri) -}}
{{- else -}}
{{- $uri -}}
{{- end -}}
{{- end -}}

{{/* Addresses the chart wires between components. */}}
{{- define "mmsearch.preprocessAddress" -}}
{{- printf "%s:%v" (include "mmsearch.componentName" (dict "root" . "component" "preprocess")) .Values.preprocess.port -}}
{{- end -}}

{{- define "mmsearch.servingAddress" -}}
{{- printf "%s:%v" (include "mmsearch.componentName" (dict "root" . "component" "serving")) .Values.serving.port -}}
{{- end -}}

{{/*
The gRPC targets of web -> serving and serving -> preprocess: their headless Services through gRPC's DNS
resolver, which gives every ready pod's address; the clients balance round robin over them
(mmsearch.core.channels). A ClusterIP Service would pin each client connection to one pod.
*/}}
{{- define "mmsearch.preprocessTarget" -}}
{{- printf "dns:///%s:%v" (include "mmsearch.componentName" (dict "root" . "component" "preprocess-headless")) .Values.preprocess.port -}}
{{- end -}}

{{- define "mmsearch.servingTarget" -}}
{{- printf "dns:///%s:%v" (include "mmsearch.componentName" (dict "root" . "component" "serving-headless")) .Values.serving.port -}}
{{- end -}}

{{/* A headless Service (<name>-headless) over a gRPC component's pods, its gRPC port only: (dict "root" $ "component" "serving" "values" .Values.serving) */}}
{{- define "mmsearch.headlessService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "mmsearch.componentName" (dict "root" .root "component" (printf "%s-headless" .component)) }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "mmsearch.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  clusterIP: None
  selector:
    {{- include "mmsearch.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ .values.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
{{- end -}}

{{- define "mmsearch.tritonAddress" -}}
{{- printf "%s:%v" (include "mmsearch.componentName" (dict "root" . "component" "triton")) .Values.triton.ports.grpc -}}
{{- end -}}

{{/* Milvus: the subchart's service when enabled, else externalMilvus. */}}
{{- define "mmsearch.milvusEnv" -}}
- name: MMSEARCH_MILVUS_URI
{{- if .Values.milvus.enabled }}
  value: {{ printf "http://%s-milvus:19530" .Release.Name | quote }}
{{- else }}
  value: {{ .Values.externalMilvus.uri | quote }}
{{- if .Values.externalMilvus.existingSecret }}
- name: MMSEARCH_MILVUS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalMilvus.existingSecret }}
      key: {{ .Values.externalMilvus.tokenKey }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
MongoDB: with the subchart, the URI is composed from the root password in the
Secret the subchart creates ($(VAR) expansion of an earlier variable); else
externalMongodb (the whole URI from existingSecret when set).
*/}}
{{- define "mmsearch.mongodbEnv" -}}
{{- if .Values.mongodb.enabled }}
- name: MONGODB_ROOT_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ printf "%s-mongodb" .Release.Name }}
      key: mongodb-root-password
- name: MMSEARCH_MONGO_URI
  value: {{ printf "mongodb://root:$(MONGODB_ROOT_PASSWORD)@%s-mongodb:27017/?authSource=admin" .Release.Name | quote }}
{{- else if .Values.externalMongodb.existingSecret }}
- name: MMSEARCH_MONGO_URI
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalMongodb.existingSecret }}
      key: {{ .Values.externalMongodb.uriKey }}
{{- else }}
- name: MMSEARCH_MONGO_URI
  value: {{ .Values.externalMongodb.uri | quote }}
{{- end }}
{{- end -}}

{{/* Writable scratch space: the root filesystem is read-only. */}}
{{- define "mmsearch.scratchVolumes" -}}
- name: tmp
  emptyDir: {}
- name: cache
  emptyDir: {}
{{- end -}}

{{- define "mmsearch.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /var/cache/mmsearch
{{- end -}}

{{/* A PodDisruptionBudget for one component: (dict "root" $ "component" "serving" "values" .Values.serving) */}}
{{- define "mmsearch.pdb" -}}
{{- $pdb := .values.podDisruptionBudget -}}
{{- if and (hasKey $pdb "minAvailable") (hasKey $pdb "maxUnavailable") -}}
{{- fail (printf "%s.podDisruptionBudget: set minAvailable or maxUnavailable, not both" .component) -}}
{{- end -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "mmsearch.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "mmsearch.labels" . | nindent 4 }}
spec:
  {{- if hasKey $pdb "minAvailable" }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ hasKey $pdb "maxUnavailable" | ternary $pdb.maxUnavailable 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "mmsearch.selectorLabels" . | nindent 6 }}
{{- end -}}

{{/* A HorizontalPodAutoscaler (autoscaling/v2) for one component's Deployment. */}}
{{- define "mmsearch.hpa" -}}
{{- $as := .values.autoscaling -}}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) -}}
{{- fail (printf "%s.autoscaling: minReplicas (%v) is above maxReplicas (%v)" .component $as.minReplicas $as.maxReplicas) -}}
{{- end -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "mmsearch.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "mmsearch.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "mmsearch.componentName" . }}
  minReplicas: {{ $as.minReplicas }}
  maxReplicas: {{ $as.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $as.targetCPUUtilizationPercentage }}
{{- end -}}

{{/*
The experiment config as serving reads it. Each scene's `defaults.encoder_backend`
follows triton.enabled (triton | embedded) unless the values set it. Checked here,
at install time: no arm asks for Triton when it is disabled, and every query model
is one the release loads (modelRepository.models: preprocess and Triton load those).
*/}}
{{- define "mmsearch.defaultExperiments" -}}
scenes:
  t2t:
    modality: text
    defaults:
      query:
        text: {model: minilm}
      match: {collection: t2t, top_k: 10, candidates: 50, metric: IP}
      rank: {name: score_order}
      summary: {database: mmsearch, collection: t2t, fields: [question, answer, category]}
    layers: []
{{- end -}}

{{- define "mmsearch.experiments" -}}
{{- $root := . -}}
{{- $given := .Values.serving.experiments -}}
{{- if kindIs "invalid" $given -}}
{{- $given = include "mmsearch.defaultExperiments" . | fromYaml -}}
{{- end -}}
{{- $exp := deepCopy $given -}}
{{- $backend := ternary "triton" "embedded" .Values.triton.enabled -}}
{{- range $scene, $def := $exp.scenes -}}
{{- $defaults := $def.defaults | default dict -}}
{{- if not (hasKey $defaults "encoder_backend") -}}
{{- $_ := set $defaults "encoder_backend" $backend -}}
{{- end -}}
{{- $_ := set $def "defaults" $defaults -}}
{{- $specs := list (dict "where" (printf "scenes.%s.defaults" $scene) "spec" $defaults) -}}
{{- range $layer := $def.layers | default list -}}
{{- range $arm := $layer.arms | default list -}}
{{- $specs = append $specs (dict "where" (printf "scenes.%s.layers[%s].arms[%s].overrides" $scene $layer.name $arm.name) "spec" ($arm.overrides | default dict)) -}}
{{- end -}}
{{- end -}}
{{- range $specs -}}
{{- if and (not $root.Values.triton.enabled) (eq (toString (.spec.encoder_backend | default "")) "triton") -}}
{{- fail (printf "serving.experiments.%s asks for encoder_backend: triton but triton.enabled is false" .where) -}}
{{- end -}}
{{- $where := .where -}}
{{- range $kind, $tower := (.spec.query | default dict) -}}
{{- range $key := list "model" "preprocess_model" -}}
{{- $model := index ($tower | default dict) $key -}}
{{- if and $model (not (has $model $root.Values.modelRepository.models)) -}}
{{- fail (printf "serving.experiments.%s.query.%s.%s is %q, not one of modelRepository.models %v (preprocess and Triton load only those)" $where $kind $key $model $root.Values.modelRepository.models) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $exp -}}
{{- end -}}

{{/*
A/B outcomes in serving (services/serving/config/settings.py): impressions on or off, the
feedback key (and user-id salt) from a Secret (feedback.existingSecret, else the chart's
signing-keys Secret: templates/signing-keys.yaml), the token and event TTLs, the database.
*/}}
{{- define "mmsearch.feedbackServingEnv" -}}
{{- $f := .Values.feedback -}}
{{- if gt (int $f.tokenTtlSeconds) (mul (int $f.eventsTtlDays) 86400) }}
{{- fail (printf "feedback.tokenTtlSeconds (%v) outlives the events it refers to (feedback.eventsTtlDays: %v)" $f.tokenTtlSeconds $f.eventsTtlDays) -}}
{{- end }}
- name: MMSEARCH_IMPRESSIONS
  value: {{ $f.enabled | quote }}
{{- if $f.enabled }}
{{- if $f.existingSecret }}
- name: MMSEARCH_FEEDBACK_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $f.existingSecret }}
      key: {{ $f.keyKey }}
- name: MMSEARCH_USER_HASH_SALT
  valueFrom:
    secretKeyRef:
      name: {{ $f.existingSecret }}
      key: {{ $f.saltKey }}
      optional: true
{{- else }}
- name: MMSEARCH_FEEDBACK_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "mmsearch.signingKeysName" . }}
      key: feedback-key
{{- end }}
- name: MMSEARCH_FEEDBACK_TTL_SECONDS
  value: {{ $f.tokenTtlSeconds | quote }}
- name: MMSEARCH_EVENTS_TTL_DAYS
  value: {{ $f.eventsTtlDays | quote }}
- name: MMSEARCH_EVENTS_DATABASE
  value: {{ $f.database | quote }}
{{- end }}
{{- end -}}

{{/*
Paging in serving (services/serving/config/settings.py): the page depth, and the page-token
key from a Secret (serving.paging.existingSecret, else the chart's signing-keys Secret; never a
value: a key in values.yaml would sit in the release's history).
*/}}
{{- define "mmsearch.pagingEnv" -}}
{{- $p := .Values.serving.paging -}}
- name: MMSEARCH_MAX_PAGE_DEPTH
  value: {{ $p.maxDepth | quote }}
- name: MMSEARCH_PAGE_TOKEN_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $p.existingSecret | default (include "mmsearch.signingKeysName" .) }}
      key: {{ ternary $p.tokenKey "page-token-key" (not (empty $p.existingSecret)) }}
{{- end -}}

{{/* The feedback endpoint's rate limit in web (services/web/settings.py). */}}
{{- define "mmsearch.feedbackWebEnv" -}}
{{- $f := .Values.feedback -}}
- name: MMSEARCH_FEEDBACK_RATE_PER_SECOND
  value: {{ $f.ratePerSecond | quote }}
- name: MMSEARCH_FEEDBACK_BURST
  value: {{ $f.burst | quote }}
{{- end -}}

{{/*
A container's env: the chart's variables (rendered text) then the user's `<component>.env`
entries. A user entry may not repeat a variable the chart sets (two entries with one name:
which one wins is up to the kubelet), nor repeat itself.
Call: mmsearch.withUserEnv (dict "component" "serving" "chart" (include "mmsearch.servingEnv" .) "user" .Values.serving.env)
*/}}
{{- define "mmsearch.withUserEnv" -}}
{{- $component := .component -}}
{{- $names := list -}}
{{- range (fromYamlArray .chart) -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- range $i, $e := .user | default list -}}
{{- if has $e.name $names -}}
{{- fail (printf "%s.env[%d]: %s is set by the chart already (or earlier in %s.env); set it through the chart's values, not env" $component $i $e.name $component) -}}
{{- end -}}
{{- $names = append $names $e.name -}}
{{- end -}}
{{ .chart | trim }}
{{- with .user }}
{{ toYaml . }}
{{- end }}
{{- end -}}
