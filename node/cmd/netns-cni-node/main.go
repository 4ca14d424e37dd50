// Command netns-cni-node is the node agent of a Kubernetes install, run by
// the DaemonSet in deploy/kubernetes: it installs the plugin binaries into
// the node's CNI bin directory, writes the node's conflist from its Node
// object's podCIDRs, and in host-gw mode keeps routes to the other nodes'
// pod CIDRs. It serves /healthz and stops cleanly on SIGTERM, leaving
// what it installed in place for the pods that use it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
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
	flag.StringVar(&o.health, "health", ":9099", "address of the /healthz endpoint")
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
	f, err := os.Open(o.config)
	if err != nil {
		return err
	}
	cfg, err := agent.LoadConfig(f)
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", o.config, err)
	}
	node := os.Getenv("NODE_NAME")
	if node == "" {
		return errors.New("NODE_NAME is not set (the DaemonSet passes spec.nodeName)")
	}
	done, err := agent.InstallBinaries(o.srcBin, o.binDir, []string{"loopback", "veth-ptp", "bridge-nat"})
	if err != nil {
		return err
	}
	log.Info("plugins installed", "dir", o.binDir, "replaced", done)

	rc, err := rest.InClusterConfig()
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	a := &agent.Agent{Config: cfg, Client: client, NodeName: node, ConfPath: filepath.Join(o.confDir, "10-netns-cni.conflist"), Log: log}
	if cfg.HostGW {
		h, err := nsutil.CurrentHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		a.Routes = &h
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ready := make(chan struct{})
	srv := &http.Server{Addr: o.health, ReadHeaderTimeout: 5 * time.Second, Handler: agent.Health(ready)}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health endpoint", "error", err)
		}
	}()
	err = a.Run(ctx, ready)
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shut)
	log.Info("stopped; plugins and config stay for the pods that use them")
	return err
}
