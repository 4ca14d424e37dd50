package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startContainerd runs a containerd of the rig's own: its root, state and
// socket in the temp dir, CRI off (the CRI test runs its own).
func (r *rig) startContainerd(extra string) string {
	r.t.Helper()
	sock := filepath.Join(r.dir, "containerd.sock")
	cfg := filepath.Join(r.dir, "containerd.toml")
	body := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"%s]
[grpc]
  address = %q
[ttrpc]
  address = %q
%s`, filepath.Join(r.dir, "ctrd-root"), filepath.Join(r.dir, "ctrd-state"), map[bool]string{true: `, "io.containerd.grpc.v1.cri"`, false: ""}[extra == ""], sock, sock+".ttrpc", extra)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		r.t.Fatal(err)
	}
	// containerd.log, then containerd-2.log, … when the rig restarts it.
	log := "containerd.log"
	if r.containerd != nil {
		r.ctrdStarts++
		log = fmt.Sprintf("containerd-%d.log", r.ctrdStarts+1)
	}
	r.ctrdLog = log
	d := r.start(log, "containerd", "--config", cfg)
	r.sock, r.containerd = sock, d
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if !waitFor(ctx, func() bool { return r.cmd("ctr", "-a", sock, "version").Run() == nil }) {
		r.t.Fatalf("containerd did not come up (exited: %v):\n%s", exited(d), r.logOf(log))
	}
	// Stop tasks and shims before containerd itself goes (cleanups run in
	// reverse): shims outlive their daemon otherwise. Only by a daemon
	// still running: one restarted (a later start) hands its shims on,
	// and ctr would wait on a socket nobody answers.
	r.t.Cleanup(func() {
		if !exited(d) {
			r.stopShims(sock, "e2e")
			r.stopShims(sock, "k8s.io")
		}
	})
	return sock
}

// stopContainerd stops the rig's containerd and leaves its shims, and the
// containers they run, running: a daemon restart.
func (r *rig) stopContainerd() { stop(r.containerd) }

// stopShims kills whatever tasks are left and waits for their shims.
func (r *rig) stopShims(sock, ns string) {
	out, _ := r.cmd("ctr", "-a", sock, "-n", ns, "tasks", "ls", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		_ = r.cmd("ctr", "-a", sock, "-n", ns, "tasks", "kill", "-s", "KILL", id).Run()
		_ = r.cmd("ctr", "-a", sock, "-n", ns, "tasks", "delete", "-f", id).Run()
	}
	out, _ = r.cmd("ctr", "-a", sock, "-n", ns, "containers", "ls", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		_ = r.cmd("ctr", "-a", sock, "-n", ns, "containers", "delete", id).Run()
	}
}

func (r *rig) ctr(sock string, args ...string) string {
	r.t.Helper()
	return r.run("ctr", append([]string{"-a", sock, "-n", "e2e"}, args...)...)
}

var inetRE = regexp.MustCompile(`inet6? ([0-9a-f.:]+)/\d+ (?:brd \S+ )?scope global`)

// TestContainerdCtrRunCNI: two busybox containers per network under
// `ctr run --cni`; from inside, the address, the default route, the
// gateway and the other container; after the tasks exit (ctr then runs
// DEL with an empty CNI_NETNS) the store, veths and NAT rules are gone.
func TestContainerdCtrRunCNI(t *testing.T) {
	need(t, "containerd", "ctr", "runc", "unshare", "nsenter")
	r := newRig(t)
	sock := r.startContainerd("")
	img := filepath.Join(r.dir, "image.tar")
	buildImage(t, img)
	r.ctr(sock, "images", "import", "--snapshotter", "native", img)

	for _, n := range e2eNets("", "ctrbr0") {
		t.Run(n.name, func(t *testing.T) {
			r.t = t
			r.writeConf(n.name, fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[{%s,%s}]}`,
				n.name, n.plugin, r.ipam(n.dual, "10.40.0.0/24", "fd40::/64")))
			var runs []*exec.Cmd
			ips := map[string][]string{}
			for _, id := range []string{n.name + "-a", n.name + "-b"} {
				runs = append(runs, r.start(id+".log", "ctr", "-a", sock, "-n", "e2e", "run", "--rm", "--cni", "--snapshotter", "native", imageName, id, "sleep", "600"))
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				ok := waitFor(ctx, func() bool {
					out, err := r.cmd("ctr", "-a", sock, "-n", "e2e", "tasks", "exec", "--exec-id", "probe", id, "ip", "addr", "show", "eth0").CombinedOutput()
					if err != nil {
						return false
					}
					ips[id] = nil
					for _, m := range inetRE.FindAllStringSubmatch(string(out), -1) {
						ips[id] = append(ips[id], m[1])
					}
					return len(ips[id]) == map[bool]int{false: 1, true: 2}[n.dual]
				})
				cancel()
				if !ok {
					t.Fatalf("%s never got its addresses; ctr run said:\n%s\ncontainerd:\n%s", id, r.logOf(id+".log"), tail(r.logOf("containerd.log"), 30))
				}
			}
			a, b := n.name+"-a", n.name+"-b"
			exec1 := func(args ...string) (string, error) {
				out, err := r.cmd("ctr", append([]string{"-a", sock, "-n", "e2e", "tasks", "exec", "--exec-id", "t" + fmt.Sprint(time.Now().UnixNano()), a}, args...)...).CombinedOutput()
				return string(out), err
			}
			if !strings.HasPrefix(ips[a][0], "10.40.0.") {
				t.Fatalf("%s has %v, not an address of 10.40.0.0/24", a, ips[a])
			}
			if out, err := exec1("ip", "route"); err != nil || !strings.Contains(out, "default via 10.40.0.1") {
				t.Fatalf("routes in %s: %v\n%s", a, err, out)
			}
			targets := append([]string{"10.40.0.1"}, ips[b]...)
			if n.dual {
				targets = append(targets, "fd40::1")
			}
			for _, dst := range targets {
				if out, err := exec1("ping", "-c", "1", "-W", "2", dst); err != nil {
					t.Fatalf("%s cannot reach %s: %v\n%s", a, dst, err, out)
				}
			}
			// The tasks exit; ctr then tears the network down (DEL with an
			// empty CNI_NETNS) and removes the containers.
			for i, id := range []string{a, b} {
				r.ctr(sock, "tasks", "kill", "-s", "KILL", id)
				done := make(chan error, 1)
				go func() { done <- wait(runs[i]) }()
				select {
				case <-done:
				case <-time.After(20 * time.Second):
					t.Fatalf("ctr run %s did not finish:\n%s", id, r.logOf(id+".log"))
				}
			}
			r.assertClean(t, n.name)
		})
	}
}

// assertClean checks that a network left nothing in the rig's host: no
// reservation, no veth of ours, no NAT table.
func (r *rig) assertClean(t *testing.T, network string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var state string
	clean := waitFor(ctx, func() bool {
		state = r.hostLeftovers(network)
		return state == ""
	})
	if !clean {
		t.Fatalf("left behind after the containers exited:\n%s", state)
	}
}

func (r *rig) hostLeftovers(network string) string {
	var b strings.Builder
	ents, _ := os.ReadDir(filepath.Join(r.ipamDir, network))
	for _, e := range ents {
		if n := e.Name(); n != "lock" && n != ".netns-cni" && !strings.HasPrefix(n, "last_reserved_ip.") {
			fmt.Fprintf(&b, "reservation %s\n", n)
		}
	}
	out, _ := exec.Command("nsenter", "--net="+r.sb.Host.Path(), "ip", "-d", "link").Output()
	if strings.Contains(string(out), "netns-cni:") {
		fmt.Fprintf(&b, "links:\n%s", out)
	}
	nft, _ := exec.Command("nsenter", "--net="+r.sb.Host.Path(), "nft", "list", "tables").Output()
	if strings.Contains(string(nft), "netns-cni-"+network) {
		fmt.Fprintf(&b, "nft tables:\n%s", nft)
	}
	return b.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
