package v1

import (
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

type LoggingConfiguration struct {
	Format string `json:"format,omitempty"`
	FlushFrequency time.Duration `json:"flushFrequency"`
	Verbosity VerbosityLevel `json:"verbosity"`
	VModule VModuleConfiguration `json:"vmodule,omitempty"`
	Options FormatOptions `json:"options,omitempty"`
}

type FormatOptions struct {
	JSON JSONOptions `json:"json,omitempty"`
}

type JSONOptions struct {
	SplitStream bool `json:"splitStream,omitempty"`
	InfoBufferSize resource.QuantityValue `json:"infoBufferSize,omitempty"`
}

type VModuleConfiguration []VModuleItem

type VModuleItem struct {
	FilePattern string `json:"filePattern"`
	Verbosity VerbosityLevel `json:"verbosity"`
}

type VerbosityLevel uint32
