package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// TestPodmanCNI: podman 4 with its CNI backend, configured by a
// containers.conf of the test's own. Two containers per network: the
// address podman reports is from the network and on the interface, they
// reach each other; stop/start releases the address and takes a new one;
// rm leaves nothing.
func TestPodmanCNI(t *testing.T) {
	need(t, "podman", "conmon", "runc", "unshare", "nsenter")
	r := newRig(t)
	img := filepath.Join(r.dir, "image.tar")
	buildImage(t, img)

	// The VM withholds CAP_SYS_RESOURCE: podman's defaults (1048576 for
	// both) cannot be set, so ulimits no higher than ours. runc is refused
	// even the current nproc limit here; 4096 is plenty for a test.
	var nofile, nproc unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile)
	_ = unix.Getrlimit(unix.RLIMIT_NPROC, &nproc)
	nproc.Cur = min(nproc.Cur, 4096)
	conf := filepath.Join(r.dir, "containers.conf")
	storage := filepath.Join(r.dir, "storage.conf")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(conf, fmt.Sprintf(`[containers]
default_ulimits = ["nofile=%[1]d:%[1]d", "nproc=%[2]d:%[2]d"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["/opt/cni/bin"]
network_config_dir = "/etc/cni/net.d"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %[3]q
tmp_dir = %[4]q
`, nofile.Cur, nproc.Cur, filepath.Join(r.dir, "podman-events.log"), filepath.Join(r.dir, "podman-tmp")))
	write(storage, fmt.Sprintf(`[storage]
driver = "vfs"
graphroot = %q
runroot = %q
`, filepath.Join(r.dir, "podman-root"), filepath.Join(r.dir, "podman-runroot")))
	podman := func(args ...string) (string, error) {
		c := r.cmd("env", append([]string{"CONTAINERS_CONF=" + conf, "CONTAINERS_STORAGE_CONF=" + storage, "podman"}, args...)...)
		out, err := c.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	mustPodman := func(args ...string) string {
		t := r.t
		t.Helper()
		out, err := podman(args...)
		if err != nil {
			t.Fatalf("podman %s: %v\n%s\nstate left:\n%s", strings.Join(args, " "), err, out, r.hostLeftovers(""))
		}
		return out
	}
	t.Cleanup(func() { _, _ = podman("rm", "-a", "-f", "-t", "0") })
	loaded := mustPodman("load", "-i", img)
	if !strings.Contains(loaded, "netns-cni-busybox") {
		mustPodman("tag", strings.TrimSpace(loaded[strings.LastIndex(loaded, " ")+1:]), imageName)
	}

	for _, n := range e2eNets("pm-", "pmbr0") {
		t.Run(n.name, func(t *testing.T) {
			r.t = t
			r.writeConf(n.name, fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[{%s,%s},{"type":"portmap","capabilities":{"portMappings":true}}]}`,
				n.name, n.plugin, r.ipam(n.dual, "10.42.0.0/24", "fd42::/64")))
			ipOf := func(c string) []string {
				out := mustPodman("inspect", c, "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.GlobalIPv6Address}}{{end}}")
				return strings.Fields(out)
			}
			var ips [][]string
			for _, c := range []string{n.name + "-a", n.name + "-b"} {
				mustPodman("run", "-d", "--name", c, "--network", n.name, imageName, "sleep", "600")
				got := ipOf(c)
				want := map[bool]int{false: 1, true: 2}[n.dual]
				if len(got) != want || !strings.HasPrefix(got[0], "10.42.0.") {
					t.Fatalf("podman inspect %s: %v, want %d addresses from 10.42.0.0/24 (and fd42::/64)", c, got, want)
				}
				addrs := mustPodman("exec", c, "ip", "addr", "show", "eth0")
				for _, ip := range got {
					if !strings.Contains(addrs, ip+"/") {
						t.Fatalf("%s: podman says %s, the interface has:\n%s", c, ip, addrs)
					}
				}
				ips = append(ips, got)
			}
			for _, ip := range ips[1] {
				if out, err := podman("exec", n.name+"-a", "ping", "-c", "1", "-W", "2", ip); err != nil {
					t.Fatalf("a cannot reach b at %s: %v\n%s", ip, err, out)
				}
			}
			// stop releases the address; start takes the next one.
			mustPodman("stop", "-t", "0", n.name+"-a")
			if _, err := os.Stat(filepath.Join(r.ipamDir, n.name, ips[0][0])); !os.IsNotExist(err) {
				t.Fatalf("%s still reserved after stop (%v)", ips[0][0], err)
			}
			mustPodman("start", n.name+"-a")
			if again := ipOf(n.name + "-a"); len(again) == 0 || again[0] == ips[0][0] {
				t.Fatalf("after stop/start %v, want a new address (round-robin), had %v", again, ips[0])
			}
			mustPodman("rm", "-f", "-t", "0", n.name+"-a", n.name+"-b")
			r.assertClean(t, n.name)
		})
	}

	// One container on two networks (podman's eth0 and eth1), one of each
	// plugin, both with a default route: each interface has its network's
	// address and reaches its gateway; network disconnect removes one
	// attachment and leaves the other whole; connect brings it back; rm
	// leaves nothing of either.
	t.Run("pm-two-networks", func(t *testing.T) {
		r.t = t
		a, b := "pm-multi-a", "pm-multi-b"
		r.writeConf(a, fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[{"type":"veth-ptp","ipMasq":true,%s}]}`,
			a, r.ipam(true, "10.45.0.0/24", "fd45::/64")))
		second := fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[{"type":"bridge-nat","bridge":"pmbr2","isGateway":true,"ipMasq":true,"removeEmptyBridge":true,%s}]}`,
			b, r.ipam(false, "10.46.0.0/24", ""))
		if err := os.WriteFile(filepath.Join(r.confDir, "20-"+b+".conflist"), []byte(second), 0o600); err != nil { // beside the first (writeConf keeps one)
			t.Fatal(err)
		}
		c := "pm-multi"
		mustPodman("run", "-d", "--name", c, "--network", a, "--network", b, imageName, "sleep", "600")
		reaches := func(gw string) error {
			out, err := podman("exec", c, "ping", "-c", "1", "-W", "2", gw)
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		}
		addrs := mustPodman("exec", c, "ip", "addr")
		for _, want := range []string{"10.45.0.", "fd45::", "10.46.0."} {
			if !strings.Contains(addrs, want) {
				t.Fatalf("the container lacks an address of %s:\n%s", want, addrs)
			}
		}
		for _, gw := range []string{"10.45.0.1", "fd45::1", "10.46.0.1"} {
			if err := reaches(gw); err != nil {
				t.Fatalf("the container on both networks does not reach %s: %v", gw, err)
			}
		}
		mustPodman("network", "disconnect", b, c)
		for _, gw := range []string{"10.45.0.1", "fd45::1"} {
			if err := reaches(gw); err != nil {
				t.Fatalf("after disconnecting %s the container no longer reaches %s: %v\n%s", b, gw, err, mustPodman("exec", c, "ip", "route"))
			}
		}
		if err := reaches("10.46.0.1"); err == nil {
			t.Fatalf("after disconnecting %s the container still reaches its gateway", b)
		}
		ents, _ := os.ReadDir(filepath.Join(r.ipamDir, b))
		for _, e := range ents {
			if net.ParseIP(e.Name()) != nil {
				t.Fatalf("after disconnecting %s its address %s is still reserved", b, e.Name())
			}
		}
		mustPodman("network", "connect", b, c)
		for _, gw := range []string{"10.45.0.1", "10.46.0.1"} {
			if err := reaches(gw); err != nil {
				t.Fatalf("after connecting %s again the container does not reach %s: %v", b, gw, err)
			}
		}
		mustPodman("rm", "-f", "-t", "0", c)
		r.assertClean(t, a)
		r.assertClean(t, b)
	})

	// podman run -p, forwarded by the plugin itself: no portmap in the chain.
	t.Run("pm-publish", func(t *testing.T) {
		r.t = t
		name := "pm-publish"
		r.writeConf(name, fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[{"type":"bridge-nat","bridge":"pmbr1","isDefaultGateway":true,"ipMasq":true,"removeEmptyBridge":true,"capabilities":{"portMappings":true},%s}]}`,
			name, r.ipam(false, "10.44.0.0/24", "")))
		mustPodman("run", "-d", "--name", name, "--network", name, "-p", "18081:8080", imageName, "sleep", "600")
		pid := mustPodman("inspect", name, "--format", "{{.State.Pid}}")
		if got, err := servedThrough(t, r, pid, "127.0.0.1:18081"); err != nil || got == "" {
			t.Errorf("podman's published port 18081 from the host: %q, %v", got, err)
		}
		mustPodman("rm", "-f", "-t", "0", name)
		if got, err := nstest.Fetch(r.sb.Host, "127.0.0.1:18081"); err == nil {
			t.Errorf("port 18081 still answers after podman rm: %q", got)
		}
		r.assertClean(t, name)
	})
}
