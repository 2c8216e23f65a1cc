package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type LeaderElectionConfiguration struct {
	LeaderElect *bool `json:"leaderElect"`
	LeaseDuration metav1.Duration `json:"leaseDuration"`
	RenewDeadline metav1.Duration `json:"renewDeadline"`
	RetryPeriod metav1.Duration `json:"retryPeriod"`
	ResourceLock string `json:"resourceLock"`
	ResourceName string `json:"resourceName"`
	ResourceNamespace string `json:"resourceNamespace"`
}

type DebuggingConfiguration struct {
	EnableProfiling *bool `json:"enableProfiling,omitempty"`
	EnableContentionProfiling *bool `json:"enableContentionProfiling,omitempty"`
}

type ClientConnectionConfiguration struct {
	Kubeconfig string `json:"kubeconfig"`
	AcceptContentTypes string `json:"acceptContentTypes"`
	ContentType string `json:"contentType"`
	QPS float32 `json:"qps"`
	Burst int32 `json:"burst"`
}

type LoggingConfiguration struct {
	Format string `json:"format,omitempty"`
}
