package v1

type TracingConfiguration struct {
	Endpoint *string `json:"endpoint,omitempty"`
	SamplingRatePerMillion *int32 `json:"samplingRatePerMillion,omitempty"`
}
