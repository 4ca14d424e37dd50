package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// Agent keeps one node's conflist and host-gw routes in step with the
// cluster's Node objects and with its config.
type Agent struct {
	Config Config
	// ConfigFile, when set, is where Config came from: Run polls it every
	// PollEvery and applies a change that validates, without a restart.
	ConfigFile *ConfigFile
	Client     kubernetes.Interface
	NodeName   string
	// ConfPath is where the conflist goes (in the node's CNI conf dir).
	ConfPath string
	// OldConfPath is where an earlier version wrote it. Once ConfPath is
	// written (not before: the node would be without a network config in
	// between), a conflist the agent wrote there is removed, so that an
	// upgraded node does not keep two.
	OldConfPath string
	// Routes is a netlink handle in the node's network namespace: with
	// HostGW the agent keeps its routes through it, without HostGW it
	// removes them (host-gw may be turned off while it runs). Nil leaves
	// routing alone.
	Routes *nsutil.Handle
	// Probes learns of each turn of Run's loop and of the conflist
	// written; Run makes one when nil.
	Probes *Probes
	// PollEvery is how often Run's loop turns when nothing happens;
	// DefaultPollEvery when 0.
	PollEvery time.Duration
	Log       *slog.Logger

	oldConfDone bool
}

// DefaultPollEvery is how often the agent's loop turns when nothing happens.
const DefaultPollEvery = 5 * time.Second

// resyncEvery is how often the agent syncs without a change: a failed sync
// is retried then, and a route someone removed comes back.
const resyncEvery = time.Minute

// SyncConf rewrites the conflist from the node's podCIDRs when it changed.
func (a *Agent) SyncConf(node *corev1.Node) (bool, error) {
	data, err := Conflist(a.Config, node)
	if err != nil {
		return false, err
	}
	changed, err := WriteIfChanged(a.ConfPath, append(data, '\n'), 0o644)
	if err != nil {
		return false, fmt.Errorf("write %s: %w", a.ConfPath, err)
	}
	if changed {
		a.Log.Info("wrote the network config", "path", a.ConfPath, "podCIDRs", node.Spec.PodCIDRs)
	}
	if a.Probes != nil {
		a.Probes.SetConfigured()
	}
	if a.OldConfPath != "" && !a.oldConfDone {
		a.oldConfDone = true
		removed, err := RemoveOldConflist(a.OldConfPath)
		if err != nil {
			a.Log.Warn("the conflist of an earlier version stays", "error", err)
		} else if removed {
			a.Log.Info("removed the conflist of an earlier version", "path", a.OldConfPath)
		}
	}
	return changed, nil
}

// Sync brings the conflist and routes in line with the nodes given, which
// must include the agent's own. The routes are synced even when the
// conflist cannot be (the node has no podCIDR yet): they depend on the
// other nodes and the config only, and host-gw turned off or a peer moved
// must reach them all the same. It returns the errors of both.
func (a *Agent) Sync(nodes []*corev1.Node) error {
	i := slices.IndexFunc(nodes, func(n *corev1.Node) bool { return n.Name == a.NodeName })
	if i < 0 {
		return fmt.Errorf("node %s not found (NODE_NAME is the pod's spec.nodeName)", a.NodeName)
	}
	_, confErr := a.SyncConf(nodes[i])
	if a.Routes == nil {
		return confErr
	}
	var peers []Peer // none without HostGW: the agent's routes go
	if a.Config.HostGW {
		peers = Peers(a.NodeName, nodes)
	}
	added, removed, err := SyncRoutes(*a.Routes, peers)
	if added+removed > 0 {
		a.Log.Info("routes to other nodes' pods", "added", added, "removed", removed, "hostGW", a.Config.HostGW)
	}
	return errors.Join(confErr, err)
}

// reload polls the config file and applies a change that validates; it
// reports whether the config changed (and the node must be synced again).
func (a *Agent) reload() bool {
	if a.ConfigFile == nil {
		return false
	}
	cfg, apply, err := a.ConfigFile.Poll(a.Config)
	if err != nil {
		a.Log.Error("config change not applied; the running config stays", "error", err)
		return false
	}
	if !apply {
		return false
	}
	a.Log.Info("config changed; applied (running pods keep the network they have)", "path", a.ConfigFile.Path, "config", fmt.Sprintf("%+v", cfg))
	if keys := podStateKeys(a.Config, cfg); len(keys) > 0 {
		// Applied all the same: operators expect the ConfigMap to apply.
		a.Log.Warn("config change reaches new pods only: pods created before keep their old state, "+
			"which deleting them under the new config leaves behind; drain the node before changing these keys",
			"keys", strings.Join(keys, ", "))
	}
	a.Config = cfg
	return true
}

// podStateKeys names the keys whose change from old to cfg leaks the state
// of pods created before: the runtime deletes a pod with the conflist of
// the moment, so a pod made with another plugin or bridge, another IPAM
// store (dataDir) or the other hostPort mechanism (portmap) is deleted by
// the wrong one, and what it held is never released.
func podStateKeys(old, cfg Config) []string {
	var keys []string
	if old.plugin() != cfg.plugin() {
		keys = append(keys, "plugin")
	}
	// The bridge matters to bridge-nat's pods only.
	if old.bridge() != cfg.bridge() && (old.plugin() == "bridge-nat" || cfg.plugin() == "bridge-nat") {
		keys = append(keys, "bridge")
	}
	if old.DataDir != cfg.DataDir {
		keys = append(keys, "dataDir")
	}
	if old.Portmap != cfg.Portmap {
		keys = append(keys, "portmap")
	}
	return keys
}

// Run watches Nodes and syncs on every change of them or of the config
// file, and every minute without one, until ctx ends. Its loop turns every
// PollEvery (polling the config file) even when nothing happens, which is
// what keeps the liveness probe answering 200.
func (a *Agent) Run(ctx context.Context) error {
	if a.Probes == nil {
		a.Probes = NewProbes()
	}
	every := a.PollEvery
	if every == 0 {
		every = DefaultPollEvery
	}
	factory := informers.NewSharedInformerFactory(a.Client, 10*time.Minute)
	inf := factory.Core().V1().Nodes()
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, DeleteFunc: poke, UpdateFunc: func(_, n any) { poke(n) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	// The cache is awaited aside, so that the loop (and liveness) turns
	// while the API server is slow to answer.
	synced := make(chan struct{})
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
			close(synced)
		}
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	var cacheSynced, dirty bool
	var last time.Time
	for {
		a.Probes.Beat()
		if cacheSynced && (dirty || time.Since(last) >= resyncEvery) {
			dirty, last = false, time.Now()
			nodes, err := inf.Lister().List(labels.Everything())
			if err == nil {
				err = a.Sync(nodes)
			}
			if err != nil {
				a.Log.Warn("sync failed; retrying on the next change or in a minute", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-synced:
			cacheSynced, synced = true, nil
		case <-kick:
			dirty = true
		case <-tick.C:
			dirty = a.reload() || dirty
		}
	}
}
