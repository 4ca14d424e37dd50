// Package e2e runs netns-cni under real container runtimes from Debian's
// packages — containerd with `ctr run --cni` and through its CRI plugin,
// podman with its CNI backend, and the upstream cnitool — against the
// built binaries.
// Each runtime runs inside a network namespace of the test's own (a fake
// host) and a private mount namespace in which /etc, /opt and /var/lib are
// overlays whose writes land in the test's temporary directory, /run is a
// fresh tmpfs, and /etc/cni/net.d, /opt/cni/bin and /usr/lib/cni are bind
// mounts from it; the runtime has its own root, state and socket there
// too. The machine's real /etc/cni/net.d, /opt/cni/bin, /var/lib/cni, /run
// and root network namespace are never touched. Every process the test
// starts is stopped by PID.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// binDir holds the netns-cni binaries (make sets NETNS_CNI_BIN).
var binDir = os.Getenv("NETNS_CNI_BIN")

// rig is a private world for one runtime: a fake host network namespace,
// a mount namespace held open by a sleeping process, and a temp dir. The
// mount namespace is a slave of the machine's: network namespaces the test
// makes later show up in it, and nothing mounted in it shows outside.
type rig struct {
	t       *testing.T
	dir     string
	sb      *nstest.Sandbox
	holder  *exec.Cmd
	confDir string
	ipamDir string
	sock    string // containerd's, once started
	// containerd is the daemon, once started; ctrdLog its log file and
	// ctrdStarts how often it was started again.
	containerd *exec.Cmd
	ctrdLog    string
	ctrdStarts int
}

func need(t *testing.T, bins ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: runtimes need root (CI runs as root)")
	}
	if binDir == "" {
		t.Fatal("NETNS_CNI_BIN is not set: run through `make test`")
	}
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s missing: `make deps` installs containerd, runc and busybox-static", b)
		}
	}
}

func newRig(t *testing.T) *rig { t.Helper(); return newRigWith(t, nil) }

// newRigWith is newRig whose mount namespace also runs the shell lines
// extra returns for the rig's directory, before /run is replaced.
func newRigWith(t *testing.T, extra func(dir string) string) *rig {
	t.Helper()
	sb := nstest.NewT(t)
	r := &rig{t: t, dir: sb.Dir, sb: sb, confDir: filepath.Join(sb.Dir, "net.d"), ipamDir: filepath.Join(sb.Dir, "ipam")}
	for _, d := range []string{"tmp", "net.d", "cni-bin", "etc-up", "etc-work", "opt-up", "opt-work", "varlib-up", "varlib-work", "ipam"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The plugins the runtimes may look for: ours, and the reference ones
	// (portmap and friends) beside them.
	for _, src := range []string{binDir, "/usr/lib/cni"} {
		ents, _ := os.ReadDir(src)
		for _, e := range ents {
			if src == binDir && !strings.Contains("loopback veth-ptp bridge-nat", e.Name()) {
				continue // tools, not plugins
			}
			dst := filepath.Join(r.dir, "cni-bin", e.Name())
			if _, err := os.Stat(dst); err == nil {
				continue
			}
			if err := copyFile(filepath.Join(src, e.Name()), dst); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Namespaces the test makes later are bind mounts under the temp dir:
	// make it a shared mount of its own, so that they show up in the
	// runtime's mount namespace (a slave of it) too.
	if err := unix.Mount(r.dir, r.dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(r.dir, unix.MNT_DETACH) })
	if err := unix.Mount("", r.dir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	more := ""
	if extra != nil {
		more = extra(r.dir)
	}
	script := fmt.Sprintf(`set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir=%[1]s/etc-up,workdir=%[1]s/etc-work /etc
mount -t overlay overlay -o lowerdir=/opt,upperdir=%[1]s/opt-up,workdir=%[1]s/opt-work /opt
mount -t overlay overlay -o lowerdir=/var/lib,upperdir=%[1]s/varlib-up,workdir=%[1]s/varlib-work /var/lib
%[2]s
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /etc/cni/net.d /opt/cni/bin /var/lib/cni
mount --bind %[1]s/net.d /etc/cni/net.d
mount --bind %[1]s/cni-bin /opt/cni/bin
mount --bind %[1]s/cni-bin /usr/lib/cni
echo ready
exec sleep 100000`, r.dir, more)
	r.holder = exec.Command("unshare", "--mount", "--propagation", "slave", "sh", "-c", script)
	var out bytes.Buffer
	r.holder.Stdout, r.holder.Stderr = &out, &out
	if err := r.holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.holder.Process.Kill()
		_ = r.holder.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "ready") {
		if time.Now().After(deadline) || r.holder.ProcessState != nil {
			t.Fatalf("mount namespace holder: %s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// cmd makes a command that runs in the rig's mount and network namespaces,
// its temporary files (TMPDIR) in the rig's directory, not the machine's
// /tmp.
func (r *rig) cmd(name string, args ...string) *exec.Cmd {
	full := append([]string{"--mount=/proc/" + strconv.Itoa(r.holder.Process.Pid) + "/ns/mnt", "--net=" + r.sb.Host.Path(), "--", name}, args...)
	c := exec.Command("nsenter", full...)
	c.Env = append(os.Environ(), "TMPDIR="+filepath.Join(r.dir, "tmp"))
	return c
}

// run runs a command in the rig and returns its output, failing the test
// with what it said. A command still running after 3 minutes is killed:
// a hang must not outlive the test's cleanups.
func (r *rig) run(name string, args ...string) string {
	r.t.Helper()
	c := r.cmd(name, args...)
	timer := time.AfterFunc(3*time.Minute, func() {
		if c.Process != nil {
			_ = c.Process.Kill()
		}
	})
	defer timer.Stop()
	out, err := c.CombinedOutput()
	if err != nil {
		r.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// start starts a long-running command in the rig, stopped by PID when the
// test ends. Its end is watched (exited, wait, stop): only that watcher
// calls Wait.
func (r *rig) start(log string, name string, args ...string) *exec.Cmd {
	r.t.Helper()
	c := r.cmd(name, args...)
	f, err := os.Create(filepath.Join(r.dir, log))
	if err != nil {
		r.t.Fatal(err)
	}
	c.Stdout, c.Stderr = f, f
	if err := c.Start(); err != nil {
		r.t.Fatal(err)
	}
	end := &procEnd{done: make(chan struct{})}
	procs.Store(c, end)
	go func() { end.err = c.Wait(); close(end.done) }()
	r.t.Cleanup(func() {
		stop(c)
		f.Close()
	})
	return c
}

// procs holds the end of every process start started.
var procs sync.Map // *exec.Cmd -> *procEnd

type procEnd struct {
	done chan struct{}
	err  error
}

// exited reports whether a process start started has ended (a zombie not
// yet reaped counts: its end is known by the watcher's Wait).
func exited(c *exec.Cmd) bool {
	e, _ := procs.Load(c)
	select {
	case <-e.(*procEnd).done:
		return true
	default:
		return false
	}
}

// wait waits for a process start started to end and returns how it ended.
func wait(c *exec.Cmd) error {
	e, _ := procs.Load(c)
	<-e.(*procEnd).done
	return e.(*procEnd).err
}

// stop ends a process start started, by its PID: SIGTERM, and SIGKILL
// after 15 seconds.
func stop(c *exec.Cmd) {
	if c == nil || exited(c) {
		return
	}
	_ = c.Process.Signal(syscall.SIGTERM)
	e, _ := procs.Load(c)
	select {
	case <-e.(*procEnd).done:
	case <-time.After(15 * time.Second):
		_ = c.Process.Kill()
		<-e.(*procEnd).done
	}
}

// logOf returns what a started command wrote.
func (r *rig) logOf(log string) string {
	b, _ := os.ReadFile(filepath.Join(r.dir, log))
	return string(b)
}

// writeConf makes name the only network in the rig's /etc/cni/net.d.
func (r *rig) writeConf(name, body string) {
	r.t.Helper()
	ents, _ := os.ReadDir(r.confDir)
	for _, e := range ents {
		_ = os.Remove(filepath.Join(r.confDir, e.Name()))
	}
	if err := os.WriteFile(filepath.Join(r.confDir, "10-"+name+".conflist"), []byte(body), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// waitFor polls f until it returns true or the time is up.
func waitFor(ctx context.Context, f func() bool) bool {
	for {
		if f() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// e2eNet is one network of a runtime test: its name, the main plugin's
// keys and whether it is dual-stack.
type e2eNet struct {
	name, plugin string
	dual         bool
}

// e2eNets are the networks every runtime test runs, named with prefix:
// veth-ptp and bridge-nat, IPv4 and dual-stack.
func e2eNets(prefix, bridge string) []e2eNet {
	br := fmt.Sprintf(`"type":"bridge-nat","bridge":%q,"isDefaultGateway":true,"ipMasq":true,"removeEmptyBridge":true`, bridge)
	return []e2eNet{{prefix + "ptp-v4", `"type":"veth-ptp","ipMasq":true`, false}, {prefix + "ptp-dual", `"type":"veth-ptp","ipMasq":true`, true},
		{prefix + "br-v4", br, false}, {prefix + "br-dual", br, true}}
}

// ipam is the host-local config of a test network in the rig's store: the
// subnets, and a default route per family (veth-ptp installs exactly
// IPAM's routes, as the reference ptp does).
func (r *rig) ipam(dual bool, subnet4, subnet6 string) string {
	ranges, routes := fmt.Sprintf(`[[{"subnet":%q}]]`, subnet4), `[{"dst":"0.0.0.0/0"}]`
	if dual {
		ranges = fmt.Sprintf(`[[{"subnet":%q}],[{"subnet":%q}]]`, subnet4, subnet6)
		routes = `[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]`
	}
	return fmt.Sprintf(`"ipam":{"type":"host-local","dataDir":%q,"ranges":%s,"routes":%s}`, r.ipamDir, ranges, routes)
}
