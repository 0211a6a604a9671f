{{/* Names, labels and the pieces every pod shares. */}}

{{- define "appliance.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "appliance.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "appliance.labels" -}}
{{ include "appliance.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "appliance.image" -}}
{{- $v := .Values -}}
{{- if not $v.global.imageRegistry }}{{ fail "global.imageRegistry is required: the site's registry holding the appliance image" }}{{ end -}}
{{- if not (regexMatch "^sha256:[a-f0-9]{64}$" $v.image.digest) }}{{ fail "image.digest is required: sha256:<64 hex> of the loaded image (tags are never used)" }}{{ end -}}
{{- printf "%s/%s@%s" $v.global.imageRegistry $v.image.repository $v.image.digest -}}
{{- end -}}

{{- define "appliance.dataClaim" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-data" (include "appliance.fullname" .)) -}}
{{- end -}}

{{/* Paths inside every pod: the data volume, the Secrets and the policy pack. */}}
{{- define "appliance.paths" -}}
data: /var/lib/appliance
trust: /etc/appliance/trust
keys: /var/run/appliance/keys
policy: /etc/appliance/policies
home: /home/appliance
tls: /etc/appliance/tls
rayCa: /etc/appliance/ray-ca
rayTls: /var/run/appliance/ray-tls
{{- end -}}

{{- define "appliance.policyFiles" -}}
{{- if .Values.policy.existingConfigMap -}}
{{- if not .Values.policy.files }}{{ fail "policy.files must list the file names held by policy.existingConfigMap" }}{{ end -}}
{{- toJson .Values.policy.files -}}
{{- else -}}
{{- $names := list -}}
{{- range $path, $_ := .Files.Glob "policies/*.{yaml,yml,sig}" }}{{ $names = append $names (base $path) }}{{ end -}}
{{- toJson $names -}}
{{- end -}}
{{- end -}}

{{- define "appliance.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "appliance.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The environment of every container: the appliance's settings, Ray's air-gap settings. */}}
{{- define "appliance.env" -}}
{{- $p := include "appliance.paths" . | fromYaml -}}
- name: HOME
  value: {{ $p.home }}
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: APPLIANCE_DATA_DIR
  value: {{ $p.data }}
- name: APPLIANCE_TRUST_DIR
  value: {{ $p.trust }}
- name: APPLIANCE_KEYS_DIR
  value: {{ $p.keys }}
- name: APPLIANCE_POLICY_DIR
  value: {{ $p.policy }}
- name: APPLIANCE_LOG_FORMAT
  value: json
{{- with .Values.database.urlSecret }}
- name: APPLIANCE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.database.urlSecretKey }}
{{- end }}
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
- name: RAY_USAGE_STATS_REPORT_URL
  value: http://127.0.0.1:9/
- name: RAY_ENABLE_UV_RUN_RUNTIME_ENV
  value: "0"
- name: HF_HUB_OFFLINE
  value: "1"
{{- end -}}

{{/* Where Ray and the appliance may write: nothing else is writable. */}}
{{- define "appliance.volumeMounts" -}}
{{- $p := include "appliance.paths" . | fromYaml -}}
- name: data
  mountPath: {{ $p.data }}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: {{ $p.home }}
- name: ray-bootstrap
  mountPath: {{ $p.home }}/ray_bootstrap_config.yaml
  subPath: ray_bootstrap_config.yaml
  readOnly: true
- name: trust
  mountPath: {{ $p.trust }}
  readOnly: true
- name: keys
  mountPath: {{ $p.keys }}
- name: audit-key
  mountPath: {{ $p.keys }}/audit.key
  subPath: audit.key
  readOnly: true
- name: policy-dir
  mountPath: {{ $p.policy }}
{{- range (include "appliance.policyFiles" . | fromJsonArray) }}
- name: policy
  mountPath: {{ $p.policy }}/{{ . }}
  subPath: {{ . }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "appliance.volumes" -}}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "appliance.dataClaim" . }}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
- name: keys
  emptyDir: {medium: Memory, sizeLimit: 1Mi}
- name: policy-dir
  emptyDir: {sizeLimit: 1Mi}
- name: ray-bootstrap
  configMap:
    name: {{ include "appliance.fullname" . }}-ray
- name: trust
  secret:
    secretName: {{ .Values.secrets.trustKeys }}
    defaultMode: 0440
- name: audit-key
  secret:
    secretName: {{ .Values.secrets.auditKey }}
    defaultMode: 0440
    items:
      - key: audit.key
        path: audit.key
- name: policy
  configMap:
    name: {{ .Values.policy.existingConfigMap | default (printf "%s-policy" (include "appliance.fullname" .)) }}
{{- if eq .Values.tls.termination "front" }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
    defaultMode: 0440
- name: tls-peer
  secret:
    secretName: {{ .Values.tls.peerSecretName }}
    defaultMode: 0440
    items:
      - key: tls-front.secret
        path: tls-front.secret
{{- end }}
{{- if eq .Values.rayTLS.mode "secret" }}
- name: ray-ca
  secret:
    secretName: {{ .Values.rayTLS.caSecretName }}
    defaultMode: 0440
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
- name: ray-pod-tls
  emptyDir: {medium: Memory, sizeLimit: 1Mi}
{{- end }}
{{- end -}}

{{/* rayTLS.mode=secret: what a Ray container (and KubeRay's wait-gcs-ready, a copy of it) adds: Ray's
mutual TLS from the pod's own certificate. Never the CA key: only the ray-tls-cert init container mounts it. */}}
{{- define "appliance.rayTLSEnv" -}}
{{- if eq .Values.rayTLS.mode "secret" -}}
{{- $p := include "appliance.paths" . | fromYaml -}}
- name: RAY_USE_TLS
  value: "1"
- name: RAY_TLS_SERVER_CERT
  value: {{ $p.rayTls }}/node.crt
- name: RAY_TLS_SERVER_KEY
  value: {{ $p.rayTls }}/node.key
- name: RAY_TLS_CA_CERT
  value: {{ $p.rayTls }}/ca.crt
{{- end -}}
{{- end -}}

{{- define "appliance.rayTLSMounts" -}}
{{- if eq .Values.rayTLS.mode "secret" -}}
- name: ray-pod-tls
  mountPath: {{ (include "appliance.paths" . | fromYaml).rayTls }}
  readOnly: true
{{- end -}}
{{- end -}}

{{/* rayTLS.mode=secret: the init container that issues this pod's certificate (its pod IP and, from
KubeRay's FQ_RAY_IP, the head Service's name) from the site's CA Secret, before any Ray process starts. */}}
{{- define "appliance.rayTLSCertContainer" -}}
{{- if eq .Values.rayTLS.mode "secret" -}}
{{- $p := include "appliance.paths" . | fromYaml -}}
- name: ray-tls-cert
  image: {{ include "appliance.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: [appliance, cluster, pod-cert, --ca, {{ $p.rayCa }}, --out, {{ $p.rayTls }}, --address, $(POD_IP), --name, $(FQ_RAY_IP)]
  terminationMessagePolicy: FallbackToLogsOnError
  securityContext:
    {{- include "appliance.containerSecurityContext" . | nindent 4 }}
  env:
    {{- include "appliance.env" . | nindent 4 }}
    - name: POD_IP
      valueFrom:
        fieldRef: {fieldPath: status.podIP}
  volumeMounts:  # only what issuing needs: no data volume, audit key or trust keys beside the CA key
    - name: tmp
      mountPath: /tmp
    - name: home
      mountPath: {{ $p.home }}
    - name: ray-ca
      mountPath: {{ $p.rayCa }}
      readOnly: true
    - name: ray-pod-tls
      mountPath: {{ $p.rayTls }}
  resources:
    requests: {cpu: 100m, memory: 128Mi}
    limits: {cpu: 500m, memory: 256Mi}
{{- end -}}
{{- end -}}

{{/* TLS front mode: the certificate Secret and the peer-header key, in the front and the gateways. */}}
{{- define "appliance.tlsMounts" -}}
{{- $p := include "appliance.paths" . | fromYaml -}}
- name: tls
  mountPath: {{ $p.tls }}
  readOnly: true
- name: tls-peer
  mountPath: {{ $p.keys }}/tls-front.secret
  subPath: tls-front.secret
  readOnly: true
{{- end -}}

{{/* The TLS front sidecar of a worker pod: TLS on tls.port, relayed to Serve's proxy in the same pod. */}}
{{- define "appliance.tlsFront" -}}
{{- $p := include "appliance.paths" . | fromYaml -}}
- name: tls-front
  image: {{ include "appliance.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: [appliance, tls, front, --upstream, {{ .Values.serve.port | quote }}]
  terminationMessagePolicy: FallbackToLogsOnError
  securityContext:
    {{- include "appliance.containerSecurityContext" . | nindent 4 }}
  env:
    {{- include "appliance.env" . | nindent 4 }}
    - name: APPLIANCE_HOST
      value: 0.0.0.0
    - name: APPLIANCE_PORT
      value: {{ .Values.tls.port | quote }}
    - name: APPLIANCE_TLS_CERT
      value: {{ $p.tls }}/tls.crt
    - name: APPLIANCE_TLS_KEY
      value: {{ $p.tls }}/tls.key
    - name: APPLIANCE_TLS_CLIENT_CA
      value: {{ $p.tls }}/ca.crt
    - name: APPLIANCE_TLS_CLIENT_AUTH
      value: {{ .Values.tls.clientAuth | quote }}
  ports:
    - {name: https, containerPort: {{ .Values.tls.port }}}
  readinessProbe:
    tcpSocket: {port: {{ .Values.tls.port }}}
    periodSeconds: 10
  volumeMounts:
    {{- include "appliance.volumeMounts" . | nindent 4 }}
    {{- include "appliance.tlsMounts" . | nindent 4 }}
  resources:
    requests: {cpu: 250m, memory: 256Mi}
    limits: {cpu: "1", memory: 512Mi}
{{- end -}}

{{/* The init container: every active bundle re-hashed against the trust keys before Ray starts. */}}
{{- define "appliance.verifyContainer" -}}
- name: verify-bundles
  image: {{ include "appliance.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: [appliance, bundle, verify, --active]
  terminationMessagePolicy: FallbackToLogsOnError
  securityContext:
    {{- include "appliance.containerSecurityContext" . | nindent 4 }}
  env:
    {{- include "appliance.env" . | nindent 4 }}
  volumeMounts:
    {{- include "appliance.volumeMounts" . | nindent 4 }}
  resources:
    requests: {cpu: 500m, memory: 256Mi}
    limits: {cpu: "2", memory: 512Mi}
{{- end -}}

{{/* Called with (dict "root" $ "automount" BOOL): only an incremental upgrade's autoscaler needs a token. */}}
{{- define "appliance.podSpec" -}}
{{- $root := .root -}}
automountServiceAccountToken: {{ .automount }}
enableServiceLinks: false
securityContext:
  {{- include "appliance.podSecurityContext" $root | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  {{- include "appliance.volumes" $root | nindent 2 }}
{{- end -}}
