package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/netns-cni/netns-cni/node/agent"
	"github.com/netns-cni/netns-cni/pkg/lock"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// TestMultiNodeHostGW simulates a three-node cluster on one machine: three
// "node" namespaces on a "switch" bridge namespace, each configured by the
// node agent's logic from a fake API server and running bridge-nat with its
// own pod CIDR. Pods on different nodes reach each other with their own
// source addresses (no NAT); the world outside the cluster sees the node's
// address; deleting a node removes the routes to its pods.
func TestMultiNodeHostGW(t *testing.T) {
	t.Setenv(lock.DirEnv, t.TempDir()) // the plugins' locks, not the host's /run
	sb := nstest.NewT(t)
	binDir := pluginBinaries(t)
	sw := sb.PodT(t, "switch")
	swh, err := sw.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer swh.Close()
	if err := swh.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "sw0"}}); err != nil {
		t.Fatal(err)
	}
	br, _ := swh.LinkByName("sw0")
	if err := swh.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	// attach makes ns a host on the switch with addr.
	attach := func(ns *nsutil.NS, port, addr string) {
		t.Helper()
		if err := nstest.Wire(nstest.End{NS: sw, Name: port, Master: "sw0"}, nstest.End{NS: ns, Name: "eth0", Addrs: []string{addr}}); err != nil {
			t.Fatal(err)
		}
	}
	const clusterCIDR = "10.244.0.0/16"
	var nodes []*nsutil.NS
	var objs []*corev1.Node
	for i := 1; i <= 3; i++ {
		n := sb.PodT(t, fmt.Sprintf("node%d", i))
		attach(n, fmt.Sprintf("swp%d", i), fmt.Sprintf("192.168.50.%d/24", 10+i))
		nodes = append(nodes, n)
		objs = append(objs, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node%d", i)},
			Spec:       corev1.NodeSpec{PodCIDRs: []string{fmt.Sprintf("10.244.%d.0/24", i)}},
			Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("192.168.50.%d", 10+i)}}},
		})
	}
	outside := sb.PodT(t, "world")
	attach(outside, "swp9", "192.168.50.100/24")
	client := fake.NewClientset(objs[0], objs[1], objs[2])

	// Each node: the agent writes its conflist and routes, then a pod.
	agents := make([]*agent.Agent, 3)
	pods := make([]*nsutil.NS, 3)
	podIPs := make([]string, 3)
	lists := make([]*libcni.NetworkConfigList, 3)
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(sb.Dir, "cache"), nil)
	for i, n := range nodes {
		h, err := n.Handle()
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		dir := filepath.Join(sb.Dir, fmt.Sprintf("node%d", i+1))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		agents[i] = &agent.Agent{
			Config: agent.Config{ClusterCIDRs: []string{clusterCIDR}, HostGW: true, DataDir: filepath.Join(dir, "ipam")},
			Client: client, NodeName: fmt.Sprintf("node%d", i+1), ConfPath: filepath.Join(dir, agent.ConfName),
			Routes: &h, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}
		list, err := client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var ns []*corev1.Node
		for j := range list.Items {
			ns = append(ns, &list.Items[j])
		}
		if err := agents[i].Sync(ns); err != nil {
			t.Fatalf("agent on node%d: %v", i+1, err)
		}
		if lists[i], err = libcni.ConfListFromFile(agents[i].ConfPath); err != nil {
			t.Fatal(err)
		}
		pods[i] = sb.PodT(t, fmt.Sprintf("pod%d", i+1))
		var res *current.Result
		err = n.Do(func() error {
			r, err := cni.AddNetworkList(context.Background(), lists[i], &libcni.RuntimeConf{ContainerID: fmt.Sprintf("p%d", i), NetNS: pods[i].Path(), IfName: "eth0"})
			if err == nil {
				res, err = current.NewResultFromResult(r)
			}
			return err
		})
		if err != nil {
			t.Fatalf("ADD on node%d: %v", i+1, err)
		}
		podIPs[i] = res.IPs[0].Address.IP.String()
	}

	// Pod to pod across nodes: their own source address arrives.
	for _, pair := range [][2]int{{0, 1}, {1, 2}, {2, 0}} {
		src, err := nstest.SourceSeen(pods[pair[0]], pods[pair[1]], podIPs[pair[1]])
		if err != nil || src != podIPs[pair[0]] {
			t.Fatalf("pod%d -> pod%d arrived from %q (%v), want %s (no NAT inside the cluster)", pair[0]+1, pair[1]+1, src, err, podIPs[pair[0]])
		}
	}
	// Out of the cluster: masqueraded to the node's address.
	if src, err := nstest.SourceSeen(pods[0], outside, "192.168.50.100"); err != nil || src != "192.168.50.11" {
		t.Fatalf("pod1 -> outside arrived from %q (%v), want node1's 192.168.50.11", src, err)
	}

	// node3 leaves the cluster: node1 drops its route to node3's pods.
	if err := client.CoreV1().Nodes().Delete(context.Background(), "node3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := agents[0].Sync([]*corev1.Node{objs[0], objs[1]}); err != nil {
		t.Fatal(err)
	}
	routes, _ := agents[0].Routes.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: agent.RouteProto}, netlink.RT_FILTER_PROTOCOL)
	if len(routes) != 1 || routes[0].Dst.String() != "10.244.2.0/24" {
		t.Fatalf("node1's routes after node3 left: %v", routes)
	}
	if _, err := nstest.Ping(pods[0], podIPs[2]); err == nil {
		t.Fatal("node3's pod still reachable from node1 through a removed route")
	}
	for i, n := range nodes {
		if err := n.Do(func() error {
			return cni.DelNetworkList(context.Background(), lists[i], &libcni.RuntimeConf{ContainerID: fmt.Sprintf("p%d", i), NetNS: pods[i].Path(), IfName: "eth0"})
		}); err != nil {
			t.Fatalf("DEL on node%d: %v", i+1, err)
		}
	}
}

// pluginBinaries is $NETNS_CNI_BIN (make sets it), or the plugins built
// into a temporary directory.
func pluginBinaries(t *testing.T) string {
	if dir := os.Getenv("NETNS_CNI_BIN"); dir != "" {
		return dir
	}
	dir := t.TempDir()
	// The plugins are in the parent module: build there.
	if out, err := exec.Command("go", "build", "-C", "..", "-o", dir+"/", "./plugins/...").CombinedOutput(); err != nil {
		t.Fatalf("build plugins: %v %s", err, out)
	}
	return dir
}
