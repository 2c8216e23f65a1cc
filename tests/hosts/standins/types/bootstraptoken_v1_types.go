package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type BootstrapToken struct {
	Token *BootstrapTokenString `json:"token" datapolicy:"token"`
	Description string `json:"description,omitempty"`
	TTL *metav1.Duration `json:"ttl,omitempty"`
	Expires *metav1.Time `json:"expires,omitempty"`
	Usages []string `json:"usages,omitempty"`
	Groups []string `json:"groups,omitempty"`
}

type BootstrapTokenString struct {
	ID     string `json:"-"`
	Secret string `json:"-" datapolicy:"token"`
}
