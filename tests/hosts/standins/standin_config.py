"""Strict validation of a kubeadm multi-document config, like kubeadm's strict decoding.

Field names follow the Go types of kubeadm v1beta4 (cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go),
bootstraptoken/v1, corev1.Taint/EnvVar, and the top-level fields of KubeletConfiguration
(kubelet.config.k8s.io/v1beta1) and KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1).
Runs on the test hosts with Debian's python3 + python3-yaml only (no other imports).
"""

from __future__ import annotations

import re

import yaml

KUBEADM_GROUP = "kubeadm.k8s.io"
KUBEADM_VERSION = "v1beta4"
REMOVED_KUBEADM_VERSIONS = ("v1beta1", "v1beta2", "v1beta3")

_DURATION = re.compile(r"^-?((\d+(\.\d+)?)(ns|us|µs|ms|s|m|h))+$|^0$")


class ConfigError(Exception):
    """A config document kubeadm would refuse; the message names the field."""


# A schema is: "str" | "int" | "bool" | "duration" | "any" | dict (struct) | ("list", schema)
# | ("map", schema). "any" is for free-form sub-objects we do not model (Kubelet/KubeProxy internals).
ARG = {"name": "str", "value": "str"}
ARGS = ("list", ARG)
ENV_VAR = {"name": "str", "value": "str", "valueFrom": "any"}
HOST_PATH_MOUNT = {"name": "str", "hostPath": "str", "mountPath": "str", "readOnly": "bool",
                   "pathType": "str"}
API_ENDPOINT = {"advertiseAddress": "str", "bindPort": "int"}
TAINT = {"key": "str", "value": "str", "effect": "str", "timeAdded": "str"}
NODE_REGISTRATION = {
    "name": "str", "criSocket": "str", "taints": ("list", TAINT), "kubeletExtraArgs": ARGS,
    "ignorePreflightErrors": ("list", "str"), "imagePullPolicy": "str", "imagePullSerial": "bool",
}
TIMEOUTS = {k: "duration" for k in (
    "controlPlaneComponentHealthCheck", "kubeletHealthCheck", "kubernetesAPICall", "etcdAPICall",
    "tlsBootstrap", "discovery", "upgradeManifests")}
PATCHES = {"directory": "str"}
BOOTSTRAP_TOKEN = {"token": "str", "description": "str", "ttl": "duration", "expires": "str",
                   "usages": ("list", "str"), "groups": ("list", "str")}
IMAGE_META = {"imageRepository": "str", "imageTag": "str"}
CONTROL_PLANE_COMPONENT = {"extraArgs": ARGS, "extraVolumes": ("list", HOST_PATH_MOUNT),
                           "extraEnvs": ("list", ENV_VAR)}
LOCAL_ETCD = {**IMAGE_META, "dataDir": "str", "extraArgs": ARGS, "extraEnvs": ("list", ENV_VAR),
              "serverCertSANs": ("list", "str"), "peerCertSANs": ("list", "str")}
EXTERNAL_ETCD = {"endpoints": ("list", "str"), "caFile": "str", "certFile": "str", "keyFile": "str"}

TYPE_META = {"apiVersion": "str", "kind": "str"}

KUBEADM_KINDS: dict[str, dict] = {
    "InitConfiguration": {
        **TYPE_META, "bootstrapTokens": ("list", BOOTSTRAP_TOKEN), "dryRun": "bool",
        "nodeRegistration": NODE_REGISTRATION, "localAPIEndpoint": API_ENDPOINT,
        "certificateKey": "str", "skipPhases": ("list", "str"), "patches": PATCHES,
        "timeouts": TIMEOUTS,
    },
    "ClusterConfiguration": {
        **TYPE_META,
        "etcd": {"local": LOCAL_ETCD, "external": EXTERNAL_ETCD},
        "networking": {"serviceSubnet": "str", "podSubnet": "str", "dnsDomain": "str"},
        "kubernetesVersion": "str", "controlPlaneEndpoint": "str",
        "apiServer": {**CONTROL_PLANE_COMPONENT, "certSANs": ("list", "str")},
        "controllerManager": CONTROL_PLANE_COMPONENT, "scheduler": CONTROL_PLANE_COMPONENT,
        "dns": {**IMAGE_META, "disabled": "bool"}, "proxy": {"disabled": "bool"},
        "certificatesDir": "str", "imageRepository": "str", "featureGates": ("map", "bool"),
        "clusterName": "str", "encryptionAlgorithm": "str",
        "certificateValidityPeriod": "duration", "caCertificateValidityPeriod": "duration",
    },
    "JoinConfiguration": {
        **TYPE_META, "dryRun": "bool", "nodeRegistration": NODE_REGISTRATION, "caCertPath": "str",
        "discovery": {
            "bootstrapToken": {"token": "str", "apiServerEndpoint": "str",
                               "caCertHashes": ("list", "str"), "unsafeSkipCAVerification": "bool"},
            "file": {"kubeConfigPath": "str"},
            "tlsBootstrapToken": "str",
        },
        "controlPlane": {"localAPIEndpoint": API_ENDPOINT, "certificateKey": "str"},
        "skipPhases": ("list", "str"), "patches": PATCHES, "timeouts": TIMEOUTS,
    },
    "ResetConfiguration": {
        **TYPE_META, "cleanupTmpDir": "bool", "certificatesDir": "str", "criSocket": "str",
        "dryRun": "bool", "force": "bool", "ignorePreflightErrors": ("list", "str"),
        "skipPhases": ("list", "str"), "unmountFlags": ("list", "str"), "timeouts": TIMEOUTS,
    },
    "UpgradeConfiguration": {
        **TYPE_META, "apply": "any", "diff": "any", "node": "any", "plan": "any", "timeouts": TIMEOUTS,
    },
}

# Top-level fields of KubeletConfiguration v1beta1 (k8s.io/kubelet/config/v1beta1/types.go).
KUBELET_FIELDS = """
enableServer staticPodPath podLogsDir syncFrequency fileCheckFrequency httpCheckFrequency staticPodURL
staticPodURLHeader address port readOnlyPort tlsCertFile tlsPrivateKeyFile tlsCipherSuites
tlsMinVersion rotateCertificates serverTLSBootstrap authentication authorization registryPullQPS
registryBurst imagePullCredentialsVerificationPolicy preloadedImagesVerificationAllowlist
eventRecordQPS eventBurst enableDebuggingHandlers enableContentionProfiling healthzPort
healthzBindAddress oomScoreAdj clusterDomain clusterDNS streamingConnectionIdleTimeout
nodeStatusUpdateFrequency nodeStatusReportFrequency nodeLeaseDurationSeconds imageMinimumGCAge
imageMaximumGCAge imageGCHighThresholdPercent imageGCLowThresholdPercent volumeStatsAggPeriod
kubeletCgroups systemCgroups cgroupRoot cgroupsPerQOS cgroupDriver cpuManagerPolicy
singleProcessOOMKill cpuManagerPolicyOptions cpuManagerReconcilePeriod memoryManagerPolicy
topologyManagerPolicy topologyManagerScope topologyManagerPolicyOptions qosReserved
runtimeRequestTimeout hairpinMode maxPods podCIDR podPidsLimit resolvConf runOnce cpuCFSQuota
cpuCFSQuotaPeriod nodeStatusMaxImages maxOpenFiles contentType kubeAPIQPS kubeAPIBurst
serializeImagePulls maxParallelImagePulls evictionHard evictionSoft evictionSoftGracePeriod
evictionPressureTransitionPeriod evictionMaxPodGracePeriod evictionMinimumReclaim
mergeDefaultEvictionSettings podsPerCore enableControllerAttachDetach protectKernelDefaults
makeIPTablesUtilChains iptablesMasqueradeBit iptablesDropBit featureGates failSwapOn memorySwap
containerLogMaxSize containerLogMaxFiles containerLogMaxWorkers containerLogMonitorInterval
configMapAndSecretChangeDetectionStrategy systemReserved kubeReserved reservedSystemCPUs
showHiddenMetricsForVersion systemReservedCgroup kubeReservedCgroup enforceNodeAllocatable
allowedUnsafeSysctls volumePluginDir providerID kernelMemcgNotification logging
enableSystemLogHandler enableSystemLogQuery shutdownGracePeriod shutdownGracePeriodCriticalPods
shutdownGracePeriodByPodPriority crashLoopBackOff reservedMemory enableProfilingHandler
enableDebugFlagsHandler seccompDefault memoryThrottlingFactor registerWithTaints registerNode
tracing localStorageCapacityIsolation containerRuntimeEndpoint imageServiceEndpoint failCgroupV1
userNamespaces
""".split()

# Top-level fields of KubeProxyConfiguration v1alpha1 (k8s.io/kube-proxy/config/v1alpha1/types.go).
KUBE_PROXY_FIELDS = """
featureGates clientConnection hostnameOverride bindAddress healthzBindAddress metricsBindAddress
bindAddressHardFail enableProfiling showHiddenMetricsForVersion mode iptables ipvs nftables winkernel
detectLocalMode detectLocal clusterCIDR nodePortAddresses oomScoreAdj conntrack configSyncPeriod
portRange logging windowsRunAsService
""".split()

COMPONENT_KINDS: dict[tuple[str, str], dict] = {
    ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"):
        {**TYPE_META, **{f: "any" for f in KUBELET_FIELDS}, "cgroupDriver": "str",
         "failCgroupV1": "bool", "failSwapOn": "bool"},
    ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration"):
        {**TYPE_META, **{f: "any" for f in KUBE_PROXY_FIELDS}, "mode": "str", "clusterCIDR": "str"},
}

_PY_TYPES = {"str": (str,), "int": (int,), "bool": (bool,)}


def _check(value, schema, path: str, errors: list[str]) -> None:
    if schema == "any":
        return
    if value is None:  # YAML `key:` / `key: null` — Go's decoder leaves the zero value
        return
    if schema == "duration":
        if not isinstance(value, str) or not _DURATION.match(value):
            errors.append(f'{path}: invalid duration {value!r} (want a Go duration like "1h0m0s")')
        return
    if isinstance(schema, str):
        ok = isinstance(value, _PY_TYPES[schema]) and not (schema == "int" and isinstance(value, bool))
        if not ok:
            errors.append(f"{path}: cannot unmarshal {type(value).__name__} into a {schema} field")
        return
    if isinstance(schema, tuple):
        container, item = schema
        if container == "list":
            if not isinstance(value, list):
                hint = " (v1beta4 takes a list of {name, value})" if item is ARG else ""
                errors.append(f"{path}: cannot unmarshal {type(value).__name__} into a list{hint}")
                return
            for i, v in enumerate(value):
                _check(v, item, f"{path}[{i}]", errors)
        else:
            if not isinstance(value, dict):
                errors.append(f"{path}: cannot unmarshal {type(value).__name__} into a map")
                return
            for k, v in value.items():
                _check(v, item, f"{path}.{k}", errors)
        return
    if not isinstance(value, dict):
        errors.append(f"{path}: cannot unmarshal {type(value).__name__} into an object")
        return
    for key, v in value.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in schema:
            errors.append(f'strict decoding error: unknown field "{sub}"')
            continue
        _check(v, schema[key], sub, errors)


def validate_document(doc: dict) -> list[str]:
    """Errors for one document (empty list = valid)."""
    if not isinstance(doc, dict):
        return ["config document is not a mapping"]
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not api_version or not kind:
        return ["config document without apiVersion or kind: 'Object 'Kind' is missing'"]
    group, _, version = str(api_version).partition("/")
    if group == KUBEADM_GROUP:
        if version in REMOVED_KUBEADM_VERSIONS:
            return [f'your configuration file uses an old API spec: "{api_version}" is no longer '
                    f'supported. Please use kubeadm v1.35 instead and run "kubeadm config migrate '
                    f'--old-config old-config-file --new-config new-config-file", which will write '
                    f'the new, similar spec using a newer API version.']
        if version != KUBEADM_VERSION:
            return [f'no kind "{kind}" is registered for version "{api_version}" (apiVersion)']
        schema = KUBEADM_KINDS.get(kind)
        if schema is None:
            return [f'no kind "{kind}" is registered for version "{api_version}" (kind)']
    else:
        schema = COMPONENT_KINDS.get((api_version, kind))
        if schema is None:
            return [f'no kind "{kind}" is registered for version "{api_version}" (apiVersion/kind)']
    errors: list[str] = []
    _check(doc, schema, "", errors)
    return [f"{kind}: {e}" for e in errors]


def load_config(text: str) -> dict[str, dict]:
    """Parse and strictly validate a multi-document config; returns {kind: document}.

    Raises ConfigError listing every problem (each naming its field)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ConfigError(f"unable to decode config: {e}") from e
    errors: list[str] = []
    by_kind: dict[str, dict] = {}
    for doc in docs:
        problems = validate_document(doc)
        errors += problems
        if not problems:
            if doc["kind"] in by_kind:
                errors.append(f'{doc["kind"]}: found more than one document of this kind')
            by_kind[doc["kind"]] = doc
    if not docs:
        errors.append("the config file holds no documents")
    if errors:
        raise ConfigError("\n".join(errors))
    return by_kind
