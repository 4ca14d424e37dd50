package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// Agent keeps one node's conflist and host-gw routes in step with the
// cluster's Node objects.
type Agent struct {
	Config   Config
	Client   kubernetes.Interface
	NodeName string
	// ConfPath is where the conflist goes (in the node's CNI conf dir).
	ConfPath string
	// Routes is a netlink handle in the node's network namespace; nil
	// leaves routing alone (HostGW off).
	Routes *nsutil.Handle
	Log    *slog.Logger
}

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
	return changed, nil
}

// Sync brings the conflist and routes in line with the nodes given.
func (a *Agent) Sync(nodes []*corev1.Node) error {
	for _, n := range nodes {
		if n.Name == a.NodeName {
			if _, err := a.SyncConf(n); err != nil {
				return err
			}
		}
	}
	if a.Config.HostGW && a.Routes != nil {
		added, removed, err := SyncRoutes(*a.Routes, Peers(a.NodeName, nodes))
		if added+removed > 0 {
			a.Log.Info("routes to other nodes' pods", "added", added, "removed", removed)
		}
		return err
	}
	return nil
}

// Run watches Nodes and syncs on every change until ctx ends. ready is
// closed after the first successful sync (the health endpoint's signal).
func (a *Agent) Run(ctx context.Context, ready chan<- struct{}) error {
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
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return ctx.Err()
	}
	once := false
	for {
		nodes, err := inf.Lister().List(labels.Everything())
		if err == nil {
			err = a.Sync(nodes)
		}
		if err != nil {
			a.Log.Warn("sync failed; retrying on the next change", "error", err)
		} else if !once {
			once = true
			close(ready)
		}
		select {
		case <-ctx.Done():
			factory.Shutdown()
			return nil
		case <-kick:
		case <-time.After(time.Minute):
		}
	}
}

// Health answers /healthz: 200 once the agent has synced, 503 before.
func Health(ready <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-ready:
			_, _ = w.Write([]byte("ok\n"))
		default:
			http.Error(w, "not synced yet", http.StatusServiceUnavailable)
		}
	})
}
