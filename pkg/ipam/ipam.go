package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// withStore runs fn on the network's store, open and locked, and closes it
// (which stamps it when fn changed it).
func (c *Config) withStore(fn func(*store) error) (err error) {
	s, err := openStore(c)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := s.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	return fn(s)
}

// Lease is one address an owner holds, with its subnet and gateway.
type Lease struct {
	// Address is the address with its subnet's prefix length.
	Address netip.Prefix
	Gateway netip.Addr
	// New is true when this call reserved it, false when the owner already
	// held it. A failed ADD releases only the new ones.
	New bool
}

// ErrExhausted means a range set has no free address.
var ErrExhausted = errors.New("no free address")

// ErrConflict means a requested address is held by another owner.
var ErrConflict = errors.New("address already reserved")

// Allocate gives o one address from each range set. Addresses o already
// holds are returned as they are (New false): a repeated ADD is idempotent
// instead of failing with "duplicate allocation". Requested addresses are
// taken from the set containing them. On failure nothing this call
// reserved is kept.
func (c *Config) Allocate(o Owner) (leases []Lease, err error) {
	err = c.withStore(func(s *store) error {
		if leases, err = c.allocate(s, o); err != nil {
			return err
		}
		// The record is written here, under the lock, rather than by Close:
		// if it fails, what this call reserved is released again.
		if err := s.flushState(); err != nil {
			var fresh []netip.Addr
			for _, l := range leases {
				if l.New {
					fresh = append(fresh, l.Address.Addr())
				}
			}
			if len(fresh) > 0 {
				_ = c.releaseIn(s, o, fresh)
			}
			return err
		}
		return nil
	})
	return leases, err
}

func (c *Config) allocate(s *store, o Owner) (leases []Lease, err error) {
	held, err := s.held(o)
	if err != nil {
		return nil, err
	}
	// Pick an address per set: held, requested, or the next free one.
	picks := make([]Lease, len(c.RangeSets))
	var fresh []netip.Addr
	for i, set := range c.RangeSets {
		l, err := c.pick(s, i, set, o, held, fresh)
		if err != nil {
			return nil, err
		}
		picks[i] = l
		if l.New {
			fresh = append(fresh, l.Address.Addr())
		}
	}
	if len(fresh) == 0 {
		return picks, nil
	}
	// Index first, then the reservations: the index may name an address
	// that a kill kept from being reserved (checked and dropped later), but
	// a reservation never exists without its index entry.
	if err := s.writeIndex(o, append(slices.Clone(held), fresh...)); err != nil {
		return nil, err
	}
	var made []netip.Addr
	defer func() {
		if err != nil {
			for _, a := range made {
				_ = s.unreserve(a, o)
			}
			_ = s.writeIndex(o, held)
		}
	}()
	for i, l := range picks {
		if !l.New {
			continue
		}
		a := l.Address.Addr()
		ok, err := s.reserve(a, o)
		if err != nil {
			return nil, err
		}
		if !ok { // cannot happen under the lock unless a writer ignores it
			return nil, fmt.Errorf("%w: %s was taken while reserving it; try again", ErrConflict, a)
		}
		made = append(made, a)
		if err := s.setCursor(i, a); err != nil {
			return nil, err
		}
	}
	return picks, nil
}

// holderOf is the range of set an address an attachment already holds
// belongs to: the range that contains it; else, when no range of any set
// does, the first of set whose subnet does. A range narrowed since the
// address was handed out (an edited rangeEnd, or the reference's
// broadcast address that Parse leaves out) must not make its holder lose
// it: ADD again would take a second address, and CHECK would call it not
// reserved.
func (c *Config) holderOf(set RangeSet, a netip.Addr) *Range {
	if r := set.RangeFor(a); r != nil {
		return r
	}
	for _, other := range c.RangeSets {
		if other.RangeFor(a) != nil {
			return nil
		}
	}
	for i := range set {
		if set[i].Subnet.Contains(a) {
			return &set[i]
		}
	}
	return nil
}

func (c *Config) pick(s *store, i int, set RangeSet, o Owner, held, fresh []netip.Addr) (Lease, error) {
	lease := func(a netip.Addr, isNew bool) Lease {
		r := c.holderOf(set, a)
		return Lease{Address: netip.PrefixFrom(a, r.Subnet.Bits()), Gateway: r.Gateway, New: isNew}
	}
	var mine netip.Addr
	for _, a := range held {
		if c.holderOf(set, a) != nil {
			mine = a
		}
	}
	var want netip.Addr
	for _, a := range c.Requested {
		if set.RangeFor(a) != nil {
			want = a
		}
	}
	switch {
	case mine.IsValid() && want.IsValid() && mine != want:
		return Lease{}, fmt.Errorf("%w: %s already holds %s in range set %s, but %s was requested; DEL it first", ErrConflict, o, mine, set, want)
	case mine.IsValid():
		return lease(mine, false), nil
	case want.IsValid():
		h, taken, err := s.holder(want)
		if err != nil {
			return Lease{}, err
		}
		if taken {
			return Lease{}, fmt.Errorf("%w: requested address %s is held by %s", ErrConflict, want, h)
		}
		return lease(want, true), nil
	}
	// Round-robin from the address after the cursor, so that a freed
	// address is not handed out again at once.
	start := set[0].Start
	if cur := s.cursor(i); cur.IsValid() && set.RangeFor(cur) != nil {
		start = set.next(cur)
	}
	a := start
	for {
		r := set.RangeFor(a)
		if a != r.Gateway && !slices.Contains(fresh, a) {
			taken, err := s.taken(a)
			if err != nil {
				return Lease{}, err
			}
			if !taken {
				return lease(a, true), nil
			}
		}
		if a = set.next(a); a == start {
			return Lease{}, fmt.Errorf("%w in range set %s: all %d addresses it hands out are reserved%s", ErrExhausted, set, set.Size(), set.gatewayNote())
		}
	}
}

// Release frees every address o holds. Nothing held is not an error: DEL
// is idempotent.
func (c *Config) Release(o Owner) error {
	return c.release(o, nil)
}

// ReleaseAddrs frees only the given addresses, and only if o holds them:
// what a failed ADD acquired, leaving what an earlier ADD made.
func (c *Config) ReleaseAddrs(o Owner, addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	return c.release(o, addrs)
}

func (c *Config) release(o Owner, only []netip.Addr) error {
	return c.withStore(func(s *store) error { return c.releaseIn(s, o, only) })
}

func (c *Config) releaseIn(s *store, o Owner, only []netip.Addr) error {
	held, err := s.held(o)
	if err != nil {
		return err
	}
	var keep []netip.Addr
	var errs []error
	for _, a := range held {
		if only != nil && !slices.Contains(only, a) {
			keep = append(keep, a)
			continue
		}
		if err := s.unreserve(a, o); err != nil {
			errs = append(errs, err)
			keep = append(keep, a)
		}
	}
	// Reservations first, then the index (it may over-list, never under-list).
	errs = append(errs, s.writeIndex(o, keep))
	if len(keep) == 0 {
		errs = append(errs, s.writeIndex(Owner{ID: o.ID}, nil))
	}
	return errors.Join(errs...)
}

// Held returns the addresses o holds, in no particular order.
func (c *Config) Held(o Owner) (addrs []netip.Addr, err error) {
	err = c.withStore(func(s *store) error {
		addrs, err = s.held(o)
		return err
	})
	return addrs, err
}

// Leases returns what o holds, for CHECK.
func (c *Config) Leases(o Owner) (leases []Lease, err error) {
	err = c.withStore(func(s *store) error {
		leases, err = c.leases(s, o)
		return err
	})
	return leases, err
}

func (c *Config) leases(s *store, o Owner) (leases []Lease, err error) {
	held, err := s.held(o)
	if err != nil {
		return nil, err
	}
	// In range-set order, as Allocate returns them.
	for _, set := range c.RangeSets {
		for _, a := range held {
			if r := c.holderOf(set, a); r != nil {
				leases = append(leases, Lease{Address: netip.PrefixFrom(a, r.Subnet.Bits()), Gateway: r.Gateway})
			}
		}
	}
	return leases, nil
}

// Check verifies that o holds exactly the given addresses (those of the
// previous result), naming what is missing or extra.
func (c *Config) Check(o Owner, want []netip.Addr) error {
	leases, err := c.Leases(o)
	if err != nil {
		return err
	}
	var have []netip.Addr
	for _, l := range leases {
		have = append(have, l.Address.Addr())
	}
	var problems []string
	for _, a := range want {
		if !slices.Contains(have, a) {
			problems = append(problems, fmt.Sprintf("%s is not reserved for %s", a, o))
		}
	}
	for _, a := range have {
		if !slices.Contains(want, a) {
			problems = append(problems, fmt.Sprintf("%s holds %s, which the result does not list", o, a))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("ipam check in %s: %s", c.Dir(), strings.Join(problems, "; "))
	}
	return nil
}

// GC releases every reservation of the network whose owner is not in
// valid; an empty valid releases all. The lock, cursors and bookkeeping
// stay. It goes on past errors and returns them joined, with the
// addresses it released by owner.
func (c *Config) GC(valid []Owner) (map[Owner][]netip.Addr, error) {
	return c.GCFunc(func(o Owner) bool {
		return slices.ContainsFunc(valid, func(v Owner) bool {
			return v.matches(o.content()) || (o.IfName == "" && v.ID == o.ID)
		})
	})
}

// GCFunc is GC keeping the reservations of the owners keep reports true
// for (a legacy reservation's owner has an empty IfName).
func (c *Config) GCFunc(keep func(Owner) bool) (released map[Owner][]netip.Addr, err error) {
	err = c.withStore(func(s *store) error {
		released, err = c.gc(s, keep)
		return err
	})
	return released, err
}

func (c *Config) gc(s *store, keep func(Owner) bool) (map[Owner][]netip.Addr, error) {
	entries, err := s.scan()
	if err != nil {
		return nil, err
	}
	var errs []error
	released := map[Owner][]netip.Addr{}
	for _, e := range entries {
		if keep(e.owner) {
			continue
		}
		if err := s.unreserve(e.addr, e.owner); err != nil {
			errs = append(errs, err)
			continue
		}
		released[e.owner] = append(released[e.owner], e.addr)
	}
	errs = append(errs, s.rebuildIndex())
	s.dirty = true
	return released, errors.Join(errs...)
}

// Status reports whether an ADD could succeed now: the store is writable
// and every range set has a free address. It takes no lock and reads a
// handful of files in the usual case, so runtimes can poll it.
func (c *Config) Status() error {
	if err := writable(c.Dir()); err != nil {
		return err
	}
	dirfd, err := unix.Open(c.Dir(), unix.O_DIRECTORY|unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil // nothing reserved yet
	}
	if err != nil {
		return fmt.Errorf("open store %s: %w", c.Dir(), err)
	}
	defer unix.Close(dirfd)
	s := &store{dirfd: dirfd}
	for i, set := range c.RangeSets {
		if _, err := c.pick(s, i, set, Owner{}, nil, nil); err != nil {
			return err
		}
	}
	return nil
}

// writable checks that the store directory, or the nearest existing parent
// that would hold it, can be written.
func writable(dir string) error {
	for p := dir; ; {
		err := unix.Access(p, unix.W_OK)
		if err == nil {
			var fs unix.Statfs_t
			if unix.Statfs(p, &fs) == nil && fs.Flags&unix.ST_RDONLY != 0 {
				return fmt.Errorf("store %s is on a read-only file system", dir)
			}
			return nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("store %s is not writable: %w", dir, err)
		}
		parent := p[:max(strings.LastIndex(p, "/"), 1)]
		if parent == p {
			return fmt.Errorf("store %s: no existing parent", dir)
		}
		p = parent
	}
}
