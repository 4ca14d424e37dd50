package e2e

import (
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// TestCnitoolsWithReferenceChain drives both plugins with the upstream
// cnitool and with ours, each time chained with Debian's reference
// portmap, firewall, bandwidth and tuning: the port mapping reaches the
// container, CHECK passes, DEL leaves nothing.
func TestCnitoolsWithReferenceChain(t *testing.T) {
	need(t, "unshare", "nsenter")
	upstream := os.Getenv("UPSTREAM_CNITOOL")
	if upstream == "" {
		t.Fatal("UPSTREAM_CNITOOL is not set: run through `make test`")
	}
	r := newRig(t)
	out, err := r.sb.NewOutside()
	if err != nil {
		t.Fatal(err)
	}
	caps := `{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],` +
		`"bandwidth":{"ingressRate":100000000,"ingressBurst":10000000,"egressRate":100000000,"egressBurst":10000000}}`
	plugins := map[string]string{
		"veth-ptp":   `{"type":"veth-ptp","ipMasq":true,"ipam":{"type":"host-local","dataDir":%q,"subnet":"10.45.0.0/24","routes":[{"dst":"0.0.0.0/0"}]}}`,
		"bridge-nat": `{"type":"bridge-nat","bridge":"toolbr","isDefaultGateway":true,"ipMasq":true,"removeEmptyBridge":true,"ipam":{"type":"host-local","dataDir":%q,"subnet":"10.45.0.0/24"}}`,
	}
	tools := map[string]string{"upstream": upstream, "netns-cni": binDir + "/cnitool"}
	for _, tool := range []string{"upstream", "netns-cni"} {
		for _, plug := range []string{"veth-ptp", "bridge-nat"} {
			t.Run(tool+"/"+plug, func(t *testing.T) {
				r.t = t
				first := fmt.Sprintf(plugins[plug], r.ipamDir)
				pod, err := r.sb.NewPod(fmt.Sprintf("%s-%s", tool, plug))
				if err != nil {
					t.Fatal(err)
				}
				cnitool := func(args ...string) (string, error) {
					c := r.cmd("env", append([]string{"CNI_PATH=/opt/cni/bin", "NETCONFPATH=/etc/cni/net.d", "CAP_ARGS=" + caps,
						"CNI_CONTAINERID=e2e-" + tool, tools[tool]}, args...)...)
					b, err := c.CombinedOutput()
					return string(b), err
				}
				// 1: the whole chain; the port mapping reaches the container.
				r.writeConf("chain", fmt.Sprintf(`{"cniVersion":"1.0.0","name":"chain","plugins":[%s,
					{"type":"portmap","capabilities":{"portMappings":true}},
					{"type":"firewall","backend":"iptables"},
					{"type":"bandwidth","capabilities":{"bandwidth":true}},
					{"type":"tuning","sysctl":{"net.ipv4.conf.eth0.rp_filter":"2"}}]}`, first))
				ln := serveIn(t, pod, ":80")
				if o, err := cnitool("add", "chain", pod.Path()); err != nil {
					t.Fatalf("add: %v\n%s", err, o)
				}
				if got, err := fetchFrom(out, "192.0.2.1:8080"); err != nil || got != "hello\n" {
					t.Fatalf("port mapping through the chain: %q %v", got, err)
				}
				if o, err := cnitool("del", "chain", pod.Path()); err != nil {
					t.Fatalf("del: %v\n%s", err, o)
				}
				ln.Close()
				r.assertClean(t, "chain")

				// 2: CHECK. Debian's portmap 1.1.1 cannot pass its own CHECK (it
				// looks for its IPv4 rules with ip6tables), so this chain leaves
				// it out; every other plugin is checked.
				r.writeConf("check", fmt.Sprintf(`{"cniVersion":"1.0.0","name":"check","plugins":[%s,
					{"type":"firewall","backend":"iptables"},
					{"type":"bandwidth","capabilities":{"bandwidth":true}},
					{"type":"tuning","sysctl":{"net.ipv4.conf.eth0.rp_filter":"2"}}]}`, first))
				if o, err := cnitool("add", "check", pod.Path()); err != nil {
					t.Fatalf("add: %v\n%s", err, o)
				}
				if o, err := cnitool("check", "check", pod.Path()); err != nil {
					t.Fatalf("check: %v\n%s", err, o)
				}
				if o, err := cnitool("del", "check", pod.Path()); err != nil {
					t.Fatalf("del: %v\n%s", err, o)
				}
				r.assertClean(t, "check")
			})
		}
	}
}

// serveIn answers TCP connections on addr inside ns with "hello".
func serveIn(t *testing.T, ns *nsutil.NS, addr string) net.Listener {
	t.Helper()
	ln, err := nstest.Serve(ns, addr, "hello\n")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// fetchFrom connects from ns to addr and reads the answer.
func fetchFrom(ns *nsutil.NS, addr string) (string, error) { return nstest.Fetch(ns, addr) }
