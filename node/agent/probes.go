package agent

import (
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"
)

// DefaultStale is how long the agent's loop may go without turning before
// /livez fails. The loop turns every few seconds (PollEvery) even when
// nothing happens, so two minutes is a wedged loop, not a slow one.
const DefaultStale = 2 * time.Minute

// Probes is what the kubelet's probes see of the agent. Readiness and
// liveness are kept apart on purpose: a node waiting for its podCIDR has
// no conflist yet, so its agent is not ready, but it is healthy, and
// restarting it would not bring the podCIDR any sooner.
type Probes struct {
	// Stale is how long the loop may go without a Beat before /livez
	// fails; DefaultStale when 0.
	Stale time.Duration

	installed  atomic.Bool
	configured atomic.Bool
	beat       atomic.Int64     // unix nanoseconds of the last Beat
	now        func() time.Time // time.Now when nil; tests set a clock
}

// NewProbes returns probes that are live (the process just started) and
// not ready.
func NewProbes() *Probes {
	p := &Probes{}
	p.Beat()
	return p
}

// SetInstalled records that the plugin binaries are in the node's CNI bin
// directory.
func (p *Probes) SetInstalled() { p.installed.Store(true) }

// SetConfigured records that the node's conflist is written. Once written
// it stays (the agent never removes it), so readiness does not go back.
func (p *Probes) SetConfigured() { p.configured.Store(true) }

// Beat records a turn of the agent's loop.
func (p *Probes) Beat() { p.beat.Store(p.clock().UnixNano()) }

func (p *Probes) clock() time.Time {
	if p.now == nil {
		return time.Now()
	}
	return p.now()
}

var (
	errNotInstalled = errors.New("plugins not installed yet")
	errNoConflist   = errors.New("no conflist yet (has the node a podCIDR?)")
)

// Ready is nil once the plugins are installed and the conflist written,
// else what is missing.
func (p *Probes) Ready() error {
	switch {
	case !p.installed.Load():
		return errNotInstalled
	case !p.configured.Load():
		return errNoConflist
	}
	return nil
}

// Live is nil while the agent's loop keeps turning.
func (p *Probes) Live() error {
	stale := p.Stale
	if stale == 0 {
		stale = DefaultStale
	}
	if p.clock().Sub(time.Unix(0, p.beat.Load())) > stale {
		return fmt.Errorf("the agent's loop has not turned for over %s", stale)
	}
	return nil
}

// Handler serves /readyz (Ready), /livez (Live) and /healthz, an alias of
// /readyz kept for DaemonSets of earlier versions that probe it: 200 "ok",
// or 503 with what is wrong.
func (p *Probes) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /readyz", probe(p.Ready))
	mux.Handle("GET /healthz", probe(p.Ready))
	mux.Handle("GET /livez", probe(p.Live))
	return mux
}

func probe(check func() error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if err := check(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
}
