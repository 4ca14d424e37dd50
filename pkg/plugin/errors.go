package plugin

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
)

// Typed CNI errors. A plain error reaching the runtime becomes code 999
// ("internal"), which tells an operator nothing; everything a user can fix
// goes through one of these.

// ConfigError is code 7: the network configuration is invalid. The message
// should name the JSON key: `"mtu": must be 68-65535, got 9`.
func ConfigError(format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}

// DecodeError is code 6: stdin or a part of it is not the JSON we expect.
func DecodeError(format string, a ...any) *types.Error {
	return types.NewError(types.ErrDecodingFailure, fmt.Sprintf(format, a...), "")
}

// EnvError is code 4: a CNI_* variable is missing or invalid. The message
// names the variable.
func EnvError(format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf(format, a...), "")
}

// TryAgainError is code 11: a transient condition, such as a busy store.
func TryAgainError(format string, a ...any) *types.Error {
	return types.NewError(types.ErrTryAgainLater, fmt.Sprintf(format, a...), "")
}

// UnavailableError is code 50, for STATUS: the plugin cannot serve ADDs now.
func UnavailableError(format string, a ...any) *types.Error {
	return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf(format, a...), "")
}

// VersionError is code 1: the config asks for a version or a verb the
// plugin cannot serve at that version.
func VersionError(format string, a ...any) *types.Error {
	return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf(format, a...), "")
}

// AsCNIError returns err as a *types.Error, wrapping anything untyped as
// code 999 with its message.
func AsCNIError(err error) *types.Error {
	var e *types.Error
	if errors.As(err, &e) {
		return e
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}
