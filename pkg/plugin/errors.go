package plugin

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/netns-cni/netns-cni/pkg/hostport"
	"github.com/netns-cni/netns-cni/pkg/ipam"
	"github.com/netns-cni/netns-cni/pkg/lock"
	"github.com/netns-cni/netns-cni/pkg/netconf"
)

// Typed CNI errors. A plain error reaching the runtime becomes code 999
// ("internal"), which tells an operator nothing; everything a user can fix
// goes through one of these, or through a sentinel error of the packages
// below that codes maps.

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

// UnavailableError is code 50, for STATUS: the plugin cannot serve ADDs now.
func UnavailableError(format string, a ...any) *types.Error {
	return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf(format, a...), "")
}

// VersionError is code 1: the config asks for a version or a verb the
// plugin cannot serve at that version.
func VersionError(format string, a ...any) *types.Error {
	return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf(format, a...), "")
}

// codes gives the sentinel errors of the packages below pkg/plugin their
// CNI codes. This table is the one place that happens: those packages
// wrap a sentinel with %w and know nothing of CNI. A kernel error is never
// among them, so it is never reported as a config mistake.
var codes = []struct {
	err  error
	code uint
	hint string
}{
	{netconf.ErrIfnameExists, types.ErrInvalidEnvironmentVariables, ""},
	{netconf.ErrNotBridge, types.ErrInvalidNetworkConfig, ""},
	{netconf.ErrAddrConflict, types.ErrInvalidNetworkConfig, ""},
	{netconf.ErrNoVlanFiltering, types.ErrInvalidNetworkConfig, ""},
	{netconf.ErrNoGateway, types.ErrInvalidNetworkConfig, ""},
	{netconf.ErrAddrRouted, types.ErrInvalidNetworkConfig, ""},
	{netconf.ErrAttached, types.ErrInvalidEnvironmentVariables, ""},
	{lock.ErrBusy, types.ErrTryAgainLater, ""},
	{ipam.ErrBusy, types.ErrTryAgainLater, ""},
	{ipam.ErrExhausted, types.ErrTryAgainLater, "; free addresses by deleting containers (or GC), or widen the range"},
	{ipam.ErrConflict, types.ErrInvalidNetworkConfig, ""},
	{hostport.ErrPortTaken, types.ErrInvalidNetworkConfig, ""},
}

// CNIError returns err as the *types.Error the runtime gets: a typed error
// as it is, a sentinel of codes with its code, anything else as code 999
// with its message.
func CNIError(err error) *types.Error {
	var e *types.Error
	if errors.As(err, &e) {
		return e
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return types.NewError(c.code, err.Error()+c.hint, "")
		}
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}
