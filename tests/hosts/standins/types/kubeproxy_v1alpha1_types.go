package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	componentbaseconfigv1alpha1 "k8s.io/component-base/config/v1alpha1"
	logsapi "k8s.io/component-base/logs/api/v1"
)

type KubeProxyIPTablesConfiguration struct {
	MasqueradeBit *int32 `json:"masqueradeBit"`
	MasqueradeAll bool `json:"masqueradeAll"`
	LocalhostNodePorts *bool `json:"localhostNodePorts"`
	SyncPeriod metav1.Duration `json:"syncPeriod"`
	MinSyncPeriod metav1.Duration `json:"minSyncPeriod"`
}

type KubeProxyIPVSConfiguration struct {
	SyncPeriod metav1.Duration `json:"syncPeriod"`
	MinSyncPeriod metav1.Duration `json:"minSyncPeriod"`
	Scheduler string `json:"scheduler"`
	ExcludeCIDRs []string `json:"excludeCIDRs"`
	StrictARP bool `json:"strictARP"`
	TCPTimeout metav1.Duration `json:"tcpTimeout"`
	TCPFinTimeout metav1.Duration `json:"tcpFinTimeout"`
	UDPTimeout metav1.Duration `json:"udpTimeout"`
}

type KubeProxyNFTablesConfiguration struct {
	MasqueradeBit *int32 `json:"masqueradeBit"`
	MasqueradeAll bool `json:"masqueradeAll"`
	SyncPeriod metav1.Duration `json:"syncPeriod"`
	MinSyncPeriod metav1.Duration `json:"minSyncPeriod"`
	TableName string `json:"tableName,omitempty"`
}

type KubeProxyConntrackConfiguration struct {
	MaxPerCore *int32 `json:"maxPerCore"`
	Min *int32 `json:"min"`
	TCPEstablishedTimeout *metav1.Duration `json:"tcpEstablishedTimeout"`
	TCPCloseWaitTimeout *metav1.Duration `json:"tcpCloseWaitTimeout"`
	TCPBeLiberal bool `json:"tcpBeLiberal"`
	UDPTimeout metav1.Duration `json:"udpTimeout"`
	UDPStreamTimeout metav1.Duration `json:"udpStreamTimeout"`
}

type KubeProxyWinkernelConfiguration struct {
	NetworkName string `json:"networkName"`
	SourceVip string `json:"sourceVip"`
	EnableDSR bool `json:"enableDSR"`
	RootHnsEndpointName string `json:"rootHnsEndpointName"`
	ForwardHealthCheckVip bool `json:"forwardHealthCheckVip"`
}

type DetectLocalConfiguration struct {
	BridgeInterface string `json:"bridgeInterface"`
	InterfaceNamePrefix string `json:"interfaceNamePrefix"`
}

type KubeProxyConfiguration struct {
	metav1.TypeMeta `json:",inline"`
	FeatureGates map[string]bool `json:"featureGates,omitempty"`
	ClientConnection componentbaseconfigv1alpha1.ClientConnectionConfiguration `json:"clientConnection"`
	Logging logsapi.LoggingConfiguration `json:"logging,omitempty"`
	HostnameOverride string `json:"hostnameOverride"`
	BindAddress string `json:"bindAddress"`
	HealthzBindAddress string `json:"healthzBindAddress"`
	MetricsBindAddress string `json:"metricsBindAddress"`
	BindAddressHardFail bool `json:"bindAddressHardFail"`
	EnableProfiling bool `json:"enableProfiling"`
	ShowHiddenMetricsForVersion string `json:"showHiddenMetricsForVersion"`
	ServiceProxyName string `json:"serviceProxyName,omitempty"`
	Mode ProxyMode `json:"mode"`
	IPTables KubeProxyIPTablesConfiguration `json:"iptables"`
	IPVS KubeProxyIPVSConfiguration `json:"ipvs"`
	NFTables KubeProxyNFTablesConfiguration `json:"nftables"`
	Winkernel KubeProxyWinkernelConfiguration `json:"winkernel"`
	DetectLocalMode LocalMode `json:"detectLocalMode"`
	DetectLocal DetectLocalConfiguration `json:"detectLocal"`
	ClusterCIDR string `json:"clusterCIDR"`
	NodePortAddresses []string `json:"nodePortAddresses"`
	OOMScoreAdj *int32 `json:"oomScoreAdj"`
	Conntrack KubeProxyConntrackConfiguration `json:"conntrack"`
	ConfigSyncPeriod metav1.Duration `json:"configSyncPeriod"`
	PortRange string `json:"portRange"`
}

type ProxyMode string

type LocalMode string
