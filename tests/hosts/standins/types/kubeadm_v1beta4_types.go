package v1beta4

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	bootstraptokenv1 "k8s.io/kubernetes/cmd/kubeadm/app/apis/bootstraptoken/v1"
)

type InitConfiguration struct {
	metav1.TypeMeta `json:",inline"`
	BootstrapTokens []bootstraptokenv1.BootstrapToken `json:"bootstrapTokens,omitempty"`
	DryRun bool `json:"dryRun,omitempty"`
	NodeRegistration NodeRegistrationOptions `json:"nodeRegistration,omitempty"`
	LocalAPIEndpoint APIEndpoint `json:"localAPIEndpoint,omitempty"`
	CertificateKey string `json:"certificateKey,omitempty"`
	SkipPhases []string `json:"skipPhases,omitempty"`
	Patches *Patches `json:"patches,omitempty"`
	Timeouts *Timeouts `json:"timeouts,omitempty"`
}

type ClusterConfiguration struct {
	metav1.TypeMeta `json:",inline"`
	Etcd Etcd `json:"etcd,omitempty"`
	Networking Networking `json:"networking,omitempty"`
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	ControlPlaneEndpoint string `json:"controlPlaneEndpoint,omitempty"`
	APIServer APIServer `json:"apiServer,omitempty"`
	ControllerManager ControlPlaneComponent `json:"controllerManager,omitempty"`
	Scheduler ControlPlaneComponent `json:"scheduler,omitempty"`
	DNS DNS `json:"dns,omitempty"`
	Proxy Proxy `json:"proxy,omitempty"`
	CertificatesDir string `json:"certificatesDir,omitempty"`
	ImageRepository string `json:"imageRepository,omitempty"`
	FeatureGates map[string]bool `json:"featureGates,omitempty"`
	ClusterName string `json:"clusterName,omitempty"`
	EncryptionAlgorithm EncryptionAlgorithmType `json:"encryptionAlgorithm,omitempty"`
	CertificateValidityPeriod *metav1.Duration `json:"certificateValidityPeriod,omitempty"`
	CACertificateValidityPeriod *metav1.Duration `json:"caCertificateValidityPeriod,omitempty"`
}

type ControlPlaneComponent struct {
	ExtraArgs []Arg `json:"extraArgs,omitempty"`
	ExtraVolumes []HostPathMount `json:"extraVolumes,omitempty"`
	ExtraEnvs []EnvVar `json:"extraEnvs,omitempty"`
}

type APIServer struct {
	ControlPlaneComponent `json:",inline"`
	CertSANs []string `json:"certSANs,omitempty"`
}

type DNS struct {
	ImageMeta `json:",inline"`
	Disabled bool `json:"disabled,omitempty"`
}

type Proxy struct {
	Disabled bool `json:"disabled,omitempty"`
}

type ImageMeta struct {
	ImageRepository string `json:"imageRepository,omitempty"`
	ImageTag string `json:"imageTag,omitempty"`
}

type APIEndpoint struct {
	AdvertiseAddress string `json:"advertiseAddress,omitempty"`
	BindPort int32 `json:"bindPort,omitempty"`
}

type NodeRegistrationOptions struct {
	Name string `json:"name,omitempty"`
	CRISocket string `json:"criSocket,omitempty"`
	Taints []corev1.Taint `json:"taints"`
	KubeletExtraArgs []Arg `json:"kubeletExtraArgs,omitempty"`
	IgnorePreflightErrors []string `json:"ignorePreflightErrors,omitempty"`
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	ImagePullSerial *bool `json:"imagePullSerial,omitempty"`
}

type Networking struct {
	ServiceSubnet string `json:"serviceSubnet,omitempty"`
	PodSubnet string `json:"podSubnet,omitempty"`
	DNSDomain string `json:"dnsDomain,omitempty"`
}

type Etcd struct {
	Local *LocalEtcd `json:"local,omitempty"`
	External *ExternalEtcd `json:"external,omitempty"`
}

type LocalEtcd struct {
	ImageMeta `json:",inline"`
	DataDir string `json:"dataDir"`
	ExtraArgs []Arg `json:"extraArgs,omitempty"`
	ExtraEnvs []EnvVar `json:"extraEnvs,omitempty"`
	ServerCertSANs []string `json:"serverCertSANs,omitempty"`
	PeerCertSANs []string `json:"peerCertSANs,omitempty"`
}

type ExternalEtcd struct {
	Endpoints []string `json:"endpoints"`
	CAFile string `json:"caFile"`
	CertFile string `json:"certFile"`
	KeyFile string `json:"keyFile"`
}

type JoinConfiguration struct {
	metav1.TypeMeta `json:",inline"`
	DryRun bool `json:"dryRun,omitempty"`
	NodeRegistration NodeRegistrationOptions `json:"nodeRegistration,omitempty"`
	CACertPath string `json:"caCertPath,omitempty"`
	Discovery Discovery `json:"discovery"`
	ControlPlane *JoinControlPlane `json:"controlPlane,omitempty"`
	SkipPhases []string `json:"skipPhases,omitempty"`
	Patches *Patches `json:"patches,omitempty"`
	Timeouts *Timeouts `json:"timeouts,omitempty"`
}

type JoinControlPlane struct {
	LocalAPIEndpoint APIEndpoint `json:"localAPIEndpoint,omitempty"`
	CertificateKey string `json:"certificateKey,omitempty"`
}

type Discovery struct {
	BootstrapToken *BootstrapTokenDiscovery `json:"bootstrapToken,omitempty"`
	File *FileDiscovery `json:"file,omitempty"`
	TLSBootstrapToken string `json:"tlsBootstrapToken,omitempty" datapolicy:"token"`
}

type BootstrapTokenDiscovery struct {
	Token string `json:"token" datapolicy:"token"`
	APIServerEndpoint string `json:"apiServerEndpoint,omitempty"`
	CACertHashes []string `json:"caCertHashes,omitempty" datapolicy:"security-key"`
	UnsafeSkipCAVerification bool `json:"unsafeSkipCAVerification,omitempty"`
}

type FileDiscovery struct {
	KubeConfigPath string `json:"kubeConfigPath"`
}

type HostPathMount struct {
	Name string `json:"name"`
	HostPath string `json:"hostPath"`
	MountPath string `json:"mountPath"`
	ReadOnly bool `json:"readOnly,omitempty"`
	PathType corev1.HostPathType `json:"pathType,omitempty"`
}

type Patches struct {
	Directory string `json:"directory,omitempty"`
}

type ResetConfiguration struct {
	metav1.TypeMeta `json:",inline"`
	CleanupTmpDir bool `json:"cleanupTmpDir,omitempty"`
	CertificatesDir string `json:"certificatesDir,omitempty"`
	CRISocket string `json:"criSocket,omitempty"`
	DryRun bool `json:"dryRun,omitempty"`
	Force bool `json:"force,omitempty"`
	IgnorePreflightErrors []string `json:"ignorePreflightErrors,omitempty"`
	SkipPhases []string `json:"skipPhases,omitempty"`
	UnmountFlags []string `json:"unmountFlags,omitempty"`
	Timeouts *Timeouts `json:"timeouts,omitempty"`
}

type Arg struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type EnvVar struct {
	corev1.EnvVar `json:",inline"`
}

type EncryptionAlgorithmType string

type Timeouts struct {
	ControlPlaneComponentHealthCheck *metav1.Duration `json:"controlPlaneComponentHealthCheck,omitempty"`
	KubeletHealthCheck *metav1.Duration `json:"kubeletHealthCheck,omitempty"`
	KubernetesAPICall *metav1.Duration `json:"kubernetesAPICall,omitempty"`
	EtcdAPICall *metav1.Duration `json:"etcdAPICall,omitempty"`
	TLSBootstrap *metav1.Duration `json:"tlsBootstrap,omitempty"`
	Discovery *metav1.Duration `json:"discovery,omitempty"`
	UpgradeManifests *metav1.Duration `json:"upgradeManifests,omitempty"`
}

type UpgradeApplyConfiguration struct {
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	AllowExperimentalUpgrades *bool `json:"allowExperimentalUpgrades,omitempty"`
	AllowRCUpgrades *bool `json:"allowRCUpgrades,omitempty"`
	CertificateRenewal *bool `json:"certificateRenewal,omitempty"`
	DryRun *bool `json:"dryRun,omitempty"`
	EtcdUpgrade *bool `json:"etcdUpgrade,omitempty"`
	ForceUpgrade *bool `json:"forceUpgrade,omitempty"`
	IgnorePreflightErrors []string `json:"ignorePreflightErrors,omitempty"`
	Patches *Patches `json:"patches,omitempty"`
	PrintConfig *bool `json:"printConfig,omitempty"`
	SkipPhases []string
}

type UpgradeDiffConfiguration struct {
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	DiffContextLines int `json:"contextLines,omitempty"`
}

type UpgradeNodeConfiguration struct {
	CertificateRenewal *bool `json:"certificateRenewal,omitempty"`
	DryRun *bool `json:"dryRun,omitempty"`
	EtcdUpgrade *bool `json:"etcdUpgrade,omitempty"`
	IgnorePreflightErrors []string `json:"ignorePreflightErrors,omitempty"`
	SkipPhases []string `json:"skipPhases,omitempty"`
	Patches *Patches `json:"patches,omitempty"`
}

type UpgradePlanConfiguration struct {
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	AllowExperimentalUpgrades *bool `json:"allowExperimentalUpgrades,omitempty"`
	AllowRCUpgrades *bool `json:"allowRCUpgrades,omitempty"`
	DryRun *bool `json:"dryRun,omitempty"`
	IgnorePreflightErrors []string `json:"ignorePreflightErrors,omitempty"`
	PrintConfig *bool `json:"printConfig,omitempty"`
}

type UpgradeConfiguration struct {
	metav1.TypeMeta `json:",inline"`
	Apply UpgradeApplyConfiguration `json:"apply,omitempty"`
	Diff UpgradeDiffConfiguration `json:"diff,omitempty"`
	Node UpgradeNodeConfiguration `json:"node,omitempty"`
	Plan UpgradePlanConfiguration `json:"plan,omitempty"`
	Timeouts *Timeouts `json:"timeouts,omitempty"`
}
