package plugin

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/netns-cni/netns-cni/pkg/ipam"
	"github.com/netns-cni/netns-cni/pkg/lock"
	"github.com/netns-cni/netns-cni/pkg/netconf"
)

func TestCNIErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code uint
	}{
		{ConfigError(`"mtu": bad`), types.ErrInvalidNetworkConfig},
		{fmt.Errorf("CNI_IFNAME eth0 %w in /x", netconf.ErrIfnameExists), types.ErrInvalidEnvironmentVariables},
		{fmt.Errorf("bridge br0: %w", netconf.ErrNotBridge), types.ErrInvalidNetworkConfig},
		{fmt.Errorf("ipam: %w", ipam.ErrBusy), types.ErrTryAgainLater},
		{fmt.Errorf("ipam: %w", ipam.ErrExhausted), types.ErrTryAgainLater},
		{fmt.Errorf("masquerade: %w", lock.ErrBusy), types.ErrTryAgainLater},
		{errors.Join(errors.New("other"), fmt.Errorf("x: %w", lock.ErrBusy)), types.ErrTryAgainLater},
		// A kernel error is never a config error.
		{fmt.Errorf("create bridge br0: %w", syscall.EPERM), types.ErrInternal},
		{fmt.Errorf("add address: %w", syscall.EINVAL), types.ErrInternal},
	} {
		if got := CNIError(tc.err); got.Code != tc.code || got.Msg == "" {
			t.Errorf("CNIError(%v) = %d %q, want code %d", tc.err, got.Code, got.Msg, tc.code)
		}
	}
}
