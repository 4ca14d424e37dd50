package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// criConfig turns on containerd's CRI plugin as the kubelet needs it: our
// pause image, the native snapshotter, the rig's CNI directories, and no
// OOM score changes it is not allowed (no CAP_SYS_RESOURCE here).
var criConfig = fmt.Sprintf(`[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
`, pauseImage)

// servedThrough serves the client's address on port 8080 in the namespace
// of pid (a pod's) and reports whether addr, from the rig's host, reaches
// it — a host port forwarded to the pod.
func servedThrough(t *testing.T, r *rig, pid, addr string) (string, error) {
	t.Helper()
	pod, err := nsutil.Open("/proc/" + pid + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	srv, err := nstest.ServeSource(pod, 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	return nstest.Fetch(r.sb.Host, addr)
}

// TestContainerdCRI is the kubelet's path: containerd's CRI plugin runs
// our plugins for pod sandboxes. Two pods per network: RunPodSandbox,
// PodSandboxStatus (the pod IP is reported and answers from the host),
// StopPodSandbox, RemovePodSandbox, then nothing is left.
func TestContainerdCRI(t *testing.T) {
	need(t, "containerd", "ctr", "runc", "unshare", "nsenter")
	r := newRig(t)
	sock := r.startContainerd(criConfig)
	img := filepath.Join(r.dir, "pause.tar")
	buildImageAs(t, img, pauseImage, []string{"sleep", "100000"})
	r.run("ctr", "-a", sock, "-n", "k8s.io", "images", "import", "--snapshotter", "native", img)

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rs := cri.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, n := range e2eNets("cri-", "cribr0") {
		t.Run(n.name, func(t *testing.T) {
			r.t = t
			r.writeConf(n.name, fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[{%s,%s},{"type":"portmap","capabilities":{"portMappings":true}}]}`,
				n.name, n.plugin, r.ipam(n.dual, "10.41.0.0/24", "fd41::/64")))
			// containerd rereads the config directory on its own; wait until
			// the CRI status says the network is ready with this config.
			loaded := waitFor(ctx, func() bool {
				st, err := rs.Status(ctx, &cri.StatusRequest{Verbose: true})
				return err == nil && strings.Contains(st.Info["cniconfig"], n.name)
			})
			if !loaded {
				t.Fatalf("containerd never loaded the %s config:\n%s", n.name, tail(r.logOf("containerd.log"), 20))
			}
			var ids []string
			for i := range 2 {
				cfg := &cri.PodSandboxConfig{
					Metadata: &cri.PodSandboxMetadata{Name: fmt.Sprintf("%s-%d", n.name, i), Uid: fmt.Sprintf("uid-%s-%d", n.name, i), Namespace: "e2e"},
					Linux:    &cri.LinuxPodSandboxConfig{},
				}
				resp, err := rs.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg})
				if err != nil {
					t.Fatalf("RunPodSandbox: %v\ncontainerd:\n%s", err, tail(r.logOf("containerd.log"), 20))
				}
				ids = append(ids, resp.PodSandboxId)
				st, err := rs.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: resp.PodSandboxId})
				if err != nil {
					t.Fatal(err)
				}
				ips := []string{st.Status.Network.GetIp()}
				for _, a := range st.Status.Network.GetAdditionalIps() {
					ips = append(ips, a.Ip)
				}
				want := map[bool]int{false: 1, true: 2}[n.dual]
				if len(ips) != want || !strings.HasPrefix(ips[0], "10.41.0.") {
					t.Fatalf("pod IPs %v, want %d from 10.41.0.0/24 (and fd41::/64)", ips, want)
				}
				for _, ip := range ips {
					if out, err := exec.Command("nsenter", "--net="+r.sb.Host.Path(), "ping", "-c", "1", "-W", "2", ip).CombinedOutput(); err != nil {
						t.Fatalf("pod IP %s does not answer from the host: %v\n%s", ip, err, out)
					}
				}
			}
			for _, id := range ids {
				if _, err := rs.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
					t.Fatalf("StopPodSandbox: %v", err)
				}
				if _, err := rs.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
					t.Fatalf("RemovePodSandbox: %v", err)
				}
			}
			r.assertClean(t, n.name)
		})
	}

	// hostPort, the kubelet's way, forwarded by the plugin itself: no
	// portmap in the chain.
	t.Run("cri-hostport", func(t *testing.T) {
		r.t = t
		name := "cri-hostport"
		r.writeConf(name, fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[{"type":"veth-ptp","ipMasq":true,"capabilities":{"portMappings":true},%s}]}`,
			name, r.ipam(false, "10.43.0.0/24", "")))
		if !waitFor(ctx, func() bool {
			st, err := rs.Status(ctx, &cri.StatusRequest{Verbose: true})
			return err == nil && strings.Contains(st.Info["cniconfig"], name)
		}) {
			t.Fatalf("containerd never loaded the %s config", name)
		}
		cfg := &cri.PodSandboxConfig{
			Metadata:     &cri.PodSandboxMetadata{Name: name, Uid: "uid-" + name, Namespace: "e2e"},
			Linux:        &cri.LinuxPodSandboxConfig{},
			PortMappings: []*cri.PortMapping{{Protocol: cri.Protocol_TCP, ContainerPort: 8080, HostPort: 18080}},
		}
		resp, err := rs.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			t.Fatalf("RunPodSandbox: %v\ncontainerd:\n%s", err, tail(r.logOf("containerd.log"), 20))
		}
		st, err := rs.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: resp.PodSandboxId, Verbose: true})
		if err != nil {
			t.Fatal(err)
		}
		// A server in the pod's namespace (the sandbox runs only sleep).
		var info struct {
			Pid int `json:"pid"`
		}
		if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil || info.Pid == 0 {
			t.Fatalf("sandbox pid: %v %q", err, st.Info["info"])
		}
		if got, err := servedThrough(t, r, strconv.Itoa(info.Pid), "127.0.0.1:18080"); err != nil || got == "" {
			t.Errorf("hostPort 18080 from the node: %q, %v", got, err)
		}
		if _, err := rs.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: resp.PodSandboxId}); err != nil {
			t.Fatalf("StopPodSandbox: %v", err)
		}
		if _, err := rs.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId}); err != nil {
			t.Fatalf("RemovePodSandbox: %v", err)
		}
		if got, err := nstest.Fetch(r.sb.Host, "127.0.0.1:18080"); err == nil {
			t.Errorf("hostPort 18080 still answers after the pod went: %q", got)
		}
		r.assertClean(t, name)
	})
}
