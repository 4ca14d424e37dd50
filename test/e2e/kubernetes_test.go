package e2e

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// TestKubernetes proves the DaemonSet install in a real two-node cluster
// (kubecluster_test.go): deploy/kubernetes applied with kubectl as an
// operator would, the image from mkimage imported into each node's
// containerd; the agent installs the plugins and writes the conflist on
// every node, and the nodes turn Ready through it. Then pods on both
// nodes: addresses from their node's podCIDR, pod to pod across nodes with
// the pod's own source address (host-gw routes), the outside reached
// through masquerade, a ClusterIP Service through kube-proxy in iptables
// and in nftables mode, a hostPort from outside the node; over IPv6 too in
// the dual-stack run. Run by `make test-kubernetes` only.
func TestKubernetes(t *testing.T) {
	need(t, "containerd", "ctr", "runc", "unshare", "nsenter")
	for _, dual := range []bool{false, true} {
		name := map[bool]string{false: "ipv4", true: "dual-stack"}[dual]
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			var end time.Time
			tunables := hostTunables(t)
			t.Cleanup(func() {
				// The machine as it was: the kubelet's kernel tunables
				// untouched, no cgroup of the run left.
				if now := hostTunables(t); !maps.Equal(now, tunables) {
					t.Errorf("the machine's kernel tunables changed: %v -> %v", tunables, now)
				}
				if left, _ := filepath.Glob("/sys/fs/cgroup/*/netns-cni-e2e-*"); len(left) > 0 {
					t.Errorf("cgroups left: %v", left)
				}
				if !end.IsZero() {
					t.Logf("phase: teardown, the machine as it was: %s", time.Since(end).Round(time.Second))
				}
			})
			c := newCluster(t, dual, "node1", "node2")
			c.bringUp()
			t.Logf("phase: cluster up, plugins installed, nodes Ready: %s", time.Since(start).Round(time.Second))
			phase := time.Now()
			c.podsAndTraffic()
			t.Logf("memory with the pods running (sum of each process's peak): %s", treeMemory())
			t.Logf("phase: pods, traffic, Services in both kube-proxy modes, hostPort: %s", time.Since(phase).Round(time.Second))
			phase = time.Now()
			c.lifecycle()
			t.Logf("phase: node lifecycle: %s", time.Since(phase).Round(time.Second))
			end = time.Now()
		})
	}
}

// hostTunables reads, in the machine's own namespaces, the sysctls the
// kubelet would set.
func hostTunables(t *testing.T) map[string]string {
	m := map[string]string{}
	for k := range kubeTunables {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			t.Fatal(err)
		}
		m[k] = strings.TrimSpace(string(b))
	}
	return m
}

// repoDir is the repository's root (the test runs in test/e2e).
func repoDir(t *testing.T) string {
	d, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// manifests renders deploy/kubernetes as the operator would apply it
// (kustomize when there is a kustomization), with the ConfigMap's
// clusterCIDRs edited for this cluster.
func (c *cluster) manifests() string {
	dir := filepath.Join(repoDir(c.t), "deploy", "kubernetes")
	var text string
	if _, err := os.Stat(filepath.Join(dir, "kustomization.yaml")); err == nil {
		text = c.kubectl("kustomize", dir)
	} else {
		b, err := os.ReadFile(filepath.Join(dir, "netns-cni.yaml"))
		if err != nil {
			c.t.Fatal(err)
		}
		text = string(b)
	}
	cidrs := `"` + clusterV4 + `"`
	if c.dual {
		cidrs += `, "` + clusterV6 + `"`
	}
	re := regexp.MustCompile(`"clusterCIDRs": \[[^\]]*\]`)
	if !re.MatchString(text) {
		c.t.Fatalf("no clusterCIDRs in the ConfigMap of deploy/kubernetes:\n%s", text)
	}
	return re.ReplaceAllString(text, `"clusterCIDRs": [`+cidrs+`]`)
}

// agentImage is the DaemonSet's image as the manifests name it.
func agentImage(t *testing.T, manifests string) string {
	m := regexp.MustCompile(`(?m)^\s+image: (\S+)\s*$`).FindStringSubmatch(manifests)
	if m == nil {
		t.Fatalf("no image in the manifests")
	}
	return m[1]
}

// bringUp starts the control plane and the nodes, applies the manifests
// and waits for the agent on every node and the nodes to turn Ready.
func (c *cluster) bringUp() {
	t := c.t
	c.startControlPlane()
	text := c.manifests()
	image := agentImage(t, text)
	for _, img := range []struct {
		file, name string
		cmd        []string
	}{{"pause.tar", pauseImage, []string{"sleep", "100000"}}, {"busybox.tar", imageName, []string{"sh"}}} {
		p := filepath.Join(c.dir, img.file)
		buildImageAs(t, p, img.name, img.cmd)
		c.images = append(c.images, p)
	}
	agentTar := filepath.Join(c.dir, "agent.tar")
	if out, err := exec.Command(filepath.Join(binDir, "mkimage"), "-bin", binDir, "-out", agentTar, "-name", image).CombinedOutput(); err != nil {
		t.Fatalf("mkimage: %v\n%s", err, out)
	}
	c.images = append(c.images, agentTar)
	for _, n := range c.nodes {
		// Nothing of a CNI on the node before the DaemonSet: the agent
		// installs it.
		ents, _ := os.ReadDir(filepath.Join(n.r.dir, "cni-bin"))
		for _, e := range ents {
			_ = os.Remove(filepath.Join(n.r.dir, "cni-bin", e.Name()))
		}
		c.startNode(n)
		c.startProxy(n, "iptables")
	}
	c.eventually(90*time.Second, "nodes registered with podCIDRs", func() string {
		out, _ := c.kubectlErr("get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name} {.spec.podCIDRs}{"\n"}{end}`)
		for _, n := range c.nodes {
			if !strings.Contains(out, n.name+" [") {
				return out
			}
		}
		return ""
	})
	if out := c.kubectl("get", "nodes", "--no-headers"); strings.Count(out, " NotReady ") != len(c.nodes) {
		t.Fatalf("nodes Ready before any CNI was installed:\n%s", out)
	}
	// Node 2 was upgraded from v0.2.0, whose agent wrote 10-netns-cni.conflist:
	// the new agent replaces it by 05-netns-cni.conflist.
	old := `{"cniVersion":"1.0.0","name":"netns-cni","plugins":[{"type":"bridge-nat","bridge":"cni0","ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.99.0/24"}]]}}]}`
	if err := os.WriteFile(filepath.Join(c.nodes[1].r.confDir, "10-netns-cni.conflist"), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	c.kubectlIn(text, "apply", "-f", "-")
	c.eventually(3*time.Minute, "the DaemonSet rolled out", func() string {
		out, err := c.kubectlErr("-n", "netns-cni", "rollout", "status", "ds/netns-cni-node", "--timeout=5s")
		if err != nil {
			return out
		}
		return ""
	})
	c.eventually(60*time.Second, "nodes Ready", func() string {
		out, _ := c.kubectlErr("get", "nodes", "--no-headers")
		if strings.Count(out, " Ready ") != len(c.nodes) {
			return out
		}
		return ""
	})
	for _, n := range c.nodes {
		for _, p := range []string{"loopback", "veth-ptp", "bridge-nat", "netns-cni"} {
			if _, err := os.Stat(filepath.Join(n.r.dir, "cni-bin", p)); err != nil {
				t.Fatalf("%s: the agent did not install %s: %v", n.name, p, err)
			}
		}
		c.eventually(30*time.Second, n.name+": the agent's conflist, and only it", func() string {
			ents, _ := os.ReadDir(n.r.confDir)
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			if !slices.Equal(names, []string{"05-netns-cni.conflist"}) {
				return fmt.Sprintf("%v", names)
			}
			return ""
		})
	}
}

// pod describes a test pod: web pods serve /cgi-bin/ip, which answers
// with the client's address as the pod saw it and the pod's name.
func (c *cluster) podYAML(name, node, role string, hostPort int) string {
	ports := ""
	if hostPort != 0 {
		ports = fmt.Sprintf("\n    ports: [{containerPort: 8080, hostPort: %d}]", hostPort)
	}
	cmd := `["sleep", "100000"]`
	probe := ""
	if role == "web" {
		cmd = `["sh", "-c", "busybox mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho \"$REMOTE_ADDR $(/bin/busybox hostname)\"\\n' > /www/cgi-bin/ip && busybox chmod +x /www/cgi-bin/ip && exec busybox httpd -f -p 8080 -h /www"]`
		probe = "\n    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}"
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, labels: {app: %s}}
spec:
  nodeSelector: {kubernetes.io/hostname: %s}
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: %s
    imagePullPolicy: Never
    command: %s%s%s
---
`, name, role, node, imageName, cmd, ports, probe)
}

// podIPs returns the pod's addresses, IPv4 first.
func (c *cluster) podIPs(name string) []string {
	out := c.kubectl("get", "pod", name, "-o", `jsonpath={range .status.podIPs[*]}{.ip}{" "}{end}`)
	ips := strings.Fields(out)
	slices.SortFunc(ips, func(a, b string) int { return strings.Count(a, ":") - strings.Count(b, ":") })
	return ips
}

// exec runs a command in a pod and returns what it printed.
func (c *cluster) exec(pod string, args ...string) (string, error) {
	return c.kubectlErr(append([]string{"exec", pod, "--"}, args...)...)
}

// fetch asks a web pod's /cgi-bin/ip from inside pod: the address it saw
// and its name.
func (c *cluster) fetch(pod, addr string, port int) (seen, name string, err error) {
	host := addr
	if strings.Contains(addr, ":") {
		host = "[" + addr + "]"
	}
	out, err := c.exec(pod, "busybox", "timeout", "10", "busybox", "wget", "-qO-", fmt.Sprintf("http://%s:%d/cgi-bin/ip", host, port))
	if err != nil {
		return "", "", fmt.Errorf("%w: %s", err, out)
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return "", "", fmt.Errorf("answer %q", out)
	}
	return plainAddr(f[0]), f[1], nil
}

// plainAddr strips what a server puts around an address: brackets and
// the IPv4-mapped prefix.
func plainAddr(s string) string {
	s = strings.Trim(s, "[]")
	return strings.TrimPrefix(s, "::ffff:")
}

// families is the address families of the run: index 0 IPv4, 1 IPv6.
func (c *cluster) families() []int {
	if c.dual {
		return []int{0, 1}
	}
	return []int{0}
}

func (c *cluster) podsAndTraffic() {
	t := c.t
	c.kubectlIn(c.podYAML("web-node1", "node1", "web", 0)+c.podYAML("web-node2", "node2", "web", 18080)+
		c.podYAML("client-node1", "node1", "client", 0)+c.podYAML("client-node2", "node2", "client", 0), "apply", "-f", "-")
	c.kubectl("wait", "--for=condition=Ready", "pod", "--all", "--timeout=120s")
	ips := map[string][]string{}
	for _, p := range []string{"web-node1", "web-node2", "client-node1", "client-node2"} {
		ips[p] = c.podIPs(p)
		if len(ips[p]) != len(c.families()) {
			t.Fatalf("%s has addresses %v, want one per family", p, ips[p])
		}
	}
	// Addresses from the node's own podCIDRs.
	for i, n := range c.nodes {
		cidrs := c.kubectl("get", "node", n.name, "-o", "jsonpath={.spec.podCIDRs}")
		for _, p := range []string{"web-" + n.name, "client-" + n.name} {
			for _, ip := range ips[p] {
				if !inCIDRs(ip, cidrs) {
					t.Fatalf("%s (node %d) has %s, not in its node's podCIDRs %s", p, i+1, ip, cidrs)
				}
			}
		}
	}
	// Pod to pod across nodes, the client's own address seen.
	for _, f := range c.families() {
		for _, pair := range [][2]string{{"client-node1", "web-node2"}, {"client-node2", "web-node1"}, {"client-node1", "web-node1"}} {
			seen, name, err := c.fetch(pair[0], ips[pair[1]][f], 8080)
			if err != nil || name != pair[1] || seen != ips[pair[0]][f] {
				t.Fatalf("%s -> %s (%s): saw %q from %q, %v; want %s", pair[0], pair[1], ips[pair[1]][f], seen, name, err, ips[pair[0]][f])
			}
		}
	}
	// The outside, through masquerade: it sees the node's address.
	srv, err := nstest.ServeSource(c.sw, 9999)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	for _, f := range c.families() {
		dst := []string{outside4, outside6}[f]
		for i, n := range c.nodes {
			out, err := c.exec("client-"+n.name, "busybox", "timeout", "10", "busybox", "nc", dst, "9999")
			want := []string{n.ip, n.ip6}[f]
			if err != nil || plainAddr(strings.TrimSpace(out)) != want {
				t.Fatalf("client on node %d to the outside %s: seen from %q (%v), want the node's %s", i+1, dst, out, err, want)
			}
		}
	}
	// A ClusterIP Service reaches the pods of both nodes, through
	// kube-proxy in iptables mode, then in nftables mode.
	policy := map[bool]string{false: "SingleStack", true: "RequireDualStack"}[c.dual]
	c.kubectlIn(fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ipFamilyPolicy: %s
  ports: [{port: 80, targetPort: 8080}]
`, policy), "apply", "-f", "-")
	svc := strings.Fields(strings.NewReplacer("[", " ", "]", " ", `"`, " ", ",", " ").Replace(c.kubectl("get", "svc", "web", "-o", "jsonpath={.spec.clusterIPs}")))
	slices.SortFunc(svc, func(a, b string) int { return strings.Count(a, ":") - strings.Count(b, ":") })
	if len(svc) != len(c.families()) {
		t.Fatalf("Service addresses %v", svc)
	}
	for _, mode := range []string{"iptables", "nftables"} {
		if mode == "nftables" {
			for _, n := range c.nodes {
				stop(n.proxy)
				n.r.run(c.bin("kube-proxy"), "--config", filepath.Join(n.r.dir, "kube-proxy.yaml"), "--cleanup")
				c.startProxy(n, mode)
			}
		}
		for _, f := range c.families() {
			c.eventually(60*time.Second, fmt.Sprintf("Service %s (kube-proxy %s) reaches the pods of both nodes", svc[f], mode), func() string {
				seen := map[string]bool{}
				for range 12 {
					if _, name, err := c.fetch("client-node1", svc[f], 80); err == nil {
						seen[name] = true
					}
				}
				if !seen["web-node1"] || !seen["web-node2"] {
					return fmt.Sprintf("answered by %v", seen)
				}
				return ""
			})
		}
	}
	// hostPort: the node's address, from outside the node, answered by the
	// pod, which sees the client's own address.
	for _, f := range c.families() {
		node := []string{c.nodes[1].ip, "[" + c.nodes[1].ip6 + "]"}[f]
		out, err := exec.Command("nsenter", "--net="+c.sw.Path(), "busybox", "timeout", "10", "busybox", "wget", "-qO-", "http://"+node+":18080/cgi-bin/ip").CombinedOutput()
		want := []string{outside4, outside6}[f] + " web-node2"
		if got := strings.Fields(string(out)); err != nil || len(got) != 2 || plainAddr(got[0])+" "+got[1] != want {
			t.Fatalf("hostPort 18080 on %s from outside: %q (%v), want %q", node, out, err, want)
		}
	}
}

// inCIDRs reports whether ip is in one of the CIDRs of a podCIDRs value
// as kubectl prints it (["10.244.1.0/24","fd00:244:0:1::/64"]).
func inCIDRs(ip, cidrs string) bool {
	for _, s := range strings.FieldsFunc(cidrs, func(r rune) bool { return strings.ContainsRune(`[]", `, r) }) {
		pfx, err := netip.ParsePrefix(s)
		addr, aerr := netip.ParseAddr(ip)
		if err == nil && aerr == nil && pfx.Contains(addr) {
			return true
		}
	}
	return false
}

// lifecycle: deleting pods leaves nothing on the node; a restarted kubelet
// and containerd keep running pods networked; a rolling update of the
// DaemonSet under running pods; a deleted Node's routes go everywhere.
func (c *cluster) lifecycle() {
	t := c.t
	// Restart the kubelet and containerd of node 2: its pods stay networked.
	n2 := c.nodes[1]
	before := c.podIPs("web-node2")
	restarted := time.Now().UTC().Truncate(time.Second)
	stop(n2.kubelet)
	n2.r.stopContainerd()
	n2.sock = ""
	c.startNode(n2)
	// Until the restarted kubelet reports, the API shows what the old one
	// said: wait for its first heartbeat.
	c.eventually(90*time.Second, "node2's kubelet reporting after its restart", func() string {
		out, _ := c.kubectlErr("get", "node", n2.name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].lastHeartbeatTime} {.status.conditions[?(@.type=="Ready")].status}`)
		f := strings.Fields(out)
		if len(f) != 2 || f[1] != "True" {
			return out
		}
		if hb, err := time.Parse(time.RFC3339, f[0]); err != nil || !hb.After(restarted) {
			return out
		}
		return ""
	})
	c.kubectl("wait", "--for=condition=Ready", "pod", "--all", "--timeout=120s")
	if after := c.podIPs("web-node2"); !slices.Equal(before, after) {
		t.Fatalf("web-node2's addresses changed across a kubelet and containerd restart: %v -> %v", before, after)
	}
	for _, p := range []string{"web-node2", "client-node2"} {
		if n := c.kubectl("get", "pod", p, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"); n != "0" {
			t.Fatalf("%s restarted %s times across a kubelet and containerd restart", p, n)
		}
	}
	for _, f := range c.families() {
		if _, name, err := c.fetch("client-node1", before[f], 8080); err != nil || name != "web-node2" {
			t.Fatalf("after the restart, web-node2 at %s: %q %v", before[f], name, err)
		}
	}
	// A rolling update of the DaemonSet to a new image under running pods.
	newImage := regexp.MustCompile(`:[^:/]+$`).ReplaceAllString(agentImage(t, c.manifests()), ":rollout-e2e")
	tar := filepath.Join(c.dir, "agent-rollout.tar")
	if out, err := exec.Command(filepath.Join(binDir, "mkimage"), "-bin", binDir, "-out", tar, "-name", newImage).CombinedOutput(); err != nil {
		t.Fatalf("mkimage: %v\n%s", err, out)
	}
	for _, n := range c.nodes {
		n.r.run("ctr", "-a", n.sock, "-n", "k8s.io", "images", "import", "--snapshotter", "native", tar)
	}
	c.kubectl("-n", "netns-cni", "set", "image", "ds/netns-cni-node", "node="+newImage)
	c.kubectl("-n", "netns-cni", "rollout", "status", "ds/netns-cni-node", "--timeout=120s")
	for _, f := range c.families() {
		if _, name, err := c.fetch("client-node1", c.podIPs("web-node2")[f], 8080); err != nil || name != "web-node2" {
			t.Fatalf("after the rolling update: %q %v", name, err)
		}
	}
	// A node reboot: every process of node 2 killed, its pods' namespaces,
	// links and rules gone, its store kept. Started again, the kubelet
	// brings its pods back, and the runtime's DELs of the old sandboxes
	// give their addresses back: the store holds the new ones only.
	old := c.reservations(n2)
	c.reboot(n2)
	c.eventually(3*time.Minute, "node2's pods back after its reboot, the old reservations released", func() string {
		out, err := c.kubectlErr("wait", "--for=condition=Ready", "pod", "--all", "--timeout=5s")
		if err != nil {
			return out
		}
		got := c.reservations(n2)
		if len(got) != 2*len(c.families()) || slices.ContainsFunc(got, func(a string) bool { return slices.Contains(old, a) }) {
			return fmt.Sprintf("node2's store holds %v (before the reboot %v), want only the new addresses of its 2 pods", got, old)
		}
		for _, f := range c.families() {
			if _, name, err := c.fetch("client-node1", c.podIPs("web-node2")[f], 8080); err != nil || name != "web-node2" {
				return fmt.Sprintf("web-node2 after the reboot: %q %v", name, err)
			}
		}
		return ""
	})
	// Deleting the pods leaves nothing on the nodes: no reservation, no
	// pod link, no masquerade table.
	c.kubectl("delete", "pod", "--all", "--wait", "--timeout=60s")
	for _, n := range c.nodes {
		c.eventually(30*time.Second, n.name+": left after its pods were deleted", func() string { return c.leftovers(n) })
	}
	// Deleting a Node takes its routes off the other nodes.
	stop(n2.kubelet)
	cidrs := c.kubectl("get", "node", n2.name, "-o", "jsonpath={.spec.podCIDRs}")
	routes := func() string {
		out, _ := exec.Command("nsenter", "--net="+c.nodes[0].r.sb.Host.Path(), "ip", "-d", "route", "show", "proto", "201").CombinedOutput()
		out6, _ := exec.Command("nsenter", "--net="+c.nodes[0].r.sb.Host.Path(), "ip", "-6", "-d", "route", "show", "proto", "201").CombinedOutput()
		return string(out) + string(out6)
	}
	via := []string{"via " + n2.ip + " "}
	if c.dual {
		via = append(via, "via "+n2.ip6+" ")
	}
	for _, v := range via {
		if r := routes(); !strings.Contains(r, v) {
			t.Fatalf("node1 has no host-gw route %s(node2's podCIDRs %s):\n%s", v, cidrs, r)
		}
	}
	c.kubectl("delete", "node", n2.name, "--timeout=60s")
	c.eventually(30*time.Second, "node1's routes to the deleted node2", func() string {
		r := routes()
		for _, v := range via {
			if strings.Contains(r, v) {
				return r
			}
		}
		return ""
	})
}

// reboot stops everything of node n as a power cut would, and starts it
// again: the kubelet, kube-proxy, containerd, the shims and every
// container process killed; the pods' network namespaces unmounted, the
// node's links but its wire and its whole nftables ruleset (iptables here
// is iptables-nft) gone; /var/lib (the store, containerd's images and
// sandboxes) kept.
func (c *cluster) reboot(n *k8sNode) {
	t := c.t
	for _, p := range []*exec.Cmd{n.kubelet, n.proxy, n.r.containerd} {
		_ = p.Process.Kill()
		stop(p)
	}
	// The shims this node's containerd started (in its runtime cgroup) and
	// every container process (in the pods' cgroups): all below the node's
	// cgroup root.
	shims, _ := os.ReadFile(filepath.Join(n.runtimeCgroup(), "cgroup.procs"))
	if len(strings.Fields(string(shims))) == 0 {
		t.Fatal("no shim in node2's runtime cgroup: the reboot would kill nothing")
	}
	for _, p := range n.cgroups {
		killCgroup(p)
	}
	n.r.run("sh", "-c", "for m in /run/netns/*; do umount -l \"$m\" && rm -f \"$m\"; done; true")
	if err := os.RemoveAll(filepath.Join(n.r.dir, "ctrd-state")); err != nil {
		t.Fatal(err)
	}
	h, err := n.r.sb.Host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if name := l.Attrs().Name; name != "lo" && name != "eth0" {
			_ = h.LinkDel(l)
		}
	}
	h.Close()
	if out, err := exec.Command("nsenter", "--net="+n.r.sb.Host.Path(), "nft", "flush", "ruleset").CombinedOutput(); err != nil {
		t.Fatalf("nft flush ruleset: %v\n%s", err, out)
	}
	n.sock = ""
	c.startNode(n)
	c.startProxy(n, "nftables")
}

// reservations lists the addresses the node's store holds.
func (c *cluster) reservations(n *k8sNode) []string {
	var out []string
	ents, _ := os.ReadDir(filepath.Join(n.r.dir, "varlib-up", "cni", "networks", "netns-cni"))
	for _, e := range ents {
		if name := e.Name(); name != "lock" && name != ".netns-cni" && !strings.HasPrefix(name, "last_reserved_ip.") {
			out = append(out, name)
		}
	}
	return out
}

// leftovers is what the node keeps of pods that are gone: reservations,
// pod links, the network's masquerade table.
func (c *cluster) leftovers(n *k8sNode) string {
	var b strings.Builder
	for _, r := range c.reservations(n) {
		fmt.Fprintf(&b, "reservation %s\n", r)
	}
	out, _ := exec.Command("nsenter", "--net="+n.r.sb.Host.Path(), "ip", "-o", "link", "show", "type", "veth").Output()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" && !strings.Contains(l, " eth0@") { // the node's own wire to the switch
			fmt.Fprintf(&b, "pod link: %s\n", l)
		}
	}
	nft, _ := exec.Command("nsenter", "--net="+n.r.sb.Host.Path(), "nft", "list", "tables").Output()
	if strings.Contains(string(nft), "netns-cni-netns-cni") {
		fmt.Fprintf(&b, "nft tables:\n%s", nft)
	}
	return b.String()
}

// treeMemory sums the peak resident memory (VmHWM) of every process
// under the test's (the daemons and the containers' shims and processes,
// reparented to it): what the cluster took at its largest.
func treeMemory() string {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 {
			parent[pid], _ = strconv.Atoi(f[1])
		}
	}
	self := os.Getpid()
	under := func(pid int) bool {
		for p := pid; p > 1; p = parent[p] {
			if parent[p] == self {
				return true
			}
		}
		return false
	}
	var kb, procs int
	for pid := range parent {
		if !under(pid) {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmHWM:") {
				v, _ := strconv.Atoi(strings.Fields(l)[1])
				kb += v
				procs++
			}
		}
	}
	return fmt.Sprintf("%d MiB in %d processes", kb/1024, procs)
}
