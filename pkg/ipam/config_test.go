package ipam

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustParse(t testing.TB, stdin, args string) *Config {
	t.Helper()
	c, errs := Parse([]byte(stdin), args)
	if len(errs) > 0 {
		t.Fatalf("Parse: %v", errs)
	}
	return c
}

func TestParseDefaultsLikeHostLocal(t *testing.T) {
	c := mustParse(t, `{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}`, "")
	want := RangeSet{{
		Subnet:  netip.MustParsePrefix("10.1.0.0/24"),
		Start:   netip.MustParseAddr("10.1.0.1"),
		End:     netip.MustParseAddr("10.1.0.254"),
		Gateway: netip.MustParseAddr("10.1.0.1"),
	}}
	if diff := cmp.Diff([]RangeSet{want}, c.RangeSets, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Fatal(diff)
	}
	if c.DataDir != DefaultDataDir || c.Dir() != DefaultDataDir+"/n" {
		t.Fatalf("dataDir %q", c.DataDir)
	}
	if got := want.Size(); got != 253 {
		t.Fatalf("size %d, want 253", got)
	}

	v6 := mustParse(t, `{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/16"}],[{"subnet":"fd00::/64","rangeStart":"fd00::10","rangeEnd":"fd00::20","gateway":"fd00::1"}]]}}`, "")
	if len(v6.RangeSets) != 2 || !v6.RangeSets[0].Is4() || v6.RangeSets[1].Is4() {
		t.Fatalf("dual-stack sets: %v", v6.RangeSets)
	}
	if r := v6.RangeSets[1][0]; r.Start.String() != "fd00::10" || r.End.String() != "fd00::20" || r.Gateway.String() != "fd00::1" {
		t.Fatalf("v6 range %+v", r)
	}
	if got := v6.RangeSets[1].Size(); got != 17 {
		t.Fatalf("v6 size %d", got)
	}
}

func TestParseRequestedAddresses(t *testing.T) {
	c := mustParse(t, `{"cniVersion":"1.0.0","name":"n",
		"ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/64"}]]},
		"args":{"cni":{"ips":["fd00::9"]}}}`, "K8S_POD_NAME=x;IP=10.1.0.7")
	want := []netip.Addr{netip.MustParseAddr("10.1.0.7"), netip.MustParseAddr("fd00::9")}
	if !cmp.Equal(want, c.Requested, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })) {
		t.Fatalf("requested %v", c.Requested)
	}
	rc := mustParse(t, `{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","subnet":"10.1.0.0/24"},"runtimeConfig":{"ips":["10.1.0.9/24"]}}`, "")
	if len(rc.Requested) != 1 || rc.Requested[0].String() != "10.1.0.9" {
		t.Fatalf("runtimeConfig.ips: %v", rc.Requested)
	}
	rr := mustParse(t, `{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","subnet":"10.1.0.0/24"},"runtimeConfig":{"ipRanges":[[{"subnet":"10.9.0.0/24"}]]}}`, "")
	if len(rr.RangeSets) != 2 || rr.RangeSets[0][0].Subnet.String() != "10.9.0.0/24" {
		t.Fatalf("runtimeConfig.ipRanges not first: %v", rr.RangeSets)
	}
}

func TestParseOtherTypeIsDelegated(t *testing.T) {
	c := mustParse(t, `{"cniVersion":"1.0.0","name":"n","ipam":{"type":"dhcp"}}`, "")
	if c.Type != "dhcp" || len(c.RangeSets) != 0 {
		t.Fatalf("%+v", c)
	}
	for _, stdin := range []string{`{"cniVersion":"1.0.0","name":"n"}`, `{"cniVersion":"1.0.0","name":"n","ipam":{}}`} {
		if _, errs := Parse([]byte(stdin), ""); len(errs) != 1 || !errors.Is(errs[0], ErrNoIPAM) {
			t.Fatalf("no ipam in %s: %v", stdin, errs)
		}
	}
}

func TestParseRejects(t *testing.T) {
	const pre = `{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local",`
	for _, tc := range []struct {
		name, ipam, args, want string
	}{
		{"no type", `"subnet":"10.1.0.0/24","type":""}}`, "", `"ipam.type": missing`},
		{"no ranges", `"dataDir":"/x"}}`, "", `"ipam.ranges": no address ranges`},
		{"relative dataDir", `"subnet":"10.1.0.0/24","dataDir":"var/lib"}}`, "", `"ipam.dataDir": must be an absolute path`},
		{"host bits", `"ranges":[[{"subnet":"10.1.0.1/24"}]]}}`, "", `"ipam.ranges[0][0].subnet": 10.1.0.1/24 has host bits set; the subnet is 10.1.0.0/24`},
		{"not a cidr", `"ranges":[[{"subnet":"10.1.0.0"}]]}}`, "", `is not a CIDR subnet`},
		{"slash 31", `"ranges":[[{"subnet":"10.1.0.0/31"}]]}}`, "", "too small"},
		// Addresses no pod can have: code 7 naming the key, not the
		// kernel's 999 after the veth exists (or a FORWARD accept of all).
		{"every address", `"ranges":[[{"subnet":"0.0.0.0/0"}]]}}`, "", `"ipam.ranges[0][0].subnet": 0.0.0.0/0 is every address`},
		{"every IPv6 address", `"ranges":[[{"subnet":"::/0"}]]}}`, "", "::/0 is every address"},
		{"loopback", `"ranges":[[{"subnet":"127.0.0.0/24"}]]}}`, "", "127.0.0.0/24 holds loopback addresses"},
		{"multicast", `"ranges":[[{"subnet":"224.0.0.0/24"}]]}}`, "", "224.0.0.0/24 holds multicast addresses"},
		{"IPv6 multicast", `"ranges":[[{"subnet":"ff02::/64"}]]}}`, "", "ff02::/64 holds multicast addresses"},
		{"a block over multicast", `"ranges":[[{"subnet":"192.0.0.0/2"}]]}}`, "", "holds multicast addresses"},
		{"this network", `"ranges":[[{"subnet":"0.1.0.0/16"}]]}}`, "", `holds "this network" addresses`},
		{"slash 32", `"subnet":"10.1.0.0/32"}}`, "", `"ipam.subnet": 10.1.0.0/32 is too small`},
		{"slash 127", `"ranges":[[{"subnet":"fd00::/127"}]]}}`, "", "too small"},
		{"slash 128", `"ranges":[[{"subnet":"fd00::/128"}]]}}`, "", "too small"},
		{"start outside", `"ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.2.0.5"}]]}}`, "", `"ipam.ranges[0][0].rangeStart": 10.2.0.5 is outside subnet 10.1.0.0/24`},
		{"end outside", `"ranges":[[{"subnet":"10.1.0.0/24","rangeEnd":"10.1.1.5"}]]}}`, "", `"ipam.ranges[0][0].rangeEnd"`},
		{"start after end", `"ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.50","rangeEnd":"10.1.0.10"}]]}}`, "", "rangeStart 10.1.0.50 is after rangeEnd 10.1.0.10"},
		{"gateway outside", `"ranges":[[{"subnet":"10.1.0.0/24","gateway":"10.9.0.1"}]]}}`, "", `"ipam.ranges[0][0].gateway": 10.9.0.1 is outside`},
		{"mixed families", `"ranges":[[{"subnet":"10.1.0.0/24"},{"subnet":"fd00::/64"}]]}}`, "", `"ipam.ranges[0]": mixes IPv4 and IPv6`},
		{"overlap in set", `"ranges":[[{"subnet":"10.1.0.0/24"},{"subnet":"10.1.0.0/25"}]]}}`, "", `"ipam.ranges[0]": ranges`},
		{"overlapping sets", `"ranges":[[{"subnet":"10.1.0.0/16"}],[{"subnet":"10.1.5.0/24"}]]}}`, "", `"ipam.ranges[0]" and "ipam.ranges[1]" overlap`},
		{"legacy overlaps ranges", `"subnet":"10.1.0.0/24","ranges":[[{"subnet":"10.1.0.0/24"}]]}}`, "", `"ipam" and "ipam.ranges[0]" overlap`},
		{"start without subnet", `"rangeStart":"10.1.0.5","ranges":[[{"subnet":"10.1.0.0/24"}]]}}`, "", `"ipam.subnet": missing`},
		{"requested outside", `"subnet":"10.1.0.0/24"}}`, "IP=10.2.0.5", "requested address 10.2.0.5 is outside every range"},
		{"requested gateway", `"subnet":"10.1.0.0/24"}}`, "IP=10.1.0.1", "requested address 10.1.0.1 is the gateway"},
		{"requested garbage", `"subnet":"10.1.0.0/24"}}`, "IP=banana", `CNI_ARGS IP: "banana" is not an IP address`},
		{"two requested in one set", `"subnet":"10.1.0.0/24"}}`, "IP=10.1.0.5,10.1.0.6", "already has a requested address"},
		{"range on the broadcast address", `"ranges":[[{"subnet":"10.50.0.0/24","rangeStart":"10.50.0.255","rangeEnd":"10.50.0.255"}]]}}`, "", `"ipam.ranges[0][0].rangeStart": 10.50.0.255 is the broadcast address of 10.50.0.0/24`},
		{"range on the network address", `"ranges":[[{"subnet":"10.50.1.0/24","rangeStart":"10.50.1.0","rangeEnd":"10.50.1.0"}]]}}`, "", `"ipam.ranges[0][0].rangeEnd": 10.50.1.0 is the network address of 10.50.1.0/24`},
		{"only the gateway left", `"ranges":[[{"subnet":"10.50.0.0/29","rangeStart":"10.50.0.0","rangeEnd":"10.50.0.1"}]]}}`, "", `"ipam.ranges[0]": every range of the set holds only its gateway (10.50.0.1-10.50.0.1)`},
		{"gateway on the broadcast address", `"subnet":"10.50.0.0/24","gateway":"10.50.0.255"}}`, "", `"ipam.gateway": 10.50.0.255 is the broadcast address of 10.50.0.0/24; a gateway must be a host address`},
		{"old version two v4 sets", `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/24"}]]}}`, "", "allows one address per family"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdin := pre + tc.ipam
			if tc.name == "old version two v4 sets" {
				stdin = strings.Replace(stdin, "1.0.0", "0.2.0", 1)
			}
			if tc.name == "no type" {
				stdin = `{"cniVersion":"1.0.0","name":"n","ipam":{` + tc.ipam
			}
			_, errs := Parse([]byte(stdin), tc.args)
			var msgs []string
			for _, e := range errs {
				msgs = append(msgs, e.Error())
			}
			if !strings.Contains(strings.Join(msgs, "\n"), tc.want) {
				t.Fatalf("errors %q, want one containing %q", msgs, tc.want)
			}
		})
	}
}

// TestParseRangeOnNetworkOrBroadcast: a range written from a subnet's
// network address to its broadcast address (the reference hands both
// out) loses those two, with a note naming each key; nothing else moves.
func TestParseRangeOnNetworkOrBroadcast(t *testing.T) {
	for _, tc := range []struct {
		ipam, start, end string
		notes            []string
	}{
		{`"subnet":"10.50.0.0/24","rangeEnd":"10.50.0.255"`, "10.50.0.1", "10.50.0.254", []string{`"ipam.rangeEnd": 10.50.0.255 is the broadcast address of 10.50.0.0/24, which is never handed out; the range ends at 10.50.0.254`}},
		{`"ranges":[[{"subnet":"10.95.0.0/24","rangeStart":"10.95.0.0","rangeEnd":"10.95.0.255"}]]`, "10.95.0.1", "10.95.0.254",
			[]string{`"ipam.ranges[0][0].rangeStart": 10.95.0.0 is the network address`, `"ipam.ranges[0][0].rangeEnd": 10.95.0.255 is the broadcast address`}},
		{`"ranges":[[{"subnet":"10.95.0.0/24","rangeStart":"10.95.0.10","rangeEnd":"10.95.0.20"}]]`, "10.95.0.10", "10.95.0.20", nil},
		{`"ranges":[[{"subnet":"fd00::/64","rangeStart":"fd00::","rangeEnd":"fd00::ffff:ffff:ffff:ffff"}]]`, "fd00::", "fd00::ffff:ffff:ffff:ffff", nil},
	} {
		c, errs := Parse([]byte(`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local",`+tc.ipam+`}}`), "")
		if len(errs) > 0 {
			t.Errorf("%s: %v", tc.ipam, errs)
			continue
		}
		if r := c.RangeSets[0][0]; r.Start.String() != tc.start || r.End.String() != tc.end {
			t.Errorf("%s: range %s-%s, want %s-%s", tc.ipam, r.Start, r.End, tc.start, tc.end)
		}
		if len(c.Adjusted) != len(tc.notes) {
			t.Errorf("%s: notes %q, want %d", tc.ipam, c.Adjusted, len(tc.notes))
			continue
		}
		for i, n := range tc.notes {
			if !strings.Contains(c.Adjusted[i], n) {
				t.Errorf("%s: note %q lacks %q", tc.ipam, c.Adjusted[i], n)
			}
		}
	}
}

func TestParseRejectsEscapingNetworkName(t *testing.T) {
	for _, name := range []string{"..", ".", "a/b", "../etc"} {
		_, errs := Parse([]byte(`{"cniVersion":"1.0.0","name":"`+name+`","ipam":{"type":"host-local","subnet":"10.1.0.0/24","dataDir":"/tmp/x"}}`), "")
		if len(errs) == 0 || !strings.Contains(errs[0].Error(), `"name"`) {
			t.Errorf("name %q: %v", name, errs)
		}
	}
}

func TestRangeSetNextWraps(t *testing.T) {
	c := mustParse(t, `{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/30"},{"subnet":"10.2.0.0/30"}]]}}`, "")
	s := c.RangeSets[0]
	var got []string
	a := s[0].Start
	for range 5 {
		got = append(got, a.String())
		a = s.next(a)
	}
	want := []string{"10.1.0.1", "10.1.0.2", "10.2.0.1", "10.2.0.2", "10.1.0.1"}
	if !cmp.Equal(want, got) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

// FuzzParse: no input makes Parse panic, and whatever it accepts is
// consistent.
func FuzzParse(f *testing.F) {
	f.Add(`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}`, "IP=10.1.0.5")
	f.Add(`{"cniVersion":"0.2.0","name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"fd00::/120","rangeStart":"fd00::5"}]]}}`, "")
	f.Add(`{"name":"x","ipam":{"type":"host-local","ranges":[[{"subnet":"10.0.0.0/8","gateway":"10.0.0.9"}],[{"subnet":"10.0.0.0/8"}]]},"runtimeConfig":{"ips":["10.0.0.2"]}}`, "")
	f.Fuzz(func(t *testing.T, stdin, args string) {
		c, errs := Parse([]byte(stdin), args)
		if len(errs) > 0 || c == nil || c.Type != "host-local" {
			return
		}
		for _, set := range c.RangeSets {
			if len(set) == 0 {
				t.Fatal("empty set accepted")
			}
			for _, r := range set {
				if !r.Subnet.Contains(r.Start) || !r.Subnet.Contains(r.End) || r.Start.Compare(r.End) > 0 || !r.Subnet.Contains(r.Gateway) {
					t.Fatalf("inconsistent range accepted: %+v", r)
				}
			}
		}
		for _, a := range c.Requested {
			if i, _ := c.setFor(a); i < 0 {
				t.Fatalf("requested %s outside every set accepted", a)
			}
		}
	})
}

// TestDefaultStore: a DEL whose config names no store finds the network's
// store in host-local's default place, and only a store that is there.
func TestDefaultStore(t *testing.T) {
	defaultStores = t.TempDir()
	t.Cleanup(func() { defaultStores = DefaultDataDir })
	if err := os.Mkdir(filepath.Join(defaultStores, "net"), 0o700); err != nil {
		t.Fatal(err)
	}
	c := DefaultStore([]byte(`{"cniVersion":"1.1.0","name":"net","type":"veth-ptp"}`))
	if c == nil || c.DataDir != defaultStores || c.Network != "net" || c.Type != "host-local" {
		t.Fatalf("DefaultStore = %+v", c)
	}
	for _, stdin := range []string{`{"name":"other"}`, `{"name":".."}`, `{"name":"a/b"}`, `{}`, `not json`} {
		if c := DefaultStore([]byte(stdin)); c != nil {
			t.Errorf("DefaultStore(%s) = %+v, want nil", stdin, c)
		}
	}
}
