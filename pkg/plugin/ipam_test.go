package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

func ipamArgs(t *testing.T, ipamJSON, id string) *skel.CmdArgs {
	t.Helper()
	return &skel.CmdArgs{
		ContainerID: id, IfName: "eth0",
		StdinData: []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"net","type":"x","ipam":%s}`, ipamJSON)),
	}
}

func code(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestLocalIPAM(t *testing.T) {
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("# comment\nnameserver 10.0.0.53\nsearch a.example b.example\noptions ndots:2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`{"type":"host-local","dataDir":%q,"resolvConf":%q,"subnet":"10.7.0.0/30","routes":[{"dst":"0.0.0.0/0"}]}`, dir+"/data", resolv)
	ctx := context.Background()
	m, err := LoadIPAM(ipamArgs(t, conf, "c1"))
	if err != nil || m == nil || m.Local == nil {
		t.Fatalf("LoadIPAM: %v %v", m, err)
	}
	res, release, err := m.Add(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.7.0.2/30" || res.IPs[0].Gateway.String() != "10.7.0.1" {
		t.Fatalf("ips %v", res.IPs)
	}
	if len(res.Routes) != 1 || res.DNS.Nameservers[0] != "10.0.0.53" || len(res.DNS.Search) != 2 || res.DNS.Options[0] != "ndots:2" {
		t.Fatalf("routes %v dns %+v", res.Routes, res.DNS)
	}
	if err := m.Check(ctx, res); err != nil {
		t.Fatalf("Check: %v", err)
	}
	// A second ADD of the same attachment returns the same address, and
	// its rollback must not release the first ADD's reservation.
	res2, release2, err := m.Add(ctx)
	if err != nil || res2.IPs[0].Address.String() != "10.7.0.2/30" {
		t.Fatalf("second Add: %v %v", res2, err)
	}
	if err := release2(); err != nil {
		t.Fatal(err)
	}
	if err := m.Check(ctx, res); err != nil {
		t.Fatalf("second ADD's rollback released the first ADD's address: %v", err)
	}
	// The pool (a /30: one address) is full: STATUS says 50, ADD says 11.
	if err := m.Status(ctx); code(err) != types.ErrPluginNotAvailable {
		t.Fatalf("Status on a full pool: %v", err)
	}
	other, _ := LoadIPAM(ipamArgs(t, conf, "c2"))
	if _, _, err := other.Add(ctx); code(CNIError(err)) != types.ErrTryAgainLater || !strings.Contains(err.Error(), "10.7.0.1-10.7.0.2") {
		t.Fatalf("Add on a full pool: %v", err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if err := m.Check(ctx, res); err == nil {
		t.Fatal("Check passed after release")
	}
	for range 2 {
		if err := m.Del(ctx); err != nil {
			t.Fatalf("Del: %v", err)
		}
	}
	if err := m.Status(ctx); err != nil {
		t.Fatalf("Status after release: %v", err)
	}
	// GC with an empty list releases everything.
	if _, _, err := other.Add(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := other.GC(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Status(ctx); err != nil {
		t.Fatalf("Status after GC: %v", err)
	}
}

func TestLoadIPAMErrors(t *testing.T) {
	if m, err := LoadIPAM(&skel.CmdArgs{StdinData: []byte(`{"cniVersion":"1.0.0","name":"n"}`)}); m != nil || err != nil {
		t.Fatalf("no ipam: %v %v", m, err)
	}
	_, err := LoadIPAM(ipamArgs(t, `{"type":"host-local","subnet":"10.7.0.1/24","dataDir":"/x"}`, "c"))
	if code(err) != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), `"ipam.subnet"`) {
		t.Fatalf("bad subnet: %v", err)
	}
	args := ipamArgs(t, `{"type":"host-local","subnet":"10.7.0.0/24","dataDir":"/x"}`, "c")
	args.Args = "IP=10.9.9.9"
	if _, err := LoadIPAM(args); code(err) != types.ErrInvalidNetworkConfig {
		t.Fatalf("request outside: %v", err)
	}
	// Route attributes the kernel would refuse or misread: code 7 naming
	// the key; a wrong JSON type: code 6.
	if _, err := LoadIPAM(ipamArgs(t, `{"type":"host-local","subnet":"10.7.0.0/24","dataDir":"/x","routes":[{"dst":"0.0.0.0/0","table":-1,"scope":300}]}`, "c")); code(err) != types.ErrInvalidNetworkConfig ||
		!strings.Contains(err.Error(), `"ipam.routes[0].table": must be 0-4294967295, got -1`) || !strings.Contains(err.Error(), `"ipam.routes[0].scope": must be 0-255`) {
		t.Fatalf("bad route attributes: %v", err)
	}
	if _, err := LoadIPAM(ipamArgs(t, `{"type":"host-local","subnet":"10.7.0.0/24","dataDir":"/x","routes":[{"dst":"0.0.0.0/0","scope":"link"}]}`, "c")); code(err) != types.ErrDecodingFailure ||
		!strings.Contains(err.Error(), `"ipam.routes.scope": want int, got string`) {
		t.Fatalf(`"scope": "link": %v, want code 6 naming the key`, err)
	}
	// Not an address at all: the runtime's CNI_ARGS, code 4.
	args.Args = "IP=banana"
	if _, err := LoadIPAM(args); code(err) != types.ErrInvalidEnvironmentVariables || !strings.Contains(err.Error(), `CNI_ARGS IP: "banana"`) {
		t.Fatalf("IP=banana: %v, want code 4", err)
	}
}

// TestDelegatedIPAM hands a non-host-local type to that plugin binary, here
// the reference "static" IPAM from Debian's containernetworking-plugins.
func TestDelegatedIPAM(t *testing.T) {
	nstest.NeedFile(t, "/usr/lib/cni/static", "make deps")
	for k, v := range map[string]string{"CNI_PATH": "/usr/lib/cni", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/nonexistent"} {
		t.Setenv(k, v)
	}
	args := &skel.CmdArgs{ContainerID: "c1", IfName: "eth0", StdinData: []byte(
		`{"cniVersion":"1.0.0","name":"net","type":"x","ipam":{"type":"static","addresses":[{"address":"10.5.0.5/24","gateway":"10.5.0.1"}]}}`)}
	m, err := LoadIPAM(args)
	if err != nil || m.Local != nil || m.Type != "static" {
		t.Fatalf("LoadIPAM: %+v %v", m, err)
	}
	ctx := context.Background()
	res, release, err := m.Add(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.5.0.5/24" {
		t.Fatalf("delegated result %v", res)
	}
	// CHECK's stdin carries the prevResult the delegate verifies.
	checkArgs := *args
	checkArgs.StdinData = []byte(`{"cniVersion":"1.0.0","name":"net","type":"x","ipam":{"type":"static","addresses":[{"address":"10.5.0.5/24","gateway":"10.5.0.1"}]},
		"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.5.0.5/24","gateway":"10.5.0.1"}]}}`)
	t.Setenv("CNI_COMMAND", "CHECK")
	mc, _ := LoadIPAM(&checkArgs)
	if err := mc.Check(ctx, &current.Result{IPs: res.IPs}); err != nil {
		t.Fatalf("delegated Check: %v", err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if err := m.Del(ctx); err != nil {
		t.Fatal(err)
	}
	// A missing IPAM binary is an error that names it.
	args.StdinData = []byte(`{"cniVersion":"1.0.0","name":"net","type":"x","ipam":{"type":"no-such-ipam"}}`)
	m, _ = LoadIPAM(args)
	if _, _, err := m.Add(ctx); code(err) != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), "no-such-ipam") {
		t.Fatalf("missing plugin: %v, want code 7 naming it", err)
	}
	// Without CNI_PATH (optional for ADD, CHECK and DEL) a delegated IPAM
	// plugin cannot be found: code 4 naming CNI_PATH, on every verb.
	t.Setenv("CNI_PATH", "")
	_, _, addErr := m.Add(ctx)
	for verb, err := range map[string]error{"ADD": addErr, "DEL": mc.Del(ctx), "CHECK": mc.Check(ctx, &current.Result{IPs: res.IPs})} {
		if code(err) != types.ErrInvalidEnvironmentVariables || !strings.Contains(err.Error(), "CNI_PATH") {
			t.Errorf("%s without CNI_PATH: %v, want code 4 naming CNI_PATH", verb, err)
		}
	}
}

// TestWithCNIVersion: the DEL sent again to an IPAM plugin older than the
// config keeps every key, and its prevResult reads at the older version.
func TestWithCNIVersion(t *testing.T) {
	in := `{"cniVersion":"1.1.0","name":"n","type":"veth-ptp","ipam":{"type":"dhcp"},"x":[1,2],
		"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/p"}],
		"ips":[{"address":"10.1.0.2/24","gateway":"10.1.0.1","interface":0}]}}`
	for _, v := range []string{"1.0.0", "0.4.0", "0.3.1"} {
		out, err := withCNIVersion([]byte(in), v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		var got map[string]json.RawMessage
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		if string(got["cniVersion"]) != `"`+v+`"` || string(got["x"]) != "[1,2]" || string(got["ipam"]) != `{"type":"dhcp"}` {
			t.Errorf("%s: keys changed: %s", v, out)
		}
		prev, err := version.NewResult(v, got["prevResult"])
		if err != nil {
			t.Fatalf("%s: prevResult does not read at %s: %v", v, v, err)
		}
		if prev.Version() != v || !strings.Contains(string(got["prevResult"]), "10.1.0.2/24") {
			t.Errorf("%s: prevResult %s", v, got["prevResult"])
		}
	}
	if _, err := withCNIVersion([]byte(`{"cniVersion":"1.1.0","prevResult":{"ips":"x"}}`), "1.0.0"); err == nil {
		t.Error("a prevResult that does not decode was sent on")
	}
}

func TestHighest(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"}, "1.0.0"},
		{[]string{"1.1.0", "0.4.0", "1.0.0"}, "1.1.0"},
		{[]string{"0.10.0", "0.9.0"}, "0.10.0"},
	} {
		if got := highest(c.in); got != c.want {
			t.Errorf("highest(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}
