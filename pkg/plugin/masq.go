package plugin

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netns-cni/netns-cni/pkg/nat"
	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// natLockTimeout bounds waits for a network's NAT lock.
const natLockTimeout = 10 * time.Second

// Masq is a network's masquerade ("ipMasq") as a plugin manages it: rules
// per network, made sure of on ADD, removed with the network's last
// container. Which containers are left is read from the host links the
// plugin made (their aliases), so DEL needs no state of its own.
type Masq struct {
	Plugin, Network string
	// Backend is ipMasqBackend ("" for the default).
	Backend string
	// NoMasq are destinations reached unmasqueraded ("nonMasqueradeCIDRs").
	NoMasq []netip.Prefix
}

func (m Masq) spec(res *current.Result) nat.Spec {
	return nat.Spec{Network: m.Network, Subnets: Subnets(res), NoMasq: m.NoMasq}
}

// with runs fn with the backend under the network's NAT lock, which keeps
// one plugin's "was that the network's last container?" and the removal
// that follows from interleaving with another's Ensure.
func (m Masq) with(fn func(nat.Backend) error) error {
	backend, err := nat.New(m.Backend)
	if err != nil {
		return err
	}
	unlock, err := nat.Lock(m.Network, natLockTimeout)
	if errors.Is(err, nat.ErrBusy) {
		return TryAgainError("ipMasq: %v", err)
	}
	if err != nil {
		return err
	}
	defer unlock()
	if err := fn(backend); err != nil {
		return fmt.Errorf("ipMasq: %w", err)
	}
	return nil
}

// Ensure makes the rules cover the subnets of res (usually they already
// do: one check, nothing written).
func (m Masq) Ensure(res *current.Result) error {
	return m.with(func(b nat.Backend) error { return b.Ensure(m.spec(res)) })
}

// RemoveIfUnused drops the rules when no container of the network is left
// on this host.
func (m Masq) RemoveIfUnused() error {
	return m.with(func(b nat.Backend) error {
		host, err := nsutil.CurrentHandle()
		if err != nil {
			return err
		}
		defer host.Close()
		left, err := netconf.Attachments(host, m.Plugin, m.Network)
		if err != nil || len(left) > 0 {
			return err
		}
		return b.Remove(m.Network)
	})
}

// Check reports rules missing for the subnets of res.
func (m Masq) Check(res *current.Result) error {
	backend, err := nat.New(m.Backend)
	if err != nil {
		return err
	}
	if err := backend.Check(m.spec(res)); err != nil {
		return fmt.Errorf("check masquerade: %w", err)
	}
	return nil
}

// Available is STATUS's question: can the backend work here? Code 50 if not.
func (m Masq) Available() error {
	backend, err := nat.New(m.Backend)
	if err == nil {
		err = backend.Available()
	}
	if err != nil {
		return UnavailableError("ipMasq: %v", err)
	}
	return nil
}

// Locked runs fn under the network's NAT lock: for other per-network
// rules (the bridge's MAC spoof checks) that must not race a removal.
func (m Masq) Locked(fn func() error) error {
	unlock, err := nat.Lock(m.Network, natLockTimeout)
	if errors.Is(err, nat.ErrBusy) {
		return TryAgainError("%v", err)
	}
	if err != nil {
		return err
	}
	defer unlock()
	return fn()
}

// NoMasqCIDRs parses "nonMasqueradeCIDRs": destinations the containers
// reach with their own addresses (a cluster's pod CIDR, say).
func NoMasqCIDRs(vals []string) ([]netip.Prefix, []error) {
	var out []netip.Prefix
	var errs []error
	for i, v := range vals {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			errs = append(errs, fmt.Errorf(`"nonMasqueradeCIDRs[%d]": %q is not a CIDR`, i, v))
			continue
		}
		out = append(out, p.Masked())
	}
	return out, errs
}
