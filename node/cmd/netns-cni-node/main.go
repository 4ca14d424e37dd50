// Command netns-cni-node is the node agent of a Kubernetes install, run by
// the DaemonSet in deploy/kubernetes: it installs the plugin binaries into
// the node's CNI bin directory, writes the node's conflist from its Node
// object's podCIDRs, and in host-gw mode keeps routes to the other nodes'
// pod CIDRs. It serves /readyz and /livez for the kubelet's probes and
// stops cleanly on SIGTERM, leaving what it installed in place for the
// pods that use it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/netns-cni/netns-cni/node/agent"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/version"
)

// options are the command's flags.
type options struct {
	config  string // the agent's configuration (the ConfigMap's config.json)
	srcBin  string // where the image keeps the plugin binaries
	binDir  string // the node's CNI bin directory
	confDir string // the node's CNI config directory
	health  string // address of the probe endpoints
}

func main() {
	var o options
	flag.StringVar(&o.config, "config", "/etc/netns-cni/config.json", "agent configuration (the ConfigMap)")
	flag.StringVar(&o.srcBin, "src-bin", "/opt/netns-cni/bin", "where the image keeps the plugin binaries")
	flag.StringVar(&o.binDir, "cni-bin-dir", "/host/opt/cni/bin", "the node's CNI bin directory")
	flag.StringVar(&o.confDir, "cni-conf-dir", "/host/etc/cni/net.d", "the node's CNI config directory")
	flag.StringVar(&o.health, "health", ":9099", "address of the probe endpoints /readyz, /livez and /healthz (an alias of /readyz)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("netns-cni-node", version.Version)
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, o); err != nil {
		log.Error("stopped", "error", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, o options) error {
	// The config is checked before anything is installed or written: a
	// bad ConfigMap stops the agent here, naming the key.
	cfgFile := &agent.ConfigFile{Path: o.config}
	cfg, err := cfgFile.Load()
	if err != nil {
		return err
	}
	node := os.Getenv("NODE_NAME")
	if node == "" {
		return errors.New("NODE_NAME is not set (the DaemonSet passes spec.nodeName)")
	}
	// The probes answer from here on: live at once, ready once the
	// plugins are installed and the conflist written. The address is bound
	// here, before anything that takes time, and failing to bind it stops
	// the agent: served from a goroutine alone, the error would only be
	// logged, and the kubelet would restart the agent for failed probes
	// again and again, the cause buried.
	ln, err := net.Listen("tcp", o.health)
	if err != nil {
		return fmt.Errorf("probe endpoints (-health): %w", err)
	}
	probes := agent.NewProbes()
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: probes.Handler()}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("probe endpoints", "error", err)
		}
	}()
	defer func() {
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()

	done, err := agent.InstallBinaries(o.srcBin, o.binDir, []string{"loopback", "veth-ptp", "bridge-nat", "netns-cni"})
	if err != nil {
		return err
	}
	probes.SetInstalled()
	log.Info("plugins installed", "dir", o.binDir, "replaced", done)

	rc, err := rest.InClusterConfig()
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	// The routes handle is opened whatever hostGW says: a ConfigMap edit
	// may turn host-gw on (or off, and the agent's routes go) while the
	// agent runs.
	h, err := nsutil.CurrentHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	a := &agent.Agent{Config: cfg, ConfigFile: cfgFile, Client: client, NodeName: node, Routes: &h, Probes: probes, Log: log,
		ConfPath: filepath.Join(o.confDir, agent.ConfName), OldConfPath: filepath.Join(o.confDir, agent.OldConfName)}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err = a.Run(ctx)
	log.Info("stopped; plugins and config stay for the pods that use them")
	return err
}
