package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// A Kubernetes cluster built and started by the test: etcd and the
// control plane on the first node, containerd, the kubelet and kube-proxy
// on every node. Each node is a rig (its own network and mount namespace,
// containerd root and state, /etc, /opt, /var/lib and /var/log whose
// writes land in the test's directory), wired to a switch namespace that
// is also "the outside": 192.168.77.1 and fd00:77::1 with no route to any
// pod CIDR. The machine's own files, sysctls, links and cgroups are never
// changed: the kubelet's kernel tunables are stand-in files bind-mounted in
// the node's mount namespace, and its cgroups live under a cgroup root of
// the test's own, removed afterwards.
//
// What this machine kind needs, found while bringing the cluster up:
//   - cgroup v1 (the v2 tree has only hugetlb): the kubelet refuses v1
//     unless failCgroupV1 is false; cgroupDriver cgroupfs; its cgroupRoot
//     must exist in every hierarchy first (a cpuset one with its parent's
//     CPUs and memory nodes);
//   - no CAP_SYS_RESOURCE: containerd's restrict_oom_score_adj, oomScoreAdj
//     0 for the kubelet and kube-proxy, kube-proxy conntrack.maxPerCore 0
//     (and no TCP timeouts: it would write the conntrack sysctls);
//   - the kubelet's machine-wide sysctls (vm.overcommit_memory,
//     vm.panic_on_oom, kernel.panic, kernel.panic_on_oops,
//     kernel.keys.root_maxkeys and root_maxbytes): stand-in files;
//   - unshare copies other jobs' /run/netns mounts into the new mount
//     namespace, keeping their namespaces alive: unmounted inside it;
//   - containerd 1.6 has no RuntimeConfig call, so the kubelet's
//     cgroupDriver is set; the eviction manager cannot stat the native
//     snapshotter's device and says so every 10 s (harmless);
//   - Debian's busybox wget -T crashes: wget runs under busybox timeout.

// k8sBin holds the Kubernetes binaries and etcd (make test-kubernetes
// sets NETNS_CNI_K8S_BIN).
var k8sBin = os.Getenv("NETNS_CNI_K8S_BIN")

const (
	outside4   = "192.168.77.1"
	outside6   = "fd00:77::1"
	clusterV4  = "10.244.0.0/16"
	clusterV6  = "fd00:244::/56"
	servicesV4 = "10.96.0.0/16"
	servicesV6 = "fd00:96::/112"
)

type k8sNode struct {
	name     string
	ip, ip6  string
	r        *rig
	sock     string
	kubelet  *exec.Cmd
	proxy    *exec.Cmd
	cgroup   string   // the kubelet's cgroupRoot
	starts   int      // kubelet starts, for log names
	proxyRun int      // kube-proxy starts, for log names
	cgroups  []string // the cgroup root's directories, one per hierarchy
}

type cluster struct {
	t      *testing.T
	dir    string
	dual   bool
	sw     *nsutil.NS
	nodes  []*k8sNode
	pki    string
	id     string
	images []string // OCI archives imported into every node's containerd
}

// kubeTunables are the sysctls the kubelet sets machine-wide (cm.setupNode):
// stand-ins holding the values it wants are bind-mounted over them inside
// each node's mount namespace.
var kubeTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

func newCluster(t *testing.T, dual bool, names ...string) *cluster {
	t.Helper()
	if k8sBin == "" {
		t.Fatal("NETNS_CNI_K8S_BIN is not set: run through `make test-kubernetes`")
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"} {
		if _, err := os.Stat(filepath.Join(k8sBin, b)); err != nil {
			t.Fatalf("%s: %v (make test-kubernetes builds it)", b, err)
		}
	}
	c := &cluster{t: t, dual: dual, id: nstest.RandomID()}
	for i, name := range names {
		n := &k8sNode{name: name, ip: fmt.Sprintf("192.168.77.%d", 11+i), ip6: fmt.Sprintf("fd00:77::%d", 11+i)}
		n.r = newRigWith(t, c.mountScript)
		c.nodes = append(c.nodes, n)
	}
	c.dir = c.nodes[0].r.dir
	c.pki = filepath.Join(c.dir, "pki")
	c.wire()
	c.makePKI()
	for _, n := range c.nodes {
		c.makeCgroupRoot(n)
	}
	return c
}

// mountScript is what each node's mount namespace gets beside the rig's:
// its own /var/log, the kubelet's tunables as stand-in files, and none of
// the other jobs' /run/netns mounts that unshare copied (they would keep
// those namespaces alive).
func (c *cluster) mountScript(dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "for m in $(awk '$2 ~ \"^/run/netns/\" {print $2}' /proc/self/mounts); do umount -l \"$m\" || true; done\n")
	fmt.Fprintf(&b, "mkdir -p %[1]s/varlog %[1]s/sysctl && mount --bind %[1]s/varlog /var/log\n", dir)
	for k, v := range kubeTunables {
		f := filepath.Join(dir, "sysctl", strings.ReplaceAll(k, "/", "_"))
		fmt.Fprintf(&b, "echo %s > %s && mount --bind %s /proc/sys/%s\n", v, f, f, k)
	}
	return b.String()
}

// wire puts every node on the switch, which is also the outside.
func (c *cluster) wire() {
	t := c.t
	sw := c.nodes[0].r.sb.PodT(t, "switch")
	c.sw = sw
	run := func(ns *nsutil.NS, args ...string) {
		if out, err := exec.Command("nsenter", append([]string{"--net=" + ns.Path(), "--"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run(sw, "ip", "link", "add", "sw0", "type", "bridge")
	run(sw, "sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/sw0/accept_dad") // the switch's own, in its namespace
	run(sw, "ip", "addr", "add", outside4+"/24", "dev", "sw0")
	run(sw, "ip", "addr", "add", outside6+"/64", "dev", "sw0")
	run(sw, "ip", "link", "set", "sw0", "up")
	for i, n := range c.nodes {
		if err := nstest.Wire(nstest.End{NS: sw, Name: fmt.Sprintf("port%d", i), Master: "sw0"},
			nstest.End{NS: n.r.sb.Host, Name: "eth0", Addrs: []string{n.ip + "/24", n.ip6 + "/64"}}); err != nil {
			t.Fatal(err)
		}
		// The outside is the nodes' way to everything else (the Service
		// ranges included, which kube-proxy translates on the way out).
		run(n.r.sb.Host, "ip", "route", "add", "default", "via", outside4)
		run(n.r.sb.Host, "ip", "-6", "route", "add", "default", "via", outside6)
	}
}

// makeCgroupRoot makes the node's kubelet a cgroup root of the test's own
// in every cgroup hierarchy (each v1 one, or the v2 tree), removed with
// whatever runs in it when the test ends — after the processes the test
// stops by PID: cleanups run in reverse.
func (c *cluster) makeCgroupRoot(n *k8sNode) {
	n.cgroup = "/netns-cni-e2e-" + c.id + "-" + n.name
	c.t.Cleanup(func() {
		for _, p := range n.cgroups {
			killCgroup(p)
			if err := removeCgroupTree(p); err != nil {
				c.t.Errorf("cgroup %s stays: %v", p, err)
			}
		}
	})
	var hierarchies []string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		hierarchies = []string{"/sys/fs/cgroup"} // cgroup v2 only
	} else {
		ents, err := os.ReadDir("/sys/fs/cgroup")
		if err != nil {
			c.t.Fatal(err)
		}
		for _, e := range ents {
			d := filepath.Join("/sys/fs/cgroup", e.Name())
			fi, err := os.Lstat(d)
			if err != nil || fi.Mode()&os.ModeSymlink != 0 {
				continue // cpu -> cpu,cpuacct: the hierarchy once
			}
			if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err == nil {
				hierarchies = append(hierarchies, d)
			}
		}
	}
	for _, d := range hierarchies {
		p := filepath.Join(d, n.cgroup)
		if err := os.Mkdir(p, 0o755); err != nil {
			c.t.Fatalf("cgroup root: %v", err)
		}
		n.cgroups = append(n.cgroups, p)
		// A cpuset cgroup takes no process until it has CPUs and memory
		// nodes: its parent's.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(d, f)); err == nil && filepath.Base(d) == "cpuset" {
				if err := os.WriteFile(filepath.Join(p, f), v, 0o644); err != nil {
					c.t.Fatalf("cgroup root %s: %v", f, err)
				}
			}
		}
	}
}

// runtimeCgroup is where the node's containerd and its shims run: below
// the node's cgroup root, in the pids hierarchy (cgroup v1) or the tree
// (v2).
func (n *k8sNode) runtimeCgroup() string {
	for _, p := range n.cgroups {
		if parent := filepath.Dir(p); filepath.Base(parent) == "pids" || parent == "/sys/fs/cgroup" {
			return filepath.Join(p, "runtime")
		}
	}
	return filepath.Join(n.cgroups[0], "runtime")
}

// killCgroup kills every process in cgroup dir and those below it: all
// of them the test's (a cgroup root of its own).
func killCgroup(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return nil
	})
}

// removeCgroupTree removes a cgroup directory and those below it, deepest
// first (a cgroup directory goes with rmdir), waiting up to 10 s for
// processes still leaving.
func removeCgroupTree(p string) error {
	ents, _ := os.ReadDir(p)
	for _, e := range ents {
		if e.IsDir() {
			_ = removeCgroupTree(filepath.Join(p, e.Name()))
		}
	}
	var err error
	for range 100 {
		if err = os.Remove(p); err == nil || os.IsNotExist(err) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// makePKI writes the cluster's CA, the API server's serving certificate,
// a client certificate per component and node, the service account key,
// and a kubeconfig per identity.
func (c *cluster) makePKI() {
	t := c.t
	if err := os.MkdirAll(c.pki, 0o700); err != nil {
		t.Fatal(err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "netns-cni-e2e-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	c.writePEM("ca.crt", "CERTIFICATE", caDER)
	serial := int64(2)
	issue := func(name, cn string, orgs []string, server bool) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, Organization: orgs},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		serial++
		if server {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			tmpl.DNSNames = []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}
			tmpl.IPAddresses = []net.IP{net.ParseIP(c.nodes[0].ip), net.ParseIP(c.nodes[0].ip6), net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1"), net.ParseIP("fd00:96::1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		c.writePEM(name+".crt", "CERTIFICATE", der)
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		c.writePEM(name+".key", "EC PRIVATE KEY", kb)
		if !server {
			c.writeKubeconfig(name)
		}
	}
	issue("apiserver", "kube-apiserver", nil, true)
	issue("admin", "admin", []string{"system:masters"}, false)
	issue("controller-manager", "system:kube-controller-manager", nil, false)
	issue("scheduler", "system:kube-scheduler", nil, false)
	issue("kube-proxy", "system:kube-proxy", nil, false)
	for _, n := range c.nodes {
		issue("kubelet-"+n.name, "system:node:"+n.name, []string{"system:nodes"}, false)
	}
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(sa)
	if err != nil {
		t.Fatal(err)
	}
	c.writePEM("sa.key", "EC PRIVATE KEY", kb)
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	c.writePEM("sa.pub", "PUBLIC KEY", pub)
}

func (c *cluster) writePEM(name, typ string, der []byte) {
	if err := os.WriteFile(filepath.Join(c.pki, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) writeKubeconfig(name string) {
	body := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://%s:6443
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: e2e
  context: {cluster: e2e, user: %s}
current-context: e2e
`, c.nodes[0].ip, c.path("ca.crt"), name, c.path(name+".crt"), c.path(name+".key"), name)
	if err := os.WriteFile(c.path(name+".kubeconfig"), []byte(body), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) path(name string) string { return filepath.Join(c.pki, name) }

func (c *cluster) bin(name string) string { return filepath.Join(k8sBin, name) }

// cidrs joins the IPv4 value and, in a dual-stack cluster, the IPv6 one.
func (c *cluster) cidrs(v4, v6 string) string {
	if c.dual {
		return v4 + "," + v6
	}
	return v4
}

// startControlPlane starts etcd, the API server, the controller manager
// (which allocates each node's podCIDRs) and the scheduler on the first
// node, and waits until the API server answers.
func (c *cluster) startControlPlane() {
	n := c.nodes[0]
	n.r.start("etcd.log", c.bin("etcd"), "--name", "e2e", "--data-dir", filepath.Join(c.dir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "e2e=http://127.0.0.1:2380", "--quota-backend-bytes", "1073741824")
	api := n.r.start("kube-apiserver.log", c.bin("kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379", "--advertise-address", n.ip, "--bind-address", "::", "--secure-port", "6443",
		"--tls-cert-file", c.path("apiserver.crt"), "--tls-private-key-file", c.path("apiserver.key"),
		"--client-ca-file", c.path("ca.crt"),
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", c.path("sa.pub"), "--service-account-signing-key-file", c.path("sa.key"),
		"--service-cluster-ip-range", c.cidrs(servicesV4, servicesV6),
		"--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
		"--kubelet-preferred-address-types", "InternalIP", "--allow-privileged=true", "--profiling=false")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if !waitFor(ctx, func() bool {
		_, err := c.kubectlErr("get", "--raw", "/readyz")
		return err == nil || exited(api)
	}) || exited(api) {
		c.t.Fatalf("the API server never got ready:\n%s", tail(n.r.logOf("kube-apiserver.log"), 30))
	}
	args := []string{"--kubeconfig", c.path("controller-manager.kubeconfig"),
		"--authentication-kubeconfig", c.path("controller-manager.kubeconfig"), "--authorization-kubeconfig", c.path("controller-manager.kubeconfig"),
		"--allocate-node-cidrs", "--cluster-cidr", c.cidrs(clusterV4, clusterV6), "--node-cidr-mask-size-ipv4", "24",
		"--service-cluster-ip-range", c.cidrs(servicesV4, servicesV6),
		"--service-account-private-key-file", c.path("sa.key"), "--root-ca-file", c.path("ca.crt"),
		"--use-service-account-credentials", "--leader-elect=false", "--bind-address", "127.0.0.1",
		"--node-monitor-grace-period", "20s"}
	if c.dual {
		args = append(args, "--node-cidr-mask-size-ipv6", "64")
	}
	n.r.start("kube-controller-manager.log", c.bin("kube-controller-manager"), args...)
	n.r.start("kube-scheduler.log", c.bin("kube-scheduler"), "--kubeconfig", c.path("scheduler.kubeconfig"),
		"--authentication-kubeconfig", c.path("scheduler.kubeconfig"), "--authorization-kubeconfig", c.path("scheduler.kubeconfig"),
		"--leader-elect=false", "--bind-address", "127.0.0.1")
}

// startNode starts the node's containerd (once) with the images imported,
// and its kubelet.
func (c *cluster) startNode(n *k8sNode) {
	if n.sock == "" {
		n.sock = n.r.startContainerd(criConfig)
		// containerd in a cgroup of the test's own: the shims it starts
		// are born there, so a power cut (reboot) finds them all.
		if err := os.MkdirAll(n.runtimeCgroup(), 0o755); err != nil {
			c.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(n.runtimeCgroup(), "cgroup.procs"), []byte(strconv.Itoa(n.r.containerd.Process.Pid)), 0o644); err != nil {
			c.t.Fatalf("containerd into its cgroup: %v", err)
		}
		for _, img := range c.images {
			n.r.run("ctr", "-a", n.sock, "-n", "k8s.io", "images", "import", "--snapshotter", "native", img)
		}
	}
	c.startKubelet(n)
}

func (c *cluster) startKubelet(n *k8sNode) {
	cfg := filepath.Join(n.r.dir, "kubelet.yaml")
	body := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
containerRuntimeEndpoint: unix://%s
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization: {mode: AlwaysAllow}
oomScoreAdj: 0
failSwapOn: false
volumePluginDir: %s
resolvConf: ""
clusterDomain: cluster.local
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
`, n.cgroup, n.sock, c.path("ca.crt"), filepath.Join(n.r.dir, "volume-plugins"))
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		c.t.Fatal(err)
	}
	nodeIP := n.ip
	if c.dual {
		nodeIP += "," + n.ip6
	}
	n.starts++
	n.kubelet = n.r.start(fmt.Sprintf("kubelet-%d.log", n.starts), c.bin("kubelet"), "--config", cfg,
		"--kubeconfig", c.path("kubelet-"+n.name+".kubeconfig"), "--hostname-override", n.name, "--node-ip", nodeIP)
}

// startProxy starts kube-proxy on the node in mode (iptables or nftables).
func (c *cluster) startProxy(n *k8sNode, mode string) {
	cfg := filepath.Join(n.r.dir, "kube-proxy.yaml")
	body := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %s}
hostnameOverride: %s
mode: %s
clusterCIDR: %s
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
`, c.path("kube-proxy.kubeconfig"), n.name, mode, c.cidrs(clusterV4, clusterV6))
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		c.t.Fatal(err)
	}
	n.proxyRun++
	n.proxy = n.r.start(fmt.Sprintf("kube-proxy-%d.log", n.proxyRun), c.bin("kube-proxy"), "--config", cfg)
}

// kubectl runs kubectl as the cluster's admin, in the first node, failing
// the test when it fails.
func (c *cluster) kubectl(args ...string) string {
	c.t.Helper()
	out, err := c.kubectlErr(args...)
	if err != nil {
		c.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *cluster) kubectlErr(args ...string) (string, error) {
	full := append([]string{"--kubeconfig", c.path("admin.kubeconfig"), "--cache-dir", filepath.Join(c.dir, "kubectl-cache"), "--request-timeout", "30s"}, args...)
	out, err := c.nodes[0].r.cmd(c.bin("kubectl"), full...).CombinedOutput()
	return string(out), err
}

// kubectlIn runs kubectl reading stdin.
func (c *cluster) kubectlIn(stdin string, args ...string) string {
	c.t.Helper()
	full := append([]string{"--kubeconfig", c.path("admin.kubeconfig"), "--cache-dir", filepath.Join(c.dir, "kubectl-cache"), "--request-timeout", "30s"}, args...)
	cmd := c.nodes[0].r.cmd(c.bin("kubectl"), full...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("kubectl %s: %v\n%s\n%s", strings.Join(args, " "), err, out, stdin)
	}
	return string(out)
}

// eventually polls f every half second until it returns "" (done) or the
// time is up, then fails the test with f's last word and dump's.
func (c *cluster) eventually(d time.Duration, what string, f func() string) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: %s\n%s", what, msg, c.dump())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// dump is what helps when a wait fails: the pods, nodes and the tails of
// the nodes' logs.
func (c *cluster) dump() string {
	var b strings.Builder
	out, _ := c.kubectlErr("get", "nodes,pods", "-A", "-o", "wide")
	b.WriteString(out)
	for _, n := range c.nodes {
		fmt.Fprintf(&b, "--- %s kubelet:\n%s", n.name, tail(n.r.logOf(fmt.Sprintf("kubelet-%d.log", n.starts)), 15))
		fmt.Fprintf(&b, "--- %s containerd:\n%s", n.name, tail(n.r.logOf(n.r.ctrdLog), 10))
	}
	return b.String()
}
