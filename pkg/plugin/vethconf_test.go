package plugin

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// TestMTUWithIPv6: an "mtu" under IPv6's minimum link MTU with an IPv6
// subnet is code 7 naming the key, before anything is made (the kernel
// refused the address once the veth existed: code 999).
func TestMTUWithIPv6(t *testing.T) {
	for _, tc := range []struct {
		mtu     int
		subnet  string
		refused bool
	}{
		{1000, "fd07::/64", true},
		{1279, "fd07::/64", true},
		{1280, "fd07::/64", false},
		{1000, "10.1.0.0/24", false},
		{0, "fd07::/64", false},
	} {
		m, err := LoadIPAM(&skel.CmdArgs{ContainerID: "c", IfName: "eth0",
			StdinData: []byte(`{"name":"net","ipam":{"type":"host-local","subnet":"` + tc.subnet + `","dataDir":"` + t.TempDir() + `"}}`)})
		if err != nil {
			t.Fatal(err)
		}
		err = (&VethConf{MTU: tc.mtu}).checkMTU(m)
		var e *types.Error
		switch {
		case !tc.refused && err != nil:
			t.Errorf("mtu %d, %s: %v", tc.mtu, tc.subnet, err)
		case tc.refused && (!errors.As(err, &e) || e.Code != types.ErrInvalidNetworkConfig || !strings.Contains(e.Msg, `"mtu": must be at least 1280`)):
			t.Errorf("mtu %d, %s: %v, want code 7 naming mtu", tc.mtu, tc.subnet, err)
		}
	}
}
